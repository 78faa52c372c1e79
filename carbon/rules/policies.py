"""The rules that decide how one site is computed, each in one place: its reference grid,
the start of its whole period, its accounting method and the age of its stands at the
first map, and the seed of its Monte Carlo draws. docs/methods.md §5, §6, §9, §10.
"""

from __future__ import annotations

from carbon.errors import InputError
from carbon.rules import dynamics, uncertainty
from carbon.rules.coefficients import CoefficientSet
from carbon.rules.grid import RasterInfo, nominal_pixel_area_m2, to_crs
from carbon.rules.site import Site
from carbon.rules.vocabulary import METHODS


def reference_grid(site: Site, rasters: dict[int, list[RasterInfo]]) -> tuple[int, RasterInfo]:
    """The site's reference grid: the finest pixel at the site among the rasters of its map years
    (ties: the earliest year, then the first tile). docs/methods.md §5."""
    best: tuple[float, int, int] | None = None
    choice: tuple[int, RasterInfo] | None = None
    areas: dict[tuple[int, tuple[float, ...]], float] = {}  # rasters on one grid: one pixel area
    for y in sorted(rasters):
        for i, info in enumerate(rasters[y]):
            grid = (id(info.crs), tuple(info.transform))
            if grid not in areas:
                areas[grid] = nominal_pixel_area_m2(info, to_crs(site.geometry, site.crs, info.crs))
            area = areas[grid]
            key = (round(area, 6), y, i)
            if best is None or key < best:
                best, choice = key, (y, info)
    assert choice is not None
    return choice



def period_start(site: Site, map_years: list[int], start_year: int | None = None) -> int:
    """The start of the whole period: the run's ``start_year``, else the site's
    ``baseline_year``, else its first map year; it must be a map year of the site
    (docs/methods.md §6)."""
    start = start_year if start_year is not None else (site.baseline_year or map_years[0])
    if start not in map_years:
        raise InputError(
            f"the period start {start} has no land-cover map covering the site (map years: {map_years})",
            site_id=site.site_id,
        )
    return start


def default_method(coefficients: CoefficientSet) -> str:
    """gain_loss with a coefficient table (young stands grow, soils move over 20 years);
    stock_difference with an InVEST pools table, which has no growth rates (InVEST's own
    method, so InVEST inputs give InVEST's answer). docs/methods.md §9."""
    return "stock_difference" if coefficients.is_invest else "gain_loss"

def site_dynamics(site: Site, coefficients: CoefficientSet, method: str | None = None) -> dynamics.Dynamics:
    """The site's method (run override, else its ``method`` property, else the default) and
    its ``initial_age`` property (years; empty or ``mature``: mature)."""
    chosen = method or site.properties.get("method") or default_method(coefficients)
    if chosen not in METHODS:
        raise InputError(f"unknown method {chosen!r}: use one of {', '.join(METHODS)}", site_id=site.site_id)
    raw = site.properties.get("initial_age")
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "mature")):
        return dynamics.Dynamics(chosen, None)
    try:
        value = float(raw)
        if not value.is_integer():
            raise ValueError(raw)
        age = int(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"initial_age must be a whole number of years or 'mature', not {raw!r}",
                         site_id=site.site_id) from None
    if age < 0:
        raise InputError(f"initial_age must not be negative ({age})", site_id=site.site_id)
    return dynamics.Dynamics(chosen, age)



def monte_carlo_seed(geometry_sha256: str, coefficient_sha256: str, dyn: dynamics.Dynamics,
                     periods: list[tuple[int, int]], codes_sha256: list[str]) -> int:
    """The seed of a site's draws, from everything its result depends on (its polygon, not its
    name), so the same inputs give the same intervals, and the same credits, whatever the site
    is called (docs/methods.md §10)."""
    return uncertainty.seed_for(geometry_sha256, coefficient_sha256, dyn.method, str(dyn.initial_age), str(periods),
                                *codes_sha256)


def configured_years(site: Site) -> tuple[int, ...] | None:
    """The map years the configuration gives the site: its ``years`` property (``2018,2020,2024``
    or a list), else None (every catalog year that covers it)."""
    raw = site.properties.get("years")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    parts = raw if isinstance(raw, list | tuple) else str(raw).replace(";", ",").split(",")
    try:
        years = tuple(sorted({int(str(p).strip()) for p in parts if str(p).strip()}))
    except ValueError:
        raise InputError(f"site property years={raw!r} is not a list of years (e.g. 2018,2020,2024)",
                         site_id=site.site_id) from None
    return years or None


def scenario_of(site: Site, coefficients: CoefficientSet, *, years: tuple[int, ...] | None, start_year: int | None,
                method: str | None, coefficients_override: str | None, name: str | None
                ) -> tuple[str | None, dict[str, object]]:
    """Whether a site run is the official estimate or an analyst's scenario, and the parameters
    that make it one (docs/operations.md, "Scenarios"). The official estimate is what the
    configuration gives the site: its ``years`` and ``method`` properties, its
    ``baseline_year``, the configured coefficient set. A run given anything else (or a
    scenario ``name``) is a scenario: (its name, the parameters that differ); the official
    estimate is (None, {})."""
    differs: dict[str, object] = {}
    if years is not None and tuple(sorted(years)) != configured_years(site):
        differs["years"] = sorted(years)
    if start_year is not None and start_year != site.baseline_year:
        differs["start_year"] = start_year
    official_method = site.properties.get("method") or default_method(coefficients)
    if method is not None and method != official_method:
        differs["method"] = method
    if coefficients_override is not None:
        differs["coefficients"] = coefficients_override
    if not differs and name is None:
        return None, {}
    label = name or "; ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                              for k, v in differs.items())
    return label[:200], differs


def future_years(years: list[int], current_year: int) -> list[int]:
    """Map years after the current year: a map of the future (a projection) is not an
    observation of the land, so it can make a scenario but never the official estimate."""
    return sorted(y for y in years if y > current_year)
