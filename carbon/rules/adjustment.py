"""Stocks and sinks on map-error-adjusted areas (docs/methods.md §8).

Pure numpy: the accuracy samples come in already read, the site's sums already made.

A map year whose map has an accuracy-assessment sample has, for each carbon class ``c``, a
mapped area ``a_c`` (the pixel sums) and an error-adjusted area ``A_c`` (the stratified
estimator, carbon/rules/accuracy.py). The pixel accounting gives the stock of the land mapped
as ``c``, with its ages and soil histories; the adjustment moves ``A_c - a_c`` hectares into
(or out of) class ``c`` at the site's mean density of that class in that year:

    stock_adjusted(y) = stock_mapped(y) + sum_c (A_c(y) - a_c(y)) * d_c(y)

with ``d_c(y) = stock_c(y) / a_c(y)`` (biomass by age, soil carbon by its transition history:
the stand the map shows), or, for a class the map does not show at the site that year, the
class's coefficient (its stock as the stock-difference method applies it). Under stock
difference this is exactly ``sum_c A_c * coefficient_c``; under gain-loss the same correction is
applied to the stocks at both ends of every period, so a sink is the change of adjusted stocks.

Each ``d_c`` is written as a sum of parts that scale with one coefficient (a class's biomass
pools, or the soil carbon of each class its land came from), so the Monte Carlo can draw the
adjusted areas and the coefficients jointly (carbon/rules/uncertainty.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from carbon.rules import dynamics
from carbon.rules.accuracy import AccuracySample, areas_from_proportions, draw_proportions, stratified_area
from carbon.rules.dynamics import BIOMASS_POOLS
from carbon.rules.vocabulary import POOLS


@dataclass(frozen=True)
class YearMap:
    """What the adjustment needs of one map year."""

    sample: AccuracySample | None  # the map's accuracy sample (classes = the legend's codes)
    sample_key: str | None  # maps naming the same sample share its draws (the file's path)
    area_by_code: np.ndarray  # ha of the site mapped as each code, aligned with the sample's classes
    class_of_code: np.ndarray  # index in the site's carbon classes of each code


@dataclass(frozen=True)
class AreaShift:
    """Mapped and adjusted area of each carbon class, per map year, and draws of the adjusted."""

    years: list[int]
    mapped: np.ndarray  # (year, class) ha
    adjusted: np.ndarray  # (year, class) ha; equals ``mapped`` in a year without a sample
    draws: np.ndarray | None  # (n, year, class) ha, None when no year has a sample
    sampled: np.ndarray  # (year,) bool: the year's map has an accuracy sample

    @property
    def any(self) -> bool:
        return bool(self.sampled.any())

    @property
    def delta(self) -> np.ndarray:
        """(year, class) ha: adjusted minus mapped."""
        return self.adjusted - self.mapped

    def year_index(self, year: int) -> int:
        """The map year whose areas stand for ``year``: itself, or for a period start before the
        first map (a baseline year) the first map year."""
        later = [i for i, y in enumerate(self.years) if y >= year]
        return later[0] if later else len(self.years) - 1


def area_shift(years: list[int], maps: list[YearMap], n_classes: int, n_draws: int,
               rng: np.random.Generator) -> AreaShift:
    """Adjusted areas of each carbon class per map year (the stratified estimator on the site's
    mapped areas, Olofsson et al. 2013) and ``n_draws`` joint draws of them. Years naming the
    same sample share one draw of its error rates."""
    k = len(years)
    mapped = np.zeros((k, n_classes))
    adjusted = np.zeros((k, n_classes))
    sampled = np.array([m.sample is not None for m in maps], dtype=bool)
    for i, m in enumerate(maps):
        codes_to_class = _to_classes(m.class_of_code, n_classes)
        mapped[i] = m.area_by_code @ codes_to_class
        if m.sample is None:
            adjusted[i] = mapped[i]
        else:
            adjusted[i] = stratified_area(m.sample, m.area_by_code).area @ codes_to_class
    if not sampled.any():
        return AreaShift(list(years), mapped, adjusted, None, sampled)
    draws = np.repeat(mapped[None, :, :], n_draws, axis=0)
    by_key: dict[str, list[int]] = {}
    for i, m in enumerate(maps):
        if m.sample is not None:
            by_key.setdefault(m.sample_key or f"year {years[i]}", []).append(i)
    for idx in by_key.values():
        sample = maps[idx[0]].sample
        assert sample is not None
        strata = np.zeros(len(sample.classes), dtype=bool)
        for i in idx:
            strata |= maps[i].area_by_code > 0
        rows = draw_proportions(sample, strata, n_draws, rng)
        for i in idx:
            draws[:, i, :] = areas_from_proportions(maps[i].area_by_code, rows, n_draws) @ _to_classes(
                maps[i].class_of_code, n_classes)
    return AreaShift(list(years), mapped, adjusted, draws, sampled)


def _to_classes(class_of_code: np.ndarray, n_classes: int) -> np.ndarray:
    m = np.zeros((len(class_of_code), n_classes))
    m[np.arange(len(class_of_code)), np.asarray(class_of_code, dtype=np.int64)] = 1.0
    return m


def density_parts(agg: dynamics.Aggregates, coef: dynamics.Coefficients) -> np.ndarray:
    """(year, class, source class, pool) t C/ha: the site's mean stock density of the land in
    each class each year, split by the coefficient each part scales with (a class's biomass
    pools: itself; soil carbon: the classes its land came from). Summed over source classes it
    is the class's density.

    A class the map does not show at the site in a year takes its density of the nearest year
    that shows it (the later one on a tie), so that hectares moved into it by the adjustment do
    not jump between a mature stock and the site's young stands from one year to the next; a
    class shown in no year takes its own coefficients (its stock under stock difference)."""
    bio = coef.biomass
    bio_idx = np.asarray([POOLS.index(p) for p in BIOMASS_POOLS])
    soc_i = POOLS.index("soc")
    k = agg.n_classes
    n_years = len(agg.years)
    out = np.zeros((n_years, k, k, len(POOLS)))
    has = np.zeros((n_years, k), dtype=bool)
    diag = np.arange(k)
    for i, y in enumerate(agg.years):
        area = agg.area[y].sum(axis=1)
        has[i] = area > 0
        safe = np.where(has[i], area, 1.0)
        out[i, diag[:, None], diag[:, None], bio_idx[None, :]] = np.einsum("ca,cap->cp", agg.area[y], bio) / safe[:, None]
        out[i, :, :, soc_i] = agg.soc[y] / safe[:, None] * coef.soc[None, :]
    for c in range(k):
        shown = np.flatnonzero(has[:, c])
        for gap in np.flatnonzero(~has[:, c]):
            out[gap, c] = 0.0
            if shown.size:
                near = shown[np.argmin(np.abs(shown - gap) * 2 - (shown > gap))]  # nearest; the later on a tie
                out[gap, c] = out[near, c]
            else:
                out[gap, c, c, :] = coef.stock[c]
    return out


def correction(shift: AreaShift, parts: np.ndarray, year: int, delta: np.ndarray | None = None) -> np.ndarray:
    """(source class, pool) t C added to the stock of ``year`` by the area shift ``delta``
    ((class,) ha; default: the point estimate, adjusted minus mapped)."""
    i = shift.year_index(year)
    d = shift.delta[i] if delta is None else delta
    return np.einsum("c,ckp->kp", d, parts[i])


def stock_by_class(stock: np.ndarray, shift: AreaShift, parts: np.ndarray) -> np.ndarray:
    """(year, class, pool) stock of the land in each class on the adjusted areas."""
    return stock + shift.delta[:, :, None] * parts.sum(axis=2)


def year_contributions(contrib: np.ndarray, shift: AreaShift, parts: np.ndarray) -> np.ndarray:
    """(year, source class, pool) contributions (dynamics.year_contributions) on the adjusted areas."""
    return contrib + np.einsum("yc,yckp->ykp", shift.delta, parts)


def period_contributions(start: np.ndarray, end: np.ndarray, periods: list[tuple[int, int]], shift: AreaShift,
                         parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(period, source class, pool) contributions at both ends of each period on the adjusted areas."""
    start, end = start.copy(), end.copy()
    for j, (t1, t2) in enumerate(periods):
        start[j] += correction(shift, parts, t1)
        end[j] += correction(shift, parts, t2)
    return start, end


