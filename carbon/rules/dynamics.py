"""Carbon dynamics from land-cover history: stand age, growth, conversion and soil transitions.

Pure numpy/xarray arithmetic, no file access (docs/methods.md §9).

Per pixel, the land-cover history gives the first map year of the current run of the same
class (``start``) and the class before it (``previous``). From these:

* **Dating a change** (docs/methods.md §9): a change first seen in the map of year s, whose
  previous map with data is of year p, happened in one of the years p+1 .. s; as IPCC spreads
  the change between two surveys evenly over the years between them (2006 Vol.4 Ch.3,
  consistent representation of land), the pixel's area is spread evenly over those
  ``span = s − p`` change years. With annual maps (span 1) the change is dated to s.
* **Age** at year t = t − (change year), for each share of the spread: t − s, …, t − s +
  span − 1. A pixel already in its class in its first map has the site's ``initial_age``
  (+ years since the first map), or is mature.
* **Biomass** of a pool with a growth rate g: min(mature stock, age × g); without a growth
  rate: the class's stock at once (IPCC Tier 1 for annual crops and grass). A coefficient row
  may instead name a Chapman–Richards curve or give an age-class table (``biomass_table``);
  every curve is the mature stock times a shape.
* **Conversion**: the biomass of the previous class is lost in the year of conversion
  (IPCC 2006 Vol.4 Eq. 2.16); the new class starts from age 0.
* **Soil**: after a change, SOC moves linearly from the stock it had at the change to the
  new class's stock over D years (20 at Tier 1, Eq. 2.25), then stays; the transition starts
  at the mean of the spread change years, (p + 1 + s) / 2. SOC is tracked as weights on the
  classes' SOC densities, so every stock stays linear in the coefficients.

The stock-difference method is the special case in which every stand is mature and soil
follows the class at once (D = 0).

Results are aggregated while the rasters are read: areas by (class, age) and soil weights
by (class, source class), per year and per period. All stocks, sinks and their breakdown
follow from these small tables, so coefficients can be varied (Monte Carlo) without
reading a raster again.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from carbon.rules.vocabulary import POOLS

#: Years for SOC to reach the new class's stock after a change (IPCC 2006 Vol.4 Eq. 2.25, D = 20).
SOC_TRANSITION_YEARS = 20
#: Ages are tracked up to this many years; older stands count as this old (bin AGE_MAX).
AGE_MAX = 1000
#: Number of age bins: 0..AGE_MAX, then one bin for "mature" (age unknown, at maturity).
N_AGE = AGE_MAX + 2
MATURE_BIN = N_AGE - 1
BIOMASS_POOLS = tuple(p for p in POOLS if p != "soc")
INVALID = -1


@dataclass(frozen=True)
class Dynamics:
    """How a site's stocks evolve (docs/methods.md §9)."""

    method: str = "gain_loss"
    initial_age: int | None = None  # None: stands already in their class at the first map are mature

    @property
    def soc_years(self) -> int:
        return SOC_TRANSITION_YEARS if self.method == "gain_loss" else 0

    def age_of_initial(self, years_since_first_map: np.ndarray | int) -> np.ndarray | int | None:
        if self.method == "stock_difference" or self.initial_age is None:
            return None
        return self.initial_age + years_since_first_map


# --- history ---------------------------------------------------------------------------


