"""Checking every input of a configuration at once, before anything is published: the shared
tables, overlaps between sites, and each site (planned from raster headers, with the
configuration's limits of a site's area and pixels, then, unless quick, computed in full with
few draws to reach its pixel codes and coefficients)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from carbon.errors import InputError
from carbon.io.config import Config
from carbon.io.rasters import examine_raster, inspect_raster
from carbon.io.sites import load_sites
from carbon.io.tables import load_catalog, load_coefficients, load_crosswalk
from carbon.pipeline.loop import Outcome, for_each_site
from carbon.pipeline.plan import plan_site
from carbon.pipeline.site import compute_site
from carbon.rules import registry as registry_rules
from carbon.rules.coefficients import CatalogEntry, CoefficientSet, Crosswalk, invest_crosswalk
from carbon.rules.site import Site, overlaps
from carbon.rules.vocabulary import INVEST_LEGEND

#: Monte Carlo draws of a full check (the intervals are not the point; the inputs are).
CHECK_DRAWS = 100


@dataclass
class Validation:
    """Every problem found (each a self-contained sentence), and what was read."""

    problems: list[str] = field(default_factory=list)
    n_sites: int = 0
    n_rasters: int = 0
    coefficient_set: str | None = None


def _output_problems(cfg: Config) -> list[str]:
    """Whether results can be written: the output folder (or the nearest folder that exists
    above it) writable, and a SQLite ledger's folder likewise; nothing is created here."""
    problems = []
    targets = [("output folder", cfg.output_dir)]
    if cfg.ledger_url.startswith("sqlite:///"):
        targets.append(("ledger folder", Path(cfg.ledger_url.removeprefix("sqlite:///")).parent))
    for what, folder in targets:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            problems.append(f"{what} {folder} cannot be created: {existing} is not a folder")
        elif not os.access(existing, os.W_OK | os.X_OK):
            problems.append(f"{what} {folder} is not writable ({existing} is read-only)")
    return problems


def _nodata_problems(cfg: Config, catalog: list[CatalogEntry], coefficients: CoefficientSet) -> list[str]:
    """A raster whose nodata value is also a code of its legend: that class would silently read
    as no data."""
    problems: list[str] = []
    crosswalks: dict[str, Crosswalk] = {}
    for entry in catalog:
        try:
            info = inspect_raster(entry.path)
            if entry.legend not in crosswalks:
                crosswalks[entry.legend] = (invest_crosswalk(coefficients) if entry.legend == INVEST_LEGEND
                                            else load_crosswalk(entry.legend, cfg.legends))
        except InputError:
            continue  # said by the site checks, naming the file
        if info.nodata is None or not float(info.nodata).is_integer():
            continue
        cw = crosswalks[entry.legend]
        hit = np.flatnonzero(cw.codes == int(info.nodata))
        if len(hit):
            label = cw.labels[hit[0]] if cw.labels else ""
            problems.append(f"{entry.path}: its nodata value {int(info.nodata)} is also code {int(info.nodata)} "
                            f"({label or cw.classes[hit[0]]}) of legend {entry.legend!r}: that class would read as no "
                            "data; rewrite the raster with another nodata value")
    return problems


