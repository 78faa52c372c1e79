"""Registry export from the ledger: select, compute deductions and vintages, validate, write
(all files or none) with a provenance manifest (docs/registry.md)."""

from __future__ import annotations

import codecs
import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from carbon.errors import InputError
from carbon.io import writers
from carbon.io.config import Config
from carbon.io.ledger import Ledger
from carbon.io.sites import load_sites
from carbon.io.tables import sha256_file
from carbon.rules import dating, registry, uncertainty
from carbon.rules.site import Site, overlaps
from carbon.rules.vocabulary import REGISTRIES
from schemas._validate import failure_messages
from schemas.registry import MODELS

FILES = {"ccer": "ccer_reductions.csv", "verra": "verra_vcus.csv", "json": "removals.json"}


def _select(ledger: Ledger, site_ids: list[str] | None, period: tuple[int, int] | None) -> pd.DataFrame:
    sinks = ledger.current("sinks")
    if site_ids:
        missing = sorted(set(site_ids) - set(sinks["site_id"]))
        if missing:
            raise InputError(f"no published results in the ledger for site(s) {', '.join(missing)}: run them first")
        sinks = sinks[sinks["site_id"].isin(site_ids)]
    if sinks.empty:
        raise InputError("the ledger has no published results: run `carbon-sink run` first")
    if period is None:
        full = sinks[sinks["is_full_period"]]
        missing = sorted(set(sinks["site_id"]) - set(full["site_id"]))
        if missing:
            raise InputError(f"site(s) {', '.join(missing)} have no full period (a single map year, or a baseline "
                             "year equal to the last): export them with --period or leave them out with --site")
        return full
    chosen = sinks[(sinks["period_start"] == period[0]) & (sinks["period_end"] == period[1])]
    missing = sorted(set(sinks["site_id"]) - set(chosen["site_id"]))
    if missing:
        raise InputError(f"period {period[0]}:{period[1]} is not published for site(s) {', '.join(missing)}: "
                         "re-run them with those map years")
    return chosen


def _baselines(cfg: Config, sinks: pd.DataFrame) -> tuple[dict[tuple[str, int, int], float], str]:
    """Baseline removals per site and period: from a baseline land-cover scenario when the
    configuration names one, else "no change since the baseline year" (0)."""
    if cfg.baseline_landcover is None:
        return {}, "no change since baseline_year (baseline removals 0)"
    # the computation (numba, rasters) is loaded only for a baseline scenario: an export is quick to start
    from carbon.io.tables import load_catalog, load_coefficients  # noqa: PLC0415
    from carbon.pipeline.site import compute_site  # noqa: PLC0415

    catalog = load_catalog(cfg.baseline_landcover)
    coefficients = load_coefficients(cfg.coefficients)
    sites = {s.site_id: s for s in load_sites(cfg.sites)}
    out = {}
    for row in sinks.itertuples():
        r = compute_site(sites[row.site_id], catalog, coefficients, legends_dir=cfg.legends,
                         years=[int(row.period_start), int(row.period_end)], start_year=int(row.period_start),
                         method=str(row.method), draws=100, sd_defaults=cfg.sd_defaults)
        out[(row.site_id, int(row.period_start), int(row.period_end))] = float(r.sinks.iloc[0]["sink_tco2e"])
    return out, f"baseline land-cover scenario {cfg.baseline_landcover}"


#: Sites of one registry whose polygons overlap by more than this (geodesic ha) would credit the
#: same land twice (docs/registry.md); below it, shared edges and slivers of digitising.
OVERLAP_TOLERANCE_HA = 0.01