def runs(classes: np.ndarray, years: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a stack of class indices (year, pixel; ``INVALID`` = no data), per year and pixel:
    the first map year of the current run of the same class (-1 where the run began at the
    pixel's first observation, i.e. the class was already there), and the class before the
    run (-1 where there is none). A year without data does not break a run: the pixel keeps
    its state. Invalid pixels get -2 in both. (``run_history`` also gives each run's span.)
    """
    start, previous, _ = run_history(classes, years)
    return start, previous


def run_history(classes: np.ndarray, years: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``runs`` and, per year and pixel, the span of the current run's change: the years
    between the last map with data before the run's first map and that first map (the change
    happened in one of them; 1 for annual maps and for runs that began at the pixel's first
    observation; a year without data widens the span). -2 where the pixel has no data."""
    n_years = classes.shape[0]
    cur = np.full(classes.shape[1:], INVALID, dtype=np.int64)
    cur_start = np.full(classes.shape[1:], -1, dtype=np.int64)
    cur_prev = np.full(classes.shape[1:], -1, dtype=np.int64)
    cur_span = np.ones(classes.shape[1:], dtype=np.int64)
    last_seen = np.full(classes.shape[1:], -1, dtype=np.int64)
    start = np.full(classes.shape, -2, dtype=np.int64)
    previous = np.full(classes.shape, -2, dtype=np.int64)
    span = np.full(classes.shape, -2, dtype=np.int64)
    for i in range(n_years):
        c = classes[i]
        valid = c != INVALID
        new = valid & (cur != c)
        changed = new & (cur != INVALID)
        cur_prev[changed] = cur[changed]
        cur_start[changed] = years[i]
        cur_span[changed] = years[i] - last_seen[changed]
        cur[new] = c[new]
        last_seen[valid] = years[i]
        start[i] = np.where(valid, cur_start, -2)
        previous[i] = np.where(valid, cur_prev, -2)
        span[i] = np.where(valid, cur_span, -2)
    return start, previous, span


def land_cover_history(classes: xr.DataArray) -> xr.Dataset:
    """Per pixel and year of a land-cover stack (dims ``year``, ...; class indices, -1 = no
    data): ``first_year`` of the pixel's current class (-1: already in it at its first map)
    and ``previous_class`` (-1: none). -2 where the pixel has no data that year."""
    stack = classes.transpose("year", ...)
    years = stack["year"].to_numpy()
    flat = stack.to_numpy().reshape(len(years), -1)
    start, previous = runs(flat, years)
    shape = stack.shape
    return xr.Dataset(
        {
            "first_year": (stack.dims, start.reshape(shape)),
            "previous_class": (stack.dims, previous.reshape(shape)),
        },
        coords=stack.coords,
    )


#: Flicker A -> B -> A is filtered only when the two A maps are at most this many years apart:
#: between maps further apart, a B seen in one map may have lasted years (a clearing and a
#: replanting), which the dating rule counts (docs/methods.md §9).
MAX_FLICKER_SPAN_YEARS = 3


def filter_flicker(classes: np.ndarray, years: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Short flicker A -> B -> A (three maps with data, years without data between them
    skipped, the two A maps at most ``MAX_FLICKER_SPAN_YEARS`` apart; ``years`` default to
    consecutive years) is map noise, not two land-use changes: the middle map takes the class
    around it. Returns the filtered stack and a mask of the changed cells (year, pixel).
    docs/methods.md §9."""
    n_years = classes.shape[0]
    years = np.arange(n_years) if years is None else np.asarray(years)
    out = classes.copy()
    changed = np.zeros(classes.shape, dtype=bool)
    # the next year with data, per year and pixel (from the maps as read)
    following = np.full(classes.shape, INVALID, dtype=classes.dtype)
    following_year = np.zeros(classes.shape, dtype=np.int64)
    ahead = np.full(classes.shape[1:], INVALID, dtype=classes.dtype)
    ahead_year = np.zeros(classes.shape[1:], dtype=np.int64)
    for i in range(n_years - 1, -1, -1):
        following[i], following_year[i] = ahead, ahead_year
        seen = classes[i] != INVALID
        ahead = np.where(seen, classes[i], ahead)
        ahead_year = np.where(seen, years[i], ahead_year)
    before = np.full(classes.shape[1:], INVALID, dtype=classes.dtype)  # the previous year with data, filtered
    before_year = np.zeros(classes.shape[1:], dtype=np.int64)
    for i in range(n_years):
        here, after = classes[i], following[i]
        flick = ((before != INVALID) & (after != INVALID) & (here != INVALID) & (before == after) & (here != before)
                 & (following_year[i] - before_year <= MAX_FLICKER_SPAN_YEARS))
        out[i][flick] = before[flick]
        changed[i] = flick
        seen = out[i] != INVALID
        before = np.where(seen, out[i], before)
        before_year = np.where(seen, years[i], before_year)
    return out, changed


def age_bins(age: np.ndarray) -> np.ndarray:
    """Age (years; negative = mature) -> bin index."""
    return np.where(age < 0, MATURE_BIN, np.minimum(age, AGE_MAX))


# --- aggregation while reading ---------------------------------------------------------


@dataclass
class Aggregates:
    """Everything the stocks and sinks of a site depend on, accumulated over strips."""

    n_classes: int
    years: list[int]
    periods: list[tuple[int, int]]
    area: dict[int, np.ndarray] = field(init=False)  # year -> (class, age bin) ha
    soc: dict[int, np.ndarray] = field(init=False)  # year -> (class, source class) ha-weights
    same: dict[tuple[int, int], np.ndarray] = field(init=False)  # period -> (class, age bin at t1), same run
    before: dict[tuple[int, int], np.ndarray] = field(init=False)  # converted pixels at t1 (class, age bin)
    after: dict[tuple[int, int], np.ndarray] = field(init=False)  # converted pixels at t2 (class, age bin)
    soc_start: dict[tuple[int, int], np.ndarray] = field(init=False)
    soc_end: dict[tuple[int, int], np.ndarray] = field(init=False)
    transitions: dict[tuple[int, int], np.ndarray] = field(init=False)  # period -> (from, to) ha
    flicker_ha: dict[int, float] = field(init=False)  # year -> area whose single-year flicker was filtered

    def __post_init__(self) -> None:
        k = self.n_classes
        self.area = {y: np.zeros((k, N_AGE)) for y in self.years}
        self.soc = {y: np.zeros((k, k)) for y in self.years}
        self.same = {p: np.zeros((k, N_AGE)) for p in self.periods}
        self.before = {p: np.zeros((k, N_AGE)) for p in self.periods}
        self.after = {p: np.zeros((k, N_AGE)) for p in self.periods}
        self.soc_start = {p: np.zeros((k, k)) for p in self.periods}
        self.soc_end = {p: np.zeros((k, k)) for p in self.periods}
        self.transitions = {p: np.zeros((k, k)) for p in self.periods}
        self.flicker_ha = {y: 0.0 for y in self.years}

    def _hist(self, cls: np.ndarray, age: np.ndarray, w: np.ndarray, span: np.ndarray | None = None) -> np.ndarray:
        """(class, age bin) sums of ``w``; a pixel whose change is spread over ``span`` change
        years counts 1/span at each of the ages age, age + 1, ..., age + span − 1."""
        k = self.n_classes
        if span is None or not (span > 1).any():
            return np.bincount(cls * N_AGE + age_bins(age), weights=w, minlength=k * N_AGE).reshape(k, N_AGE)
        out = np.zeros(k * N_AGE)
        for d in np.flatnonzero(np.bincount(span)):  # np.unique(span): spans are whole years >= 1
            m = span == d
            share = w[m] / d
            for offset in range(int(d)):
                out += np.bincount(cls[m] * N_AGE + age_bins(age[m] + offset), weights=share, minlength=k * N_AGE)
        return out.reshape(k, N_AGE)

    def add(self, classes: np.ndarray, weight: np.ndarray, dynamics: Dynamics,
            on_year: Callable[[int, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], None] | None = None,
            year_area: np.ndarray | None = None, scratch: dict[str, np.ndarray] | None = None) -> None:
        """Accumulate one block of pixels: ``classes`` (year, pixel) class indices with
        ``INVALID`` for no data, ``weight`` (pixel) in ha. ``on_year(year, classes, ages,
        soc_weights, spans)`` is called for each year with the classes as the history reads them
        (flicker filtered), the ages (years, -1 mature, -2 no data, each spread over its span of
        change years), for per-pixel maps; it must not keep ``soc_weights`` (the next year's
        are written into the same array).
        ``year_area`` (year, class) ha, when the caller has it, saves a pass over the pixels.
        ``scratch``: working arrays kept by the caller from one block to the next (a dict, one
        per thread), so that large ones are not allocated (and faulted in) again for each block."""
        years = np.asarray(self.years)
        k = self.n_classes
        if dynamics.method == "stock_difference":
            self._add_stock_difference(classes, weight, on_year, year_area)
            return
        from carbon.rules import kernels  # noqa: PLC0415 - numba, only where pixels are summed

        # flicker filter, runs, spans and ages in one compiled pass (filter_flicker, run_history)
        init_age = dynamics.age_of_initial(0)
        classes, flicker, start, span, ages = kernels.history(
            classes, years, 0 if init_age is None else int(init_age), init_age is not None,
            dynamics.method == "gain_loss", MAX_FLICKER_SPAN_YEARS)
        if dynamics.method == "gain_loss":
            for i, y in enumerate(self.years):
                self.flicker_ha[y] += float(weight[flicker[i]].sum())
        valid = classes != INVALID
        index = {y: i for i, y in enumerate(self.years)}
        scratch = {} if scratch is None else scratch
        # one array for every year's SOC weights: on_year uses a year's before the next is computed
        for i, lam in enumerate(_soc_weights(classes, years, k, dynamics.soc_years, fresh=False, scratch=scratch)):
            y = self.years[i]
            v = valid[i]
            kernels.age_hist_add(v, classes[i], ages[i], weight, span[i], N_AGE, AGE_MAX, self.area[y].reshape(-1))
            in_year = _soc_by_class(v, classes[i], lam, weight, k, scratch)
            self.soc[y] += in_year
            for p in self.periods:
                if y not in p:
                    continue
                other = index[p[1] if y == p[0] else p[0]]
                acc = self.soc_start if y == p[0] else self.soc_end
                if not (v & ~valid[other]).any():  # the same pixels as the year's: the same sums
                    acc[p] += in_year
                else:
                    acc[p] += _soc_by_class(v & valid[other], classes[i], lam, weight, k, scratch)
            if on_year is not None:
                on_year(y, classes[i], ages[i], lam, span[i])
        for p in self.periods:
            i1, i2 = index[p[0]], index[p[1]]
            both = valid[i1] & valid[i2]
            same = both & (start[i1] == start[i2]) & (classes[i1] == classes[i2])
            conv = both & ~same
            c1, c2 = classes[i1], classes[i2]
            kernels.age_hist_add(same, c1, ages[i1], weight, span[i1], N_AGE, AGE_MAX, self.same[p].reshape(-1))
            kernels.age_hist_add(conv, c1, ages[i1], weight, span[i1], N_AGE, AGE_MAX, self.before[p].reshape(-1))
            kernels.age_hist_add(conv, c2, ages[i2], weight, span[i2], N_AGE, AGE_MAX, self.after[p].reshape(-1))
            kernels.pair_hist_add(both, c1, c2, k, weight, self.transitions[p].reshape(-1))

    def _add_stock_difference(self, classes: np.ndarray, weight: np.ndarray,
                              on_year: Callable[[int, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], None] | None,
                              year_area: np.ndarray | None) -> None:
        """Stock difference needs only class areas and transitions: every stand is mature and
        soil follows the class, so land in the same class at both ends has no change and land
        in another class is converted (its whole stock leaves, the new class's arrives)."""
        k = self.n_classes
        valid = classes != INVALID
        everywhere = bool(valid.all())
        areas = np.zeros((len(self.years), k))
        for i, y in enumerate(self.years):
            v = valid[i]
            if year_area is not None:
                areas[i] = year_area[i]
            elif everywhere:
                areas[i] = np.bincount(classes[i], weights=weight, minlength=k)
            else:
                areas[i] = np.bincount(classes[i][v], weights=weight[v], minlength=k)
            if on_year is not None:
                on_year(y, classes[i], np.where(v, -1, -2), None, None)
        index = {y: i for i, y in enumerate(self.years)}
        trans = {}
        for p in self.periods:
            i1, i2 = index[p[0]], index[p[1]]
            pair = classes[i1] * np.int32(k) + classes[i2]
            if everywhere:
                t = np.bincount(pair, weights=weight, minlength=k * k)
            else:
                both = valid[i1] & valid[i2]
                t = np.bincount(pair[both], weights=weight[both], minlength=k * k)
            trans[p] = t.reshape(k, k)
        self.add_totals(areas, trans)

    def add_totals(self, year_area: np.ndarray, transitions: dict[tuple[int, int], np.ndarray]) -> None:
        """Stock difference from totals: ``year_area`` (year, class) ha and, per period, the
        (from, to) class transition areas of the land with data in both years."""
        diag = np.diag_indices(self.n_classes)
        for i, y in enumerate(self.years):
            self.area[y][:, MATURE_BIN] += year_area[i]
            self.soc[y][diag] += year_area[i]
        for p in self.periods:
            t = transitions[p]
            stayed = np.diag(t)
            moved = t - np.diag(stayed)
            self.transitions[p] += t
            self.same[p][:, MATURE_BIN] += stayed
            self.before[p][:, MATURE_BIN] += moved.sum(axis=1)
            self.after[p][:, MATURE_BIN] += moved.sum(axis=0)
            self.soc_start[p][diag] += t.sum(axis=1)
            self.soc_end[p][diag] += t.sum(axis=0)

    def merge(self, other: Aggregates) -> None:
        """Add another block's aggregates (every field is a sum over pixels)."""
        for name in ("area", "soc", "same", "before", "after", "soc_start", "soc_end", "transitions"):
            mine, theirs = getattr(self, name), getattr(other, name)
            for key in mine:
                mine[key] += theirs[key]
        for y in self.flicker_ha:
            self.flicker_ha[y] += other.flicker_ha[y]


def _scratch(scratch: dict[str, np.ndarray] | None, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A C-contiguous array of ``shape`` (contents undefined) from ``scratch[name]``, grown as needed."""
    size = math.prod(shape)
    if scratch is None:
        return np.empty(shape, dtype=dtype)
    buf = scratch.get(name)
    if buf is None or buf.size < size or buf.dtype != np.dtype(dtype):
        buf = scratch[name] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def _soc_by_class(sel: np.ndarray, cls: np.ndarray, lam: np.ndarray | None, w: np.ndarray, k: int,
                  scratch: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """``_by_class(cls[sel], lam[sel], w[sel], k)``, the same numbers: each class's pixels are
    gathered once, in pixel order, and weighted by the same matrix product."""
    if lam is None:
        return _by_class(cls[sel], None, w[sel], k)
    from carbon.rules import kernels  # noqa: PLC0415 - numba, only where pixels are summed

    w_sorted = _scratch(scratch, "w_sorted", (len(cls),), np.float64)
    lam_sorted = _scratch(scratch, "lam_sorted", lam.shape, np.float64)
    offsets = kernels.group_by_class(sel, cls, w, lam, k, w_sorted, lam_sorted)
    out = np.zeros((k, k))
    for c in range(k):
        a, b = offsets[c], offsets[c + 1]
        if b > a:
            out[c] = w_sorted[a:b] @ lam_sorted[a:b]
    return out


def _soc_weights(classes: np.ndarray, years: np.ndarray, k: int, soc_years: int, fresh: bool = True,
                 scratch: dict[str, np.ndarray] | None = None) -> Iterator[np.ndarray | None]:
    """``soc_weights``, the same numbers, from the compiled per-pixel step
    (``kernels.soc_step``); with ``fresh=False`` every year's weights are written into the
    same array (the caller is done with a year's before asking for the next), taken with the
    per-pixel state from ``scratch``."""
    n_years, n = classes.shape
    if soc_years == 0:
        yield from soc_weights(classes, years, k, soc_years)
        return
    from carbon.rules import kernels  # noqa: PLC0415 - numba, only where pixels are summed

    anchor = _scratch(scratch, "anchor", (n, k), np.float64)
    anchor.fill(0.0)
    target = _scratch(scratch, "target", (n,), np.int64)
    target.fill(INVALID)
    run_start = _scratch(scratch, "run_start", (n,), np.float64)
    run_start.fill(0.0)
    last_seen = _scratch(scratch, "last_seen", (n,), np.float64)
    last_seen.fill(0.0)
    lam = np.empty((n, k)) if fresh else _scratch(scratch, "lam", (n, k), np.float64)
    for i in range(n_years):
        if fresh and i:
            lam = np.empty((n, k))
        kernels.soc_step(classes[i], int(years[i]), int(soc_years), anchor, target, run_start, last_seen, lam)
        yield lam


def _by_class(cls: np.ndarray, lam: np.ndarray | None, w: np.ndarray, k: int) -> np.ndarray:
    """(current class, source class) sums of weight x SOC weights; diagonal when lam is None."""
    out = np.zeros((k, k))
    if lam is None:
        out[np.diag_indices(k)] = np.bincount(cls, weights=w, minlength=k)
        return out
    for c in np.unique(cls):
        m = cls == c
        out[c] = w[m] @ lam[m]
    return out


def soc_weights(classes: np.ndarray, years: np.ndarray, k: int, soc_years: int) -> Iterator[np.ndarray | None]:
    """Per year, the SOC of every pixel as weights over the classes' SOC densities (pixel,
    class); None when soil follows the class at once (the weights are the current class).

    A run that starts at the pixel's first observation is at equilibrium. After a change the
    weights move linearly, over ``soc_years``, from those at the change to the new class; the
    change is dated to the mean of its spread change years (``run_history``): with the last
    map with data in year p and the change first seen in year s, (p + 1 + s) / 2.
    """
    n_years, n = classes.shape
    if soc_years == 0:
        for _ in range(n_years):
            yield None
        return
    anchor = np.zeros((n, k))  # SOC weights at the start of the current run
    target = np.full(n, INVALID, dtype=np.int64)
    run_start = np.zeros(n, dtype=np.float64)  # the (mean) year the current run's change happened
    last_seen = np.zeros(n, dtype=np.float64)
    rows = np.arange(n)
    for i in range(n_years):
        c = classes[i]
        valid = c != INVALID
        first = valid & (target == INVALID)
        changed = valid & (target != INVALID) & (c != target)
        if changed.any():
            when = (last_seen[changed] + 1 + years[i]) / 2  # the mean of the change years p+1 .. s
            f = np.clip((when - run_start[changed]) / soc_years, 0.0, 1.0)[:, None]
            old = np.zeros((int(changed.sum()), k))
            old[np.arange(len(old)), target[changed]] = 1.0
            anchor[changed] = anchor[changed] * (1 - f) + old * f
            run_start[changed] = when
        if first.any():
            anchor[first] = 0.0
            anchor[rows[first], c[first]] = 1.0
            run_start[first] = years[i] - soc_years  # already at equilibrium
        target[first | changed] = c[first | changed]
        last_seen[valid] = years[i]
        has = target != INVALID
        f = np.clip((years[i] - run_start) / soc_years, 0.0, 1.0)
        lam = anchor * (1 - f)[:, None]
        lam[rows[has], target[has]] += f[has]
        yield lam


# --- stocks from aggregates ------------------------------------------------------------


#: The age curves a coefficient row may name in its ``curve`` column (docs/methods.md §9).
CURVES = ("linear", "chapman_richards")
#: The curve of a row that gives an ``age_curve`` table (in densities and Coefficients only).
AGE_CURVE = "age_curve"
#: How far an ``age_curve``'s last stock may be from the row's mature stock (t C/ha, or relative).
AGE_CURVE_TOLERANCE = 1e-9


#: What an ``age_curve`` cell must be (the first rule broken is reported).
AGE_CURVE_NOT_PAIRS = "age:stock pairs of finite numbers separated by ';' (e.g. 0:0;10:35;20:70)"
AGE_CURVE_AGES = "ages starting at 0, strictly increasing"
AGE_CURVE_NEGATIVE = "stocks >= 0"
AGE_CURVE_DECREASING = "stocks never decreasing with age"


@functools.lru_cache(maxsize=1024)
def parse_age_curve(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """An ``age_curve`` cell, ``age:stock`` pairs separated by ``;`` (ages in years, stocks in
    t C/ha; e.g. ``0:0;10:35;20:70;40:110``), as (ages, stocks). Raises ValueError with the
    ``AGE_CURVE_*`` rule it breaks: pairs of finite numbers, ages strictly increasing from 0,
    stocks >= 0 and never decreasing."""
    ages: list[float] = []
    stocks: list[float] = []
    for part in str(text).split(";"):
        if not part.strip():
            continue
        pieces = part.split(":")
        try:
            if len(pieces) != 2:
                raise ValueError
            age, stock = float(pieces[0]), float(pieces[1])
        except ValueError:
            raise ValueError(AGE_CURVE_NOT_PAIRS) from None
        if not (math.isfinite(age) and math.isfinite(stock)):
            raise ValueError(AGE_CURVE_NOT_PAIRS)
        ages.append(age)
        stocks.append(stock)
    if not ages:
        raise ValueError(AGE_CURVE_NOT_PAIRS)
    if ages[0] != 0 or any(b <= a for a, b in zip(ages, ages[1:], strict=False)):
        raise ValueError(AGE_CURVE_AGES)
    if any(v < 0 for v in stocks):
        raise ValueError(AGE_CURVE_NEGATIVE)
    if any(b < a for a, b in zip(stocks, stocks[1:], strict=False)):
        raise ValueError(AGE_CURVE_DECREASING)
    return tuple(ages), tuple(stocks)


def age_curve_problem(text: object) -> str | None:
    """The ``AGE_CURVE_*`` rule an ``age_curve`` cell breaks, or None
    (None also for an empty cell: no age curve)."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip():
        return None
    try:
        parse_age_curve(str(text))
    except ValueError as exc:
        return str(exc)
    return None


def chapman_richards(ages: np.ndarray, k: float, p: float) -> np.ndarray:
    """The Chapman–Richards shape (1 − e^(−k·a))^p, the share of the mature stock at age a
    (Richards 1959, J. Exp. Bot. 10: 290–300; Chapman 1961, Proc. 4th Berkeley Symp. Math.
    Stat. Prob. 4: 153–168): 0 at age 0, rising towards 1; k (1/yr) sets the pace, p the lag
    (p > 1: sigmoid)."""
    return (-np.expm1(-k * np.asarray(ages, dtype=np.float64))) ** p


def age_curve_shape(text: str, ages: np.ndarray) -> np.ndarray:
    """The share of the mature stock at ``ages`` of an ``age_curve`` table: its stocks,
    interpolated linearly between its ages and constant after the last, over its last stock
    (the mature stock, as validated; all 0 when that is 0)."""
    table_ages, stocks = parse_age_curve(text)
    values = np.interp(np.asarray(ages, dtype=np.float64), table_ages, stocks)
    return values / stocks[-1] if stocks[-1] > 0 else np.zeros_like(values)


def biomass_table(mature: np.ndarray, growth: np.ndarray, curve: np.ndarray | None = None,
                  curve_k: np.ndarray | None = None, curve_p: np.ndarray | None = None,
                  age_curve: np.ndarray | None = None) -> np.ndarray:
    """Stock (t C/ha) by (class, age bin, biomass pool); every argument is (class, pool).

    By default (``curve`` None, or ``linear``) min(mature, age x growth) where a growth rate
    is given, else the mature stock at once. ``chapman_richards``: mature x (1 − e^(−k·a))^p
    with ``curve_k``/``curve_p`` (Richards 1959; Chapman 1961). ``age_curve``: mature x the
    table's shape (``age_curve`` holds the ``age:stock`` text; its last stock is the mature
    stock). Every curve is the mature stock times a shape, so a draw that scales the mature
    stock scales the whole curve (the Monte Carlo, docs/methods.md §10). The mature bin is
    the mature stock."""
    ages = np.arange(N_AGE, dtype=np.float64)
    grown = np.minimum(mature[:, None, :], ages[None, :, None] * growth[:, None, :])
    table = np.where(np.isfinite(growth)[:, None, :] & (growth[:, None, :] > 0), grown, mature[:, None, :])
    if curve is not None:
        for c, j in zip(*np.nonzero(curve == "chapman_richards"), strict=True):
            assert curve_k is not None and curve_p is not None, "chapman_richards needs curve_k and curve_p"
            table[c, :, j] = mature[c, j] * chapman_richards(ages, float(curve_k[c, j]), float(curve_p[c, j]))
        for c, j in zip(*np.nonzero(curve == AGE_CURVE), strict=True):
            assert age_curve is not None, "an age_curve curve needs its table"
            table[c, :, j] = mature[c, j] * age_curve_shape(str(age_curve[c, j]), ages)
    table[:, MATURE_BIN, :] = mature
    return table


def shift_ages(hist: np.ndarray, years: int) -> np.ndarray:
    """Move (class, age bin) areas ``years`` older; mature stays mature, AGE_MAX saturates."""
    out = np.zeros_like(hist)
    out[:, MATURE_BIN] = hist[:, MATURE_BIN]
    src = np.arange(AGE_MAX + 1)
    np.add.at(out, (slice(None), np.minimum(src + years, AGE_MAX)), hist[:, : AGE_MAX + 1])  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class Coefficients:
    """Densities as arrays over the site's classes: mature stock, growth and age curve
    (class, pool). Without ``curve`` every pool follows the linear default."""

    classes: list[str]
    stock: np.ndarray  # (class, pool) t C/ha, pools in POOLS order
    growth: np.ndarray  # (class, pool) t C/ha/yr, NaN where none
    sd: np.ndarray | None = None  # (class, pool) t C/ha, NaN or 0 where none
    curve: np.ndarray | None = None  # (class, pool) str: "linear", "chapman_richards" or "age_curve"
    curve_k: np.ndarray | None = None  # (class, pool) 1/yr, NaN where unused (chapman_richards)
    curve_p: np.ndarray | None = None  # (class, pool) dimensionless, NaN where unused (chapman_richards)
    age_curve: np.ndarray | None = None  # (class, pool) object: the "age:stock;..." text, None where unused

    @property
    def cv(self) -> np.ndarray:
        """Coefficient of variation sd / stock of each (class, pool); 0 without an sd."""
        if self.sd is None:
            return np.zeros_like(self.stock)
        with np.errstate(divide="ignore", invalid="ignore"):
            cv = np.where(self.stock > 0, np.nan_to_num(self.sd, nan=0.0) / self.stock, 0.0)
        return cv

    @property
    def biomass(self) -> np.ndarray:
        idx = [POOLS.index(p) for p in BIOMASS_POOLS]

        def pools(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[:, idx]

        return biomass_table(self.stock[:, idx], self.growth[:, idx], pools(self.curve), pools(self.curve_k),
                             pools(self.curve_p), pools(self.age_curve))

    @property
    def soc(self) -> np.ndarray:
        return self.stock[:, POOLS.index("soc")]


def year_stocks(agg: Aggregates, coef: Coefficients) -> xr.DataArray:
    """Stock (t C) by year, class and pool."""
    bio = coef.biomass
    out = np.zeros((len(agg.years), agg.n_classes, len(POOLS)))
    bio_idx = [POOLS.index(p) for p in BIOMASS_POOLS]
    for i, y in enumerate(agg.years):
        out[i][:, bio_idx] = np.einsum("ca,cap->cp", agg.area[y], bio)
        out[i][:, POOLS.index("soc")] = agg.soc[y] @ coef.soc
    return xr.DataArray(out, dims=("year", "carbon_class", "pool"),
                        coords={"year": agg.years, "carbon_class": coef.classes, "pool": list(POOLS)}, name="stock_tc")


def class_area(agg: Aggregates, classes: list[str]) -> xr.DataArray:
    values = np.stack([agg.area[y].sum(axis=1) for y in agg.years]) if agg.years else np.zeros((0, len(classes)))
    return xr.DataArray(values, dims=("year", "carbon_class"), coords={"year": agg.years, "carbon_class": classes},
                        name="area_ha")


def period_flows(agg: Aggregates, coef: Coefficients) -> xr.Dataset:
    """Per period and pool: stock at both ends (t C) and the change split into gains (growth,
    and the stock of new classes) and losses (the biomass of converted land), over the land
    with data in both years (docs/methods.md §6, §9)."""
    bio = coef.biomass
    bio_idx = [POOLS.index(p) for p in BIOMASS_POOLS]
    soc_i = POOLS.index("soc")
    n = len(agg.periods)
    start = np.zeros((n, len(POOLS)))
    end = np.zeros((n, len(POOLS)))
    gain = np.zeros((n, len(POOLS)))
    loss = np.zeros((n, len(POOLS)))
    area = np.zeros(n)
    for j, (t1, t2) in enumerate(agg.periods):
        same, before, after = agg.same[(t1, t2)], agg.before[(t1, t2)], agg.after[(t1, t2)]
        same_end = shift_ages(same, t2 - t1)
        s_same = np.einsum("ca,cap->p", same, bio)
        e_same = np.einsum("ca,cap->p", same_end, bio)
        s_conv = np.einsum("ca,cap->p", before, bio)
        e_conv = np.einsum("ca,cap->p", after, bio)
        start[j, bio_idx] = s_same + s_conv
        end[j, bio_idx] = e_same + e_conv
        gain[j, bio_idx] = (e_same - s_same) + e_conv
        loss[j, bio_idx] = -s_conv
        start[j, soc_i] = (agg.soc_start[(t1, t2)] @ coef.soc).sum()
        change = ((agg.soc_end[(t1, t2)] - agg.soc_start[(t1, t2)]) @ coef.soc).sum()  # no rounding noise
        end[j, soc_i] = start[j, soc_i] + change
        gain[j, soc_i], loss[j, soc_i] = max(change, 0.0), min(change, 0.0)
        area[j] = agg.transitions[(t1, t2)].sum()
    coords = {"period": np.arange(n), "pool": list(POOLS)}
    dims = ("period", "pool")
    return xr.Dataset(
        {"stock_start_tc": (dims, start), "stock_end_tc": (dims, end), "gain_tc": (dims, gain),
         "loss_tc": (dims, loss), "area_ha": ("period", area)},
        coords=coords,
    )


def pixel_density(classes: np.ndarray, ages: np.ndarray, coef: Coefficients, soc_lam: np.ndarray | None,
                  spans: np.ndarray | None = None) -> np.ndarray:
    """Total stock density (t C/ha) of each pixel of one year (NaN without data); a pixel
    whose change is spread over ``spans`` change years has the mean biomass of those ages."""
    bio = coef.biomass.sum(axis=2)  # (class, age bin)
    valid = classes != INVALID
    c = np.where(valid, classes, 0)
    a = np.where(valid, ages, 0)
    if spans is None or not (spans > 1).any():
        dens = bio[c, age_bins(a)]
    else:
        d = np.where(valid, np.maximum(spans, 1), 1)
        dens = np.zeros(len(c))
        for offset in range(int(d.max())):
            dens += np.where(offset < d, bio[c, age_bins(a + offset)], 0.0)
        dens /= d
    dens = dens + (coef.soc[c] if soc_lam is None else soc_lam @ coef.soc)
    return np.where(valid, dens, np.nan)


# --- contributions by coefficient (for uncertainty) ------------------------------------


def year_contributions(agg: Aggregates, coef: Coefficients) -> np.ndarray:
    """(year, source class, pool) t C: the part of each year's stock that scales with the
    coefficient of that class and pool (biomass: the class's own area by age; SOC: the SOC
    weights on that class). Summed over class and pool it is the year's stock."""
    bio = coef.biomass
    bio_idx = [POOLS.index(p) for p in BIOMASS_POOLS]
    out = np.zeros((len(agg.years), agg.n_classes, len(POOLS)))
    for i, y in enumerate(agg.years):
        out[i][:, bio_idx] = np.einsum("ca,cap->cp", agg.area[y], bio)
        out[i][:, POOLS.index("soc")] = agg.soc[y].sum(axis=0) * coef.soc
    return out


def period_contributions(agg: Aggregates, coef: Coefficients) -> tuple[np.ndarray, np.ndarray]:
    """(period, source class, pool) t C at the start and at the end of each period, over the
    land with data in both years (as ``period_flows``)."""
    bio = coef.biomass
    bio_idx = [POOLS.index(p) for p in BIOMASS_POOLS]
    soc_i = POOLS.index("soc")
    shape = (len(agg.periods), agg.n_classes, len(POOLS))
    start, end = np.zeros(shape), np.zeros(shape)
    for j, (t1, t2) in enumerate(agg.periods):
        p = (t1, t2)
        start[j][:, bio_idx] = np.einsum("ca,cap->cp", agg.same[p] + agg.before[p], bio)
        end[j][:, bio_idx] = np.einsum("ca,cap->cp", shift_ages(agg.same[p], t2 - t1) + agg.after[p], bio)
        start[j][:, soc_i] = agg.soc_start[p].sum(axis=0) * coef.soc
        end[j][:, soc_i] = agg.soc_end[p].sum(axis=0) * coef.soc
    return start, end


def coefficient_arrays(densities: pd.DataFrame) -> Coefficients:
    """The densities table of CoefficientSet.densities as arrays (class, pool), with the age
    curve of each (class, pool) from its ``curve_<pool>``, ``curve_k_<pool>``,
    ``curve_p_<pool>`` and ``age_curve_<pool>`` columns (absent or empty: linear)."""
    stock = densities[list(POOLS)].to_numpy(dtype=np.float64)
    growth = densities[[f"growth_{p}" for p in POOLS]].to_numpy(dtype=np.float64)
    sd = densities[[f"sd_{p}" for p in POOLS]].to_numpy(dtype=np.float64)
    if not any(f"curve_{p}" in densities.columns for p in POOLS):  # a table without curves: linear
        return Coefficients(classes=list(densities.index), stock=np.nan_to_num(stock, nan=0.0), growth=growth,
                            sd=sd)
    n = len(densities)

    def column(name: str) -> pd.Series:
        return densities[name] if name in densities.columns else pd.Series([None] * n, index=densities.index)

    curve = np.empty((n, len(POOLS)), dtype=object)
    age_curve = np.empty((n, len(POOLS)), dtype=object)
    for j, p in enumerate(POOLS):
        curve[:, j] = [v if isinstance(v, str) and v else "linear" for v in column(f"curve_{p}")]
        age_curve[:, j] = [v if isinstance(v, str) and v else None for v in column(f"age_curve_{p}")]
    curve_k = np.column_stack([pd.to_numeric(column(f"curve_k_{p}"), errors="coerce").to_numpy(dtype=np.float64)
                               for p in POOLS])
    curve_p = np.column_stack([pd.to_numeric(column(f"curve_p_{p}"), errors="coerce").to_numpy(dtype=np.float64)
                               for p in POOLS])
    return Coefficients(classes=list(densities.index), stock=np.nan_to_num(stock, nan=0.0), growth=growth, sd=sd,
                        curve=curve, curve_k=curve_k, curve_p=curve_p, age_curve=age_curve)