def validate_inputs(cfg: Config, *, quick: bool = False, registry: str | None = None) -> Validation:
    """Every problem of ``cfg``'s inputs; ``quick`` checks tables and raster headers only;
    ``registry`` (ccer, verra) also checks the site properties that registry's export needs,
    naming each missing or bad property once per site."""
    found = Validation()
    sites: tuple[Site, ...] | None = None
    catalog: list[CatalogEntry] | None = None
    coefficients: CoefficientSet | None = None
    try:
        sites = load_sites(cfg.sites)
        found.n_sites = len(sites)
    except InputError as exc:
        found.problems.append(str(exc))
    try:
        catalog = load_catalog(cfg.landcover)
        found.n_rasters = len(catalog)
    except InputError as exc:
        found.problems.append(str(exc))
    try:
        coefficients = load_coefficients(cfg.coefficients)
        found.coefficient_set = coefficients.name
    except InputError as exc:
        found.problems.append(str(exc))
    if sites is not None and registry is not None:
        found.problems += [p for site in sites for p in registry_rules.property_problems(
            registry, site.site_id, {"name": site.name, "site_type": site.site_type, **site.properties},
            leakage_pct=cfg.leakage_pct, buffer_pct=cfg.buffer_pct, buffer_base=cfg.buffer_base)]
    if sites is not None:
        found.problems += [f"sites {a!r} and {b!r} overlap by {ha:,.2f} ha: that land would be counted twice"
                           for a, b, ha in overlaps(sites)]
    found.problems += _output_problems(cfg)
    if catalog is not None and coefficients is not None:
        found.problems += _nodata_problems(cfg, catalog, coefficients)
    if sites is None or catalog is None or coefficients is None:
        return found
    by_id = {s.site_id: s for s in sites}

    def check(site_id: str) -> None:
        site = by_id[site_id]
        problems = _plan_problems(site, catalog, coefficients, cfg)
        if len(problems) == 1:
            raise problems[0]
        if problems:  # every problem of the site at once, each with its own file
            raise InputError(f"{len(problems)} problems", site_id=site_id,
                             problems=[str(p).replace(f" (site {site_id!r}", " (").replace(" ()", "")
                                       for p in problems])
        if not quick:  # its pixel codes and coefficients, once it can be planned
            compute_site(site, catalog, coefficients, legends_dir=cfg.legends, draws=CHECK_DRAWS,
                         sd_defaults=cfg.sd_defaults, limits=cfg.site_limits)

    failed = [o for o in for_each_site(list(by_id), check) if o.status == "failed" and o.error is not None]
    found.problems += _site_problems(failed)
    found.problems += _unused_bad_rasters(catalog, failed)
    return found


#: How plan_site says that no raster of the catalog covers a site.
OUTSIDE = "the site lies outside every raster"


def _plan_problems(site: Site, catalog: list[CatalogEntry], coefficients: CoefficientSet,
                   cfg: Config) -> list[InputError]:
    """Every problem of a site that its raster headers and tables show, not only the first: its
    polygon and limits, each map year on its own (a bad raster of one year does not hide
    another's), and its ecozone in the coefficient table."""
    found: dict[str, InputError] = {}
    try:
        plan_site(site, catalog, coefficients, cfg.legends, limits=cfg.site_limits)  # the site as a whole
    except InputError as whole:
        for y in sorted({e.year for e in catalog}):  # then each year on its own, for every problem
            try:
                plan_site(site, [e for e in catalog if e.year == y], coefficients, cfg.legends,
                          limits=cfg.site_limits)
            except InputError as exc:
                if not exc.message.startswith(OUTSIDE):  # a year that does not cover the site is no problem
                    found.setdefault(str(exc), exc)
        if not found:
            found[str(whole)] = whole
    if not coefficients.is_invest:
        try:
            coefficients.densities(site.ecozone, [], site_id=site.site_id)
        except InputError as exc:
            found.setdefault(str(exc), exc)
    return list(found.values())


def _site_problems(failed: list[Outcome]) -> list[str]:
    """Each site's problem, said once for all the sites that share it (a bad tile covering
    several sites is one problem, naming them)."""
    groups: dict[str, list[str]] = {}
    for o in failed:
        assert o.error is not None
        groups.setdefault(o.error.replace(f"site {o.site_id!r}", SITE_MARK), []).append(o.site_id)
    out = []
    for text, ids in groups.items():
        names = ", ".join(repr(i) for i in ids)
        if SITE_MARK in text:
            out.append(text.replace(SITE_MARK, f"site {names}" if len(ids) == 1 else f"sites {names}"))
        else:
            out.append(f"{'site' if len(ids) == 1 else 'sites'} {names}: {text}")
    return out


SITE_MARK = "\x00site\x00"


def _unused_bad_rasters(catalog: list[CatalogEntry], failed: list[Outcome]) -> list[str]:
    """Rasters that fail the structural checks but cover no site: no run reads them, yet the
    catalog names them, so they are said once."""
    errors = " ".join(o.error or "" for o in failed)
    out = []
    for path in dict.fromkeys(e.path for e in catalog):
        _, problem = examine_raster(path)
        if problem is not None and f"file {path}" not in errors:
            out.append(str(InputError(f"{problem.message}; it covers none of the sites, so runs do not read it",
                                      path=path, problems=problem.problems)))
    return out