def _refuse_overlaps(ledger: Ledger, kind: str, sites: tuple[Site, ...], exporting: list[str]) -> None:
    """Refuse to export a site whose polygon overlaps another site of this export, or a site
    already exported to this registry, by more than ``OVERLAP_TOLERANCE_HA``: the same land
    would be credited twice. Metering may still report nested sites (a park and its sub-site)."""
    exported = set(ledger.exported_sites(kind))
    relevant = [s for s in sites if s.site_id in set(exporting) | exported]
    problems = [f"sites {a!r} and {b!r} overlap by {ha:,.2f} ha" for a, b, ha in overlaps(relevant, OVERLAP_TOLERANCE_HA)
                if a in exporting or b in exporting]
    if problems:
        raise InputError(f"the same land would be credited twice: export to {kind} only sites that do not overlap "
                         "each other or a site exported before (nested sites may be metered, not both credited)",
                         problems=problems)


def _recorded_site(inputs: dict[str, Any]) -> dict[str, Any]:
    """What a site run recorded of its site: the input key's ``site`` record (a metering run), or
    the provenance's geometry digest (a site published from ``compute_site``'s provenance)."""
    site = inputs.get("site")
    if isinstance(site, dict):
        return {k: site[k] for k in ("geometry_sha256", "ecozone", "baseline_year", "properties") if k in site}
    if "site_geometry_sha256" in inputs:
        return {"geometry_sha256": inputs["site_geometry_sha256"]}
    return {}


def _refuse_changed_sites(ledger: Ledger, sinks: pd.DataFrame, sites: dict[str, Site], sites_file: str | Path) -> None:
    """An export credits the land its published run metered, with the properties it metered it
    with: a site whose polygon (or CRS), ecozone, baseline year or any property (name, type,
    project ids, deductions) in the sites file now differs from what its run recorded is
    refused, naming what changed, until it is re-run."""
    problems = []
    for site_id, site_run_id in sorted(set(zip(sinks["site_id"], sinks["site_run_id"], strict=True))):
        recorded = _recorded_site(json.loads(ledger.site_run_inputs(int(site_run_id)) or "{}"))
        site = sites[site_id]
        now: dict[str, Any] = {"geometry_sha256": site.geometry_sha256, "ecozone": site.ecozone,
                               "baseline_year": site.baseline_year}
        changed = [("polygon or CRS" if k == "geometry_sha256" else k) for k, v in recorded.items()
                   if k != "properties" and now[k] != v]
        was: dict[str, Any] = recorded.get("properties") or {}
        if was:
            is_ = site.recorded_properties()
            changed += [f"property {p}" for p in sorted(set(was) | set(is_)) if was.get(p) != is_.get(p)]
        if changed:
            problems.append(f"site {site_id!r}: its {' and '.join(changed)} changed in the sites file since its published "
                            f"run (site run {int(site_run_id)}): re-run it (carbon-sink run --site {site_id})")
    if problems:
        raise InputError("the sites file changed since the published runs: an export credits what a run metered, so "
                         "re-run these sites first", path=sites_file, problems=problems)


def _refuse_reissue(done: pd.DataFrame, kind: str, rows: list[dict[str, Any]]) -> None:
    """A vintage exported before (``done``) for this registry from another result (another
    ledger run or period) would be issued twice: refuse, naming each. The same records again
    are fine."""
    if done.empty:
        return
    problems = []
    for r in rows:
        prior = done[(done["site_id"] == r["site_id"]) & (done["vintage_start"] <= r["vintage_end"])
                     & (done["vintage_end"] >= r["vintage_start"])]
        other = prior[(prior["site_run_id"] != r["ledger_site_run_id"]) | (prior["period_start"] != r["period_start_year"])
                      | (prior["period_end"] != r["period_end_year"])]
        for o in other.itertuples():
            problems.append(f"site {r['site_id']}: vintage {r['vintage_start']}..{r['vintage_end']} overlaps "
                            f"{o.vintage_start}..{o.vintage_end}, exported before from site run {o.site_run_id} "
                            f"(period {o.period_start}-{o.period_end})")
    if problems:
        raise InputError(f"these {kind} vintages were exported before (never issue a year twice): export only the "
                         "new years with --period", problems=problems)


