"""Dating the changes seen between maps (docs/methods.md §9).

A change first seen in the map of year s, whose previous map with data is of year p,
happened in one of the years p+1 .. s; the gain-loss dynamics spread it evenly over them
(carbon/rules/dynamics.py, ``run_history``). Here: how far apart a period's maps lie, and the
warning a period gets when they lie so far apart that its changes are dated, not observed.
"""

from __future__ import annotations

import pandas as pd

#: A period whose maps lie further apart than this (years) rests on dated, not observed,
#: changes: results, reports and exports say so (docs/methods.md §9).
MAX_MAP_GAP_YEARS = 3


def map_gap_years(map_years: list[int], start: int, end: int) -> int:
    """The longest interval (years) between consecutive map years within ``start .. end``."""
    inside = sorted(y for y in set(map_years) if start <= y <= end)
    return max((b - a for a, b in zip(inside[:-1], inside[1:], strict=True)), default=end - start)


def with_map_gaps(sinks: pd.DataFrame, stocks: pd.DataFrame) -> pd.DataFrame:
    """``sinks`` with ``map_gap_years`` (the map years of each site are those of its ``stocks``,
    the same site run's)."""
    years = {str(s): sorted(int(y) for y in g["year"]) for s, g in stocks.groupby("site_id")}
    out = sinks.copy()
    out["map_gap_years"] = [map_gap_years(years.get(str(r.site_id), []), int(r.period_start), int(r.period_end))
                            for r in sinks.itertuples()]
    return out


def gap_warnings(sinks: pd.DataFrame, stocks: pd.DataFrame) -> list[str]:
    """A sentence per site and period of ``sinks`` whose maps lie more than
    ``MAX_MAP_GAP_YEARS`` apart (the map years are those of the site's ``stocks``)."""
    out = []
    for r in with_map_gaps(sinks, stocks).itertuples():
        if r.map_gap_years > MAX_MAP_GAP_YEARS:
            out.append(f"site {r.site_id}, period {r.period_start}-{r.period_end}: its maps lie up to "
                       f"{r.map_gap_years} years apart; the changes between them are dated by spreading them evenly "
                       "over the years between the maps, not observed (methods §9)")
    return out
