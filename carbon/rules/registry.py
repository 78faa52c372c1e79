"""Registry exports: net creditable removals with every deduction, calendar-year vintages,
CCER- and Verra-shaped records, and a provenance manifest (docs/registry.md).

Pure functions over ledger tables and site properties, plus the writer. Nothing here reads
the clock: dates come from the monitoring periods, so the same ledger gives byte-identical
files.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from carbon.errors import InputError
from carbon.rules.vocabulary import BUFFER_BASES

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
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


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


def _largest_remainder(shares: list[float], total: int) -> list[int]:
    """Whole numbers in proportion to ``shares`` that add up to ``total``."""
    base = [math.floor(x + 1e-9) for x in shares]
    left = total - sum(base)
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - base[i]), i))
    for i in order[:max(left, 0)]:
        base[i] += 1
    return base


def vintages(start: dt.date, end: dt.date, figures: dict[str, Any]) -> list[dict]:
    """Split a monitoring period (inclusive dates) into calendar-year vintages, pro rata by
    days: every t CO2e figure of the period is shared out by the vintage's days. Each
    vintage's issuable quantity is its own net rounded down to whole t CO2e, so neither a
    vintage nor the period is ever over-issued; buffer credits are the period's buffer rounded
    down, handed out to the vintages by largest remainder."""
    total_days = (end - start).days + 1
    out = []
    year_start = start
    while year_start <= end:
        year_end = min(dt.date(year_start.year, 12, 31), end)
        days = (year_end - year_start).days + 1
        share = days / total_days
        row = {k: (v * share if k.endswith("_tco2e") else v) for k, v in figures.items()}
        row.update({"vintage_start": year_start.isoformat(), "vintage_end": year_end.isoformat(), "days": days,
                    "vintage_share": share})
        out.append(row)
        year_start = dt.date(year_start.year + 1, 1, 1)
    net = max(figures["net_creditable_tco2e"], 0.0)
    buffer = max(figures["buffer_tco2e"], 0.0)
    issuable = [math.floor(net * r["vintage_share"] + 1e-9) for r in out]
    credits = _largest_remainder([buffer * r["vintage_share"] for r in out], math.floor(buffer + 1e-9))
    for r, q, b in zip(out, issuable, credits, strict=True):
        r["issuable_tco2e"] = q
        r["buffer_credits"] = b
    return out


def neutralise(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula gets a leading apostrophe; numbers stay
    numbers (a negative sink is written as a number)."""
    if isinstance(value, str) and (value.startswith(FORMULA_PREFIXES) or value.lstrip().startswith(FORMULA_PREFIXES)):
        return "'" + value
    return value


def _id(props: dict[str, Any], key: str) -> str:
    """An identifier property as text: 9001.0 (a number column with gaps) is written 9001."""
    v = _prop(props, key, "")
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _prop(props: dict[str, Any], key: str, default: Any = None) -> Any:
    v = props.get(key)
    return default if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else v


def _number(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


#: The site properties each registry's file is drawn from (docs/registry.md): property ->
#: (required, pattern its text must match or None, what it is). A property with a default
#: (a methodology) is checked only when given.
SITE_PROPERTIES: dict[str, dict[str, tuple[bool, str | None, str]]] = {
    "ccer": {
        "owner": (True, None, "the project owner: orgCustomerName"),
        "province": (True, None, "the province: provinceName"),
        "project_type": (True, r"^[A-Z]\d{4}$", "a CCER project type such as N0101: projectType"),
        "methodology": (False, r"^CCER-\d{2}-\d{3}-V\d{2}$", "a CCER methodology such as CCER-14-001-V01"),
    },
    "verra": {
        "verra_project_id": (True, r"^\d+$", "a Verra project ID in digits: project_id"),
        "country": (True, r"^[A-Z]{2}$", "an ISO 3166 alpha-2 country code such as CN: country_area"),
        "verra_methodology": (False, r"^VM\d{4}$", "a VCS methodology such as VM0047"),
    },
    "json": {},
}


def property_problems(kind: str, site_id: str, props: dict[str, Any], *, leakage_pct: float | None = None,
                      buffer_pct: float | None = None, buffer_base: str = "net_stock_change") -> list[str]:
    """Every missing or bad site property a ``kind`` export needs, each named by its property,
    one sentence per site (not per vintage): its registry fields, then the deduction parameters
    (from the site's properties, else the configuration's values given here)."""
    wrong = []
    for name, (required, pattern, what) in SITE_PROPERTIES.get(kind, {}).items():
        value = _prop(props, name)
        if value is None:
            if required:
                wrong.append(f"{name} is missing ({what})")
            continue
        text = _id(props, name)
        if pattern is not None and not re.fullmatch(pattern, text):
            wrong.append(f"{name} {text!r} is not {what}")
    try:
        site_deductions(site_id, props, leakage_pct=leakage_pct, buffer_pct=buffer_pct, buffer_base=buffer_base,
                        years=1)
    except InputError as exc:
        wrong += exc.problems or [exc.message.removeprefix("no ").replace(" for the site", " is missing", 1)]
    if not wrong:
        return []
    return [f"site {site_id!r}: {'; '.join(wrong)} (site properties of the sites file, for a {kind} export)"]


def site_deductions(site_id: str, props: dict[str, Any], *, leakage_pct: float | None, buffer_pct: float | None,
                    buffer_base: str, years: int) -> Deductions:
    """Leakage and buffer from the site's properties, else the configuration; a buffer
    percentage must be given somewhere (no silent default). Every problem is named."""
    raw = {"leakage_pct": _prop(props, "leakage_pct", leakage_pct), "buffer_pct": _prop(props, "buffer_pct", buffer_pct),
           "project_emissions_tco2e_per_yr": _prop(props, "project_emissions_tco2e_per_yr", 0.0)}
    if raw["buffer_pct"] is None:
        raise InputError("no buffer_pct for the site: set it as a site property or in the configuration",
                         site_id=site_id)
    values: dict[str, Any] = {k: _number(v) for k, v in raw.items()}
    problems = [f"{k} {raw[k]!r} is not a number" for k, v in values.items() if v is None and raw[k] is not None]
    problems += [f"{k} {values[k]} is not a percentage from 0 to 100" for k in ("leakage_pct", "buffer_pct")
                 if values[k] is not None and not 0 <= values[k] <= 100]
    if values["project_emissions_tco2e_per_yr"] is not None and values["project_emissions_tco2e_per_yr"] < 0:
        problems.append("project_emissions_tco2e_per_yr must not be negative")
    base = str(_prop(props, "buffer_base", buffer_base))
    if base not in BUFFER_BASES:
        problems.append(f"buffer_base {base!r} is not one of {', '.join(BUFFER_BASES)}")
    if problems:
        raise InputError("invalid deduction parameters", site_id=site_id, problems=problems)
    return Deductions(leakage_pct=values["leakage_pct"] or 0.0, buffer_pct=float(values["buffer_pct"]),
                      buffer_base=base, project_emissions_tco2e=(values["project_emissions_tco2e_per_yr"] or 0.0) * years)


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
    """Fields of the CCER public platform's reductions tabs (docs/registry.md)."""
    out = []
    for r in rows:
        p = props[r["site_id"]]
        methodology = str(_prop(p, "methodology", DEFAULT_METHODOLOGY["ccer"]))
        out.append({
            "applyId": _id(p, "ccer_apply_id"),
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
    """VCS monitoring and issuance fields (docs/registry.md)."""
    out = []
    for r in rows:
        p = props[r["site_id"]]
        out.append({
            "project_id": _id(p, "verra_project_id"),
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