def build(cfg: Config, kind: str, site_ids: list[str] | None = None,
          period: tuple[int, int] | None = None) -> tuple[pd.DataFrame | list[dict[str, Any]], dict[str, Any]]:
    """The export table (or JSON records) and the manifest (without file hashes)."""
    if kind not in REGISTRIES:
        raise InputError(f"unknown registry {kind!r}: use one of {', '.join(REGISTRIES)}")
    ledger = Ledger(cfg.ledger_url)
    sinks = _select(ledger, site_ids, period)
    all_sites = load_sites(cfg.sites)
    props = {s.site_id: {"name": s.name, "site_type": s.site_type, **s.properties} for s in all_sites}
    unknown = sorted(set(sinks["site_id"]) - set(props))
    if unknown:
        raise InputError(f"site(s) {', '.join(unknown)} are in the ledger but not in the sites file", path=cfg.sites)
    exporting = sorted(set(sinks["site_id"]))
    bad_props = [p for site_id in exporting for p in registry.property_problems(
        kind, site_id, props[site_id], leakage_pct=cfg.leakage_pct, buffer_pct=cfg.buffer_pct,
        buffer_base=cfg.buffer_base)]
    if bad_props:
        raise InputError(f"cannot export to {kind}: site properties are missing or bad; set them in the sites file "
                         f"(`carbon-sink validate --registry {kind}` lists them all)", path=cfg.sites, problems=bad_props)
    _refuse_changed_sites(ledger, sinks, {s.site_id: s for s in all_sites}, cfg.sites)
    _refuse_overlaps(ledger, kind, all_sites, exporting)
    unknown_sd = [f"site {row.site_id}, period {row.period_start}-{row.period_end}: coefficient(s) {', '.join(u)} have "
                  "no SD, and no default uncertainty applied to them (uncertainty_default_pct)"
                  for row in sinks.itertuples()
                  if (u := uncertainty.unknown_coefficients(str(row.uncertainty_method)))]
    unknown_sd += [f"site {row.site_id}, period {row.period_start}-{row.period_end}: published before the treatment of "
                   "coefficients without an SD was recorded (they were taken as exact)"
                   for row in sinks.itertuples() if uncertainty.POLICY_MARK not in str(row.uncertainty_method)]
    if unknown_sd:
        raise InputError(f"cannot issue {kind} credits whose uncertainty is unknown (the uncertainty deduction would be "
                         "too small): give these coefficients an SD, or configure uncertainty_default_pct, and re-run "
                         "the sites (docs/methods.md §10)", problems=unknown_sd)
    problems, deductions = [], {}
    for row in sinks.itertuples():
        try:
            deductions[row.site_id] = registry.site_deductions(
                row.site_id, props[row.site_id], leakage_pct=cfg.leakage_pct, buffer_pct=cfg.buffer_pct,
                buffer_base=cfg.buffer_base, years=int(row.period_years))
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        raise InputError("cannot compute the deductions", problems=problems)
    baselines, baseline_rule = _baselines(cfg, sinks)
    rows = registry.export_rows(sinks, props, baselines, deductions)
    today = dt.date.today().isoformat()
    future = [f"site {r['site_id']}: vintage {r['vintage_start']}..{r['vintage_end']} (period "
              f"{r['period_start_year']}-{r['period_end_year']}) ends after today ({today})" for r in rows
              if r["vintage_end"] > today]
    if future:
        raise InputError("cannot issue credits for a vintage that has not ended: export the periods that have",
                         problems=future)
    _refuse_reissue(ledger.exported(kind, sorted({r["site_id"] for r in rows})), kind, rows)  # early word
    common = pd.DataFrame(rows)
    _, msgs = failure_messages(MODELS["json"], common, where="export (common record)", row_offset=0)
    table: pd.DataFrame | list[dict[str, Any]] = rows
    if kind == "ccer":
        table = registry.ccer_table(rows, props)
    elif kind == "verra":
        table = registry.verra_table(rows, props)
    if kind != "json":
        _, more = failure_messages(MODELS[kind], table, where=f"{kind} export", row_offset=0)
        msgs += more
    if msgs:
        raise InputError(f"the {kind} export fails its contract; nothing was written", problems=msgs)
    runs = sinks[["site_id", "run_id", "site_run_id", "coefficient_set", "coefficient_sha256", "code_version"]]
    manifest = {
        "registry": kind,
        "baseline": baseline_rule,
        "warnings": dating.gap_warnings(sinks, ledger.current("stocks")),
        "buffer_base_default": cfg.buffer_base,
        "config_sha256": sha256_file(cfg.path),
        "sites_file_sha256": sha256_file(cfg.sites),
        "deductions": {site: vars(d) for site, d in sorted(deductions.items())},
        "sites": {
            r.site_id: {
                "ledger_run_id": r.run_id,
                "ledger_site_run_id": int(r.site_run_id),
                "coefficient_set": r.coefficient_set,
                "coefficient_sha256": r.coefficient_sha256,
                "code_version": r.code_version,
                "inputs": json.loads(ledger.site_run_inputs(int(r.site_run_id)) or "{}"),
            }
            for r in runs.sort_values("site_id").itertuples()
        },
    }
    manifest["_rows"] = rows  # recorded in the ledger once the files are written (not written to the manifest)
    return table, manifest


