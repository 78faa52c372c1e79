"""Checking every input of a configuration at once, before anything is published: the shared
tables, overlaps between sites, and each site (planned from raster headers, or computed
in full with few draws to reach its pixel codes and coefficients)."""

from __future__ import annotations

from dataclasses import dataclass, field

from carbon.errors import InputError
from carbon.io.config import Config
from carbon.io.sites import load_sites
from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.loop import for_each_site
from carbon.pipeline.plan import plan_site
from carbon.pipeline.site import compute_site
from carbon.rules.coefficients import CatalogEntry, CoefficientSet
from carbon.rules.site import Site, overlaps

#: Monte Carlo draws of a full check (the intervals are not the point; the inputs are).
CHECK_DRAWS = 100


@dataclass
class Validation:
    """Every problem found (each a self-contained sentence), and what was read."""

    problems: list[str] = field(default_factory=list)
    n_sites: int = 0
    n_rasters: int = 0
    coefficient_set: str | None = None


def validate_inputs(cfg: Config, *, quick: bool = False) -> Validation:
    """Every problem of ``cfg``'s inputs; ``quick`` checks tables and raster headers only."""
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
    if sites is not None:
        found.problems += [f"sites {a!r} and {b!r} overlap by {ha:,.2f} ha: that land would be counted twice"
                           for a, b, ha in overlaps(sites)]
    if sites is None or catalog is None or coefficients is None:
        return found
    by_id = {s.site_id: s for s in sites}

    def check(site_id: str) -> None:
        if quick:
            plan_site(by_id[site_id], catalog, coefficients, cfg.legends)
        else:
            compute_site(by_id[site_id], catalog, coefficients, legends_dir=cfg.legends, draws=CHECK_DRAWS,
                         sd_defaults=cfg.sd_defaults)

    for o in for_each_site(list(by_id), check):
        if o.status == "failed" and o.error is not None:
            named = f"site {o.site_id!r}" in o.error
            found.problems.append(o.error if named else f"site {o.site_id!r}: {o.error}")
    return found
