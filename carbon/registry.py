"""Registry exports: net creditable removals with every deduction, calendar-year vintages,
CCER- and Verra-shaped records, and a provenance manifest (docs/registry.md).

Pure functions over ledger tables and site properties, plus the writer. Nothing here reads
the clock: dates come from the monitoring periods, so the same ledger gives byte-identical
files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from carbon.errors import InputError

REGISTRIES = ("ccer", "verra", "json")
BUFFER_BASES = ("net_stock_change", "net_after_leakage")
DEFAULT_METHODOLOGY = {"ccer": "CCER-14-001-V01", "verra": "VM0047"}
METHODOLOGY_NAMES = {
    "CCER-14-001-V01": "造林碳汇 (afforestation carbon sink)",
    "CCER-14-002-V01": "红树林营造 (mangrove creation)",
    "CCER-14-003-V01": "滨海盐沼植被修复 (coastal salt-marsh restoration)",
    "CCER-14-004-V01": "海草床植被修复 (seagrass-bed restoration)",
    "VM0047": "Afforestation, Reforestation and Revegetation",
    "VM0033": "Tidal Wetland and Seagrass Restoration",
}
#: Characters that make a spreadsheet treat a text cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Deductions:
    """Parameters of the net creditable removals of one site."""

    leakage_pct: float
    buffer_pct: float
    buffer_base: str = "net_stock_change"
    project_emissions_tco2e: float = 0.0


def monitoring_dates(period_start: int, period_end: int) -> tuple[dt.date, dt.date]:
    """A period between map years t1 and t2 covers the calendar years t1+1 .. t2: the map of
    year t shows the land at the end of year t (docs/registry.md)."""
    return dt.date(period_start + 1, 1, 1), dt.date(period_end, 12, 31)


def net_removals(sink_tco2e: float, conservative_sink_tco2e: float, baseline_tco2e: float, d: Deductions) -> dict:
    """Net creditable removals of one monitoring period, each deduction its own figure (t CO2e).

    net stock change = project removals - baseline removals
    leakage = leakage% x net stock change (none on a net loss)
    net after leakage = net stock change - leakage - project emissions
    uncertainty deduction = project removals - conservative project removals (>= 0)
    buffer = buffer% x (net stock change, or net after leakage: ``buffer_base``), none on a loss
    net creditable = net after leakage - uncertainty deduction - buffer
    issuable = floor(net creditable), never below 0 (never over-issue)
    """
    if d.buffer_base not in BUFFER_BASES:
        raise InputError(f"buffer_base must be one of {', '.join(BUFFER_BASES)}, not {d.buffer_base!r}")
    net_change = sink_tco2e - baseline_tco2e
    leakage = d.leakage_pct / 100.0 * max(net_change, 0.0)
    net_after_leakage = net_change - leakage - d.project_emissions_tco2e
    uncertainty = max(sink_tco2e - conservative_sink_tco2e, 0.0)
    base = net_change if d.buffer_base == "net_stock_change" else net_after_leakage
    buffer = d.buffer_pct / 100.0 * max(base, 0.0)
    net = net_after_leakage - uncertainty - buffer
    return {
        "project_removals_tco2e": sink_tco2e,
        "baseline_removals_tco2e": baseline_tco2e,
        "net_stock_change_tco2e": net_change,
        "leakage_pct": d.leakage_pct,
        "leakage_tco2e": leakage,
        "project_emissions_tco2e": d.project_emissions_tco2e,
        "net_after_leakage_tco2e": net_after_leakage,
        "uncertainty_deduction_tco2e": uncertainty,
        "buffer_pct": d.buffer_pct,
        "buffer_base": d.buffer_base,
        "buffer_tco2e": buffer,
        "net_creditable_tco2e": net,
    }


def vintages(start: dt.date, end: dt.date, figures: dict[str, Any]) -> list[dict]:
    """Split a monitoring period (inclusive dates) into calendar-year vintages, pro rata by
    days: every t CO2e figure of the period is shared out by the vintage's days. Issuable
    quantities (and buffer credits) are whole t CO2e rounded down per vintage, so their sum
    never exceeds the period's (never over-issue)."""
    total_days = (end - start).days + 1
    out = []
    year_start = start
    while year_start <= end:
        year_end = min(dt.date(year_start.year, 12, 31), end)
        days = (year_end - year_start).days + 1
        share = days / total_days
        row = {k: (v * share if k.endswith("_tco2e") else v) for k, v in figures.items()}
        row.update({
            "vintage_start": year_start.isoformat(),
            "vintage_end": year_end.isoformat(),
            "days": days,
            "vintage_share": share,
            "issuable_tco2e": max(0, math.floor(row["net_creditable_tco2e"] + 1e-9)),
            "buffer_credits": max(0, math.floor(row["buffer_tco2e"] + 1e-9)),
        })
        out.append(row)
        year_start = dt.date(year_start.year + 1, 1, 1)
    return out