def _export_folder(out_dir: Path, kind: str) -> Path:
    """The folder an export may be written to: resolved first (``a/../../x`` leaves no stray
    ``a``), not a file, not the file system's root, and not holding another registry's export
    (its manifest would be overwritten)."""
    folder = out_dir.resolve()
    if folder.exists() and not folder.is_dir():
        raise InputError("the export folder is a file, not a folder", path=out_dir)
    if folder == Path(folder.anchor):
        raise InputError("refusing to write an export into the file system's root: name a folder", path=out_dir)
    if folder.is_dir():
        manifest = folder / "manifest.json"
        if manifest.is_file():
            try:
                other = json.loads(manifest.read_text(encoding="utf-8")).get("registry")
            except (ValueError, OSError):
                other = None
            if other != kind:
                raise InputError(f"the folder holds {'a ' + str(other) if other else 'another'} export "
                                 f"(manifest.json): write the {kind} export to its own folder", path=out_dir)
    return folder


def export(cfg: Config, kind: str, out_dir: Path, site_ids: list[str] | None = None,
           period: tuple[int, int] | None = None) -> list[Path]:
    """Validate, then write the export file and ``manifest.json`` into ``out_dir`` (all or none)."""
    out_dir = _export_folder(Path(out_dir), kind)
    table, manifest = build(cfg, kind, site_ids, period)
    rows = manifest.pop("_rows")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        name = FILES[kind]
        if kind == "json":
            writers.write_json(table, tmp / name)
        else:
            writers.write_csv(table, tmp / name)
        if kind == "ccer":  # UTF-8 with a BOM: Excel on Chinese Windows reads it as UTF-8, not GBK (docs/registry.md)
            (tmp / name).write_bytes(codecs.BOM_UTF8 + (tmp / name).read_bytes())
        manifest["files"] = {name: writers.sha256_bytes(tmp / name)}
        writers.write_json(manifest, tmp / "manifest.json")
        files = (name, "manifest.json")
        moved: list[Path] = []

        def publish() -> None:  # inside the ledger's transaction, after the vintages are recorded
            for f in files:
                if (out_dir / f).exists():  # an earlier export's file: kept aside until the commit
                    (out_dir / f).replace(tmp / f"{f}.before")
                (tmp / f).replace(out_dir / f)
                moved.append(out_dir / f)

        try:
            Ledger(cfg.ledger_url).record_export(kind, rows, check=lambda done: _refuse_reissue(done, kind, rows),
                                                 publish=publish)
        except BaseException:  # nothing recorded: no file of this export stays, earlier ones come back
            for path in moved:
                path.unlink(missing_ok=True)
                if (tmp / f"{path.name}.before").exists():
                    (tmp / f"{path.name}.before").replace(path)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out_dir / f for f in files]