def period_flows(flows: xr.Dataset, periods: list[tuple[int, int]], shift: AreaShift, parts: np.ndarray
                 ) -> xr.Dataset:
    """``dynamics.period_flows`` on the adjusted areas: each end's stock gets its year's
    correction; the change of the correction is a gain where it adds carbon, a loss where it
    removes some (soil carbon keeps one net figure, as in dynamics.period_flows)."""
    out = flows.copy(deep=True)
    soc_i = POOLS.index("soc")
    for j, (t1, t2) in enumerate(periods):
        c1 = correction(shift, parts, t1).sum(axis=0)
        c2 = correction(shift, parts, t2).sum(axis=0)
        out["stock_start_tc"][j] += c1
        out["stock_end_tc"][j] += c2
        diff = c2 - c1
        out["gain_tc"][j] += np.maximum(diff, 0.0)
        out["loss_tc"][j] += np.minimum(diff, 0.0)
        change = float(out["stock_end_tc"][j, soc_i] - out["stock_start_tc"][j, soc_i])
        out["gain_tc"][j, soc_i], out["loss_tc"][j, soc_i] = max(change, 0.0), min(change, 0.0)
    return out


def area_draw_terms(shift: AreaShift, parts: np.ndarray, year: int) -> np.ndarray:
    """(n, source class, pool) t C that each draw of the adjusted areas adds to the stock of
    ``year`` around its point estimate (zero in a year without a sample)."""
    assert shift.draws is not None
    i = shift.year_index(year)
    return np.einsum("nc,ckp->nkp", shift.draws[:, i, :] - shift.adjusted[i], parts[i])