def neutralise(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula gets a leading apostrophe; numbers stay
    numbers (a negative sink is written as a number)."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _prop(props: dict[str, Any], key: str, default: Any = None) -> Any:
    v = props.get(key)
    return default if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else v


def site_deductions(site_id: str, props: dict[str, Any], *, leakage_pct: float | None, buffer_pct: float | None,
                    buffer_base: str, years: int) -> Deductions:
    """Leakage and buffer from the site's properties, else the configuration; a buffer
    percentage must be given somewhere (no silent default)."""
    leak = _prop(props, "leakage_pct", leakage_pct)
    buf = _prop(props, "buffer_pct", buffer_pct)
    if buf is None:
        raise InputError("no buffer_pct for the site: set it as a site property or in the configuration",
                         site_id=site_id)
    emissions_per_yr = float(_prop(props, "project_emissions_tco2e_per_yr", 0.0))
    base = _prop(props, "buffer_base", buffer_base)
    problems = [f"{k} {v!r} is not a percentage from 0 to 100" for k, v in (("leakage_pct", leak), ("buffer_pct", buf))
                if v is not None and not (isinstance(v, int | float) and 0 <= float(v) <= 100)]
    if problems:
        raise InputError("invalid deduction parameters", site_id=site_id, problems=problems)
    return Deductions(leakage_pct=float(leak or 0.0), buffer_pct=float(buf), buffer_base=str(base),
                      project_emissions_tco2e=emissions_per_yr * years)


def export_rows(sinks: pd.DataFrame, site_props: dict[str, dict[str, Any]], baselines: dict[tuple[str, int, int], float],
                deductions: dict[str, Deductions]) -> list[dict[str, Any]]:
    """One record per site, monitoring period and vintage, in the common (json) shape."""
    rows = []
    for s in sinks.sort_values(["site_id", "period_start", "period_end"]).itertuples():
        props = site_props[s.site_id]
        start, end = monitoring_dates(int(s.period_start), int(s.period_end))
        net = net_removals(float(s.sink_tco2e), float(s.conservative_sink_tco2e),
                           baselines.get((s.site_id, int(s.period_start), int(s.period_end)), 0.0),
                           deductions[s.site_id])
        for v in vintages(start, end, net):
            rows.append({
                "site_id": s.site_id,
                "project_name": str(_prop(props, "project_name", _prop(props, "name", s.site_id))),
                "owner": str(_prop(props, "owner", "")),
                "province": str(_prop(props, "province", "")),
                "country": str(_prop(props, "country", "")),
                "project_type": str(_prop(props, "project_type", "")),
                "monitoring_start": start.isoformat(),
                "monitoring_end": end.isoformat(),
                "period_start_year": int(s.period_start),
                "period_end_year": int(s.period_end),
                "area_ha": float(s.area_ha),
                "method": str(s.method),
                "u90_pct": None if pd.isna(s.sink_tco2e_u90_pct) else float(s.sink_tco2e_u90_pct),
                "conservative_rule": str(s.conservative_rule),
                **v,
                "ledger_run_id": str(s.run_id),
                "ledger_site_run_id": int(s.site_run_id),
            })
    return rows


def ccer_table(rows: list[dict[str, Any]], props: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Fields of the CCER public platform's reductions tabs (domain.md §3.4)."""
    out = []
    for r in rows:
        p = props[r["site_id"]]
        methodology = str(_prop(p, "methodology", DEFAULT_METHODOLOGY["ccer"]))
        out.append({
            "applyId": str(_prop(p, "ccer_apply_id", "")),
            "projectName": r["project_name"],
            "orgCustomerName": r["owner"],
            "projectType": r["project_type"],
            "methodologyNum": methodology,
            "methodologyName": METHODOLOGY_NAMES.get(methodology, str(_prop(p, "methodology_name", ""))),
            "provinceName": r["province"],
            "monitoringStart": r["monitoring_start"].replace("-", ""),
            "monitoringEnd": r["monitoring_end"].replace("-", ""),
            "vintageStart": r["vintage_start"].replace("-", ""),
            "vintageEnd": r["vintage_end"].replace("-", ""),
            "expectYearNum": max(0, math.floor(max(r["net_creditable_tco2e"], 0.0) / r["days"] * 365 + 1e-9)),
            "certifiedNum": r["issuable_tco2e"],
            "projectRemovalsTco2e": r["project_removals_tco2e"],
            "baselineRemovalsTco2e": r["baseline_removals_tco2e"],
            "leakageTco2e": r["leakage_tco2e"],
            "projectEmissionsTco2e": r["project_emissions_tco2e"],
            "uncertaintyDeductionTco2e": r["uncertainty_deduction_tco2e"],
            "bufferTco2e": r["buffer_tco2e"],
            "siteId": r["site_id"],
            "areaHa": r["area_ha"],
        })
    return pd.DataFrame(out)


def verra_table(rows: list[dict[str, Any]], props: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """VCS monitoring and issuance fields (domain.md §3.4)."""
    out = []
    for r in rows:
        p = props[r["site_id"]]
        out.append({
            "project_id": str(_prop(p, "verra_project_id", "")),
            "project_name": r["project_name"],
            "country_area": r["country"],
            "project_type": "Agriculture Forestry and Other Land Use",
            "methodology": str(_prop(p, "verra_methodology", DEFAULT_METHODOLOGY["verra"])),
            "vintage_start": r["vintage_start"],
            "vintage_end": r["vintage_end"],
            "monitoring_start": r["monitoring_start"],
            "monitoring_end": r["monitoring_end"],
            "total_vintage_quantity": r["issuable_tco2e"],
            "credits_to_buffer": r["buffer_credits"],
            "project_removals_tco2e": r["project_removals_tco2e"],
            "baseline_removals_tco2e": r["baseline_removals_tco2e"],
            "leakage_tco2e": r["leakage_tco2e"],
            "project_emissions_tco2e": r["project_emissions_tco2e"],
            "uncertainty_deduction_tco2e": r["uncertainty_deduction_tco2e"],
            "buffer_pct": r["buffer_pct"],
            "site_id": r["site_id"],
            "area_ha": r["area_ha"],
        })
    return pd.DataFrame(out)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """CSV with text cells neutralised, fixed float formatting, LF line ends: byte-identical
    for the same ledger."""
    safe = df.map(neutralise)
    path.write_bytes(safe.to_csv(index=False, lineterminator="\n", float_format="%.6f").encode("utf-8"))


def write_json(payload: Any, path: Path) -> None:
    path.write_bytes((json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")
                     .encode("utf-8"))


def sha256_bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
