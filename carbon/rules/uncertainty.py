"""Uncertainty of stocks and sinks: Monte Carlo (IPCC Approach 2) beside error propagation
(Approach 1), and the conservative sink (docs/methods.md §10).

Pure numpy over the contribution tables of carbon/rules/dynamics.py: a stock is a sum over
(class, pool) of contributions that scale with that class's coefficient for that pool, so a
draw of the coefficient set costs no raster read.

* Each (class, pool) coefficient is drawn once per iteration as mean x f, f lognormal with
  mean 1 and the coefficient's coefficient of variation (sd / mean): never negative, right-
  skewed like biomass data. The same factor scales the pool's growth rate.
* One draw applies to every pixel and every year of that class and pool (fully correlated in
  space and time), so land whose cover did not change has no uncertainty on its stock change.
* The seed derives from the site's inputs, so the same inputs give the same intervals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from carbon.errors import InputError
from carbon.rules import adjustment, dynamics
from carbon.rules.vocabulary import CO2_PER_C, CONSERVATIVE_RULES, POOLS, UNCERTAINTY_FIELDS, Z95

DEFAULT_DRAWS = 10_000
RULES = CONSERVATIVE_RULES

#: CDM AR-TOOL14 v04.2 (EB85, 2015) Appendix 2: (upper bound of U90 in %, share of the
#: 90% half-width deducted). U90 <= 10% -> 0; 10-15 -> 25%; 15-20 -> 50%; 20-30 -> 75%; > 30 -> 100%.
AR_TOOL14_STEPS = ((10.0, 0.0), (15.0, 0.25), (20.0, 0.5), (30.0, 0.75), (np.inf, 1.0))


#: The default uncertainty of a coefficient given without an SD: a 95% interval of ±90% of the
#: mean (IPCC's U% convention: half-width / mean). IPCC 2006 Vol.4 Ch.2 gives this nominal error
#: for default reference SOC stocks where the data do not support a narrower one (notes to Table
#: 2.3) [M]; it is applied here to every pool as a conservative default (docs/methods.md §10).
DEFAULT_U95_PCT = 90.0
DEFAULT_SD_SOURCE = ("default: 95% interval of ±90% of the mean (the nominal error of IPCC 2006 Vol.4 Ch.2 "
                     "Table 2.3 notes, applied to every pool without an SD)")


@dataclass(frozen=True)
class SdDefaults:
    """What a coefficient without an SD is given: per pool, the half-width of its 95% interval
    in % of the mean (pools absent: none, the coefficient's uncertainty stays unknown)."""

    u95_pct: dict[str, float] = field(default_factory=dict)
    source: str = DEFAULT_SD_SOURCE

    @classmethod
    def ipcc_nominal(cls) -> SdDefaults:
        return cls({p: DEFAULT_U95_PCT for p in POOLS})

    def key(self) -> dict[str, object]:
        """What the input key records of the policy."""
        return {"u95_pct": dict(sorted(self.u95_pct.items())), "source": self.source}


@dataclass(frozen=True)
class SdFill:
    """Which (class, pool) coefficients were given the default SD, and which have none."""

    defaulted: list[tuple[str, str]]
    unknown: list[tuple[str, str]]
    source: str | None

    def shared_mask(self, classes: list[str]) -> np.ndarray:
        """(class, pool) True where the SD was defaulted: those are drawn fully correlated
        within their pool (docs/methods.md §10)."""
        mask = np.zeros((len(classes), len(POOLS)), dtype=bool)
        index = {c: i for i, c in enumerate(classes)}
        for c, p in self.defaulted:
            if c in index:
                mask[index[c], POOLS.index(p)] = True
        return mask

    def label(self) -> str:
        """The words added to a table's ``uncertainty_method`` (read back by the exports): the
        policy always, then the coefficients defaulted and those left unknown."""
        parts = [f"{POLICY_MARK} {self.source or 'none'}"]
        if self.defaulted:
            parts.append(f"{UNKNOWN_DEFAULTED} {', '.join(f'{c}/{p}' for c, p in self.defaulted)}")
        if self.unknown:
            parts.append(f"{UNKNOWN_MARK} {', '.join(f'{c}/{p}' for c, p in self.unknown)}")
        return "; ".join(parts)


#: The words that mark coefficients without an SD in ``uncertainty_method`` (exports read them).
POLICY_MARK = "SD of coefficients without one:"
UNKNOWN_MARK = "uncertainty unknown (no SD, no default) for"
UNKNOWN_DEFAULTED = "default SD for"
#: The words that say stocks and sinks are on map-error-adjusted areas, drawn with the coefficients.
MAP_ERROR_MARK = ("map error: areas adjusted with the maps' accuracy samples (stratified estimator, "
                  "Olofsson et al. 2013) and drawn jointly with the coefficients")


def fill_missing_sd(densities: pd.DataFrame, policy: SdDefaults | None) -> tuple[pd.DataFrame, SdFill]:
    """``densities`` (CoefficientSet.densities: a row per class, ``<pool>`` and ``sd_<pool>``
    columns) with the SD of every coefficient that has a stock but no SD set from ``policy``
    (docs/methods.md §10); the coefficients so filled, and those left without."""
    out = densities.copy()
    defaulted: list[tuple[str, str]] = []
    unknown: list[tuple[str, str]] = []
    for pool in POOLS:
        if pool not in out.columns:
            continue
        stock = out[pool].astype(float)
        missing = (out[f"sd_{pool}"].isna() & (stock > 0)).to_numpy()
        if not missing.any():
            continue
        pct = None if policy is None else policy.u95_pct.get(pool)
        names = [str(c) for c in out.index[missing]]
        if pct is None:
            unknown += [(c, pool) for c in names]
        else:
            sd = out[f"sd_{pool}"].to_numpy(dtype=np.float64, copy=True)
            sd[missing] = stock.to_numpy(dtype=np.float64)[missing] * pct / 100.0 / Z95
            out[f"sd_{pool}"] = sd
            defaulted += [(c, pool) for c in names]
    return out, SdFill(defaulted, unknown, None if policy is None else policy.source)


def unknown_coefficients(uncertainty_method: str) -> list[str]:
    """The ``class/pool`` coefficients an ``uncertainty_method`` text says have no SD."""
    for part in uncertainty_method.split("; "):
        if part.startswith(UNKNOWN_MARK):
            return [c.strip() for c in part[len(UNKNOWN_MARK):].split(",") if c.strip()]
    return []


def seed_for(*parts: str) -> int:
    return int(hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16], 16)


def draw_factors(cv: np.ndarray, n: int, seed: int, shared: np.ndarray | None = None) -> np.ndarray:
    """(n, class, pool) multiplicative factors, lognormal with mean 1 and the given CV
    (factors are exactly 1 where cv is 0). Where ``shared`` (class, pool) is True, the classes
    of a pool share one normal deviate: their coefficients are drawn fully correlated (the
    defaulted SDs, docs/methods.md §10)."""
    cv = np.nan_to_num(np.asarray(cv, dtype=np.float64), nan=0.0)
    sigma = np.sqrt(np.log1p(cv * cv))
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, *cv.shape))
    if shared is not None:
        for p in range(cv.shape[1]):
            rows = np.flatnonzero(shared[:, p])
            if len(rows) > 1:
                z[:, rows, p] = z[:, rows[:1], p]
    # exp(sigma * z - sigma^2 / 2) where sigma > 0; elsewhere exp(0 * z - 0) is exactly 1. Worked
    # in place on the drawn columns only (the same operations in the same order: the same factors)
    flat = z.reshape(n, cv.size)
    cols = np.flatnonzero(sigma.ravel() > 0)
    s = sigma.ravel()[cols]
    drawn = flat[:, cols]
    drawn *= s
    drawn -= 0.5 * s * s
    np.exp(drawn, out=drawn)
    flat.fill(1.0)
    flat[:, cols] = drawn
    return z


@dataclass(frozen=True)
class Summary:
    mean: np.ndarray
    median: np.ndarray
    lower90: np.ndarray
    upper90: np.ndarray
    lower95: np.ndarray
    upper95: np.ndarray
    u90_pct: np.ndarray
    u95_pct: np.ndarray
    u95_pct_approach1: np.ndarray


def summarize(contrib: np.ndarray, factors: np.ndarray, cv: np.ndarray, scale: float = 1.0,
              area_terms: Callable[[int], np.ndarray] | None = None) -> Summary:
    """Distribution of ``scale`` x Σ_{class,pool} contrib x factor for each row of
    ``contrib`` (row, class, pool). ``area_terms(row)``, when given, is the (draw, class, pool)
    t C each draw of the map-error-adjusted areas adds to that row (carbon/rules/adjustment.py),
    scaled by the same coefficient factors: areas and coefficients drawn jointly."""
    draws = np.einsum("rkp,nkp->rn", contrib, factors)
    area_var = np.zeros(len(contrib))
    if area_terms is not None:
        for r in range(len(contrib)):
            terms = area_terms(r)
            draws[r] += np.einsum("nkp,nkp->n", terms, factors)
            area_var[r] = terms.sum(axis=(1, 2)).var() if len(terms) else 0.0
    draws *= scale
    q = np.quantile(draws, [0.025, 0.05, 0.5, 0.95, 0.975], axis=1)
    mean = draws.mean(axis=1)
    cv = np.nan_to_num(cv, nan=0.0)
    sd_a1 = np.sqrt(np.einsum("rkp,kp->r", (contrib * cv) ** 2, np.ones_like(cv)) + area_var) * abs(scale)
    point = contrib.sum(axis=(1, 2)) * scale
    return Summary(
        mean=mean, median=q[2], lower90=q[1], upper90=q[3], lower95=q[0], upper95=q[4],
        u90_pct=_u_pct((q[3] - q[1]) / 2, mean), u95_pct=_u_pct((q[4] - q[0]) / 2, mean),
        u95_pct_approach1=_u_pct(Z95 * sd_a1, point),
    )


def _u_pct(half_width: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Half-width / |mean| in %; 0 where both are 0; NaN where only the mean is 0."""
    half_width = np.maximum(np.asarray(half_width, dtype=np.float64), 0.0)
    mean = np.abs(np.asarray(mean, dtype=np.float64))
    tiny = 1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(mean > tiny, half_width / mean * 100.0, np.where(half_width <= tiny, 0.0, np.nan))
    return u


def ar_tool14_discount(u90_pct: float) -> float:
    """Share of the 90% half-width deducted for a given U90 (%)."""
    if not np.isfinite(u90_pct):
        return 1.0
    for bound, share in AR_TOOL14_STEPS:
        if u90_pct <= bound:
            return share
    return 1.0


def conservative_sink(sink: float, lower90: float, upper90: float, u90_pct: float, rule: str) -> float:
    """The sink net of the uncertainty deduction: ``ar_tool14`` deducts a share of the 90%
    half-width from the estimate; ``lower90`` takes the lower bound of the 90% interval."""
    if rule == "lower90":
        return float(lower90)
    if rule == "ar_tool14":
        return float(sink - ar_tool14_discount(u90_pct) * (upper90 - lower90) / 2)
    raise ValueError(f"unknown conservative rule {rule!r}: use one of {', '.join(RULES)}")


def add_intervals(stocks: pd.DataFrame, sinks: pd.DataFrame, agg: dynamics.Aggregates,
                  coef: dynamics.Coefficients, *, draws: int, rule: str, seed: int, note: str = "",
                  shared: np.ndarray | None = None, shift: adjustment.AreaShift | None = None,
                  parts: np.ndarray | None = None, stock_labels: dict[str, Any] | None = None,
                  sink_labels: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stocks and sinks tables with Monte Carlo intervals on every row, Approach 1 beside them, and the
    conservative sink (docs/methods.md §10); ``note`` (which SDs were defaulted or are
    unknown, ``SdFill.label``) is added to the ``uncertainty_method`` label; ``shared``: the
    (class, pool) coefficients drawn fully correlated within their pool (``draw_factors``).
    With ``shift`` (map-error-adjusted areas and their draws) and its density ``parts``
    (carbon/rules/adjustment.py), stocks and sinks are on the adjusted areas and each draw of
    the coefficients goes with a draw of the areas (docs/methods.md §8). ``stock_labels`` and
    ``sink_labels``: columns added after those (each table built once)."""
    if rule not in RULES:
        raise InputError(f"unknown conservative rule {rule!r}: use one of {', '.join(RULES)}")
    cv = coef.cv
    factors = draw_factors(cv, draws, seed, shared)
    label = f"IPCC Approach 2: Monte Carlo, {draws} lognormal draws, coefficients correlated across pixels and years"
    adjusted = shift is not None and parts is not None and shift.any and shift.draws is not None
    if adjusted:
        label = f"{label}; {MAP_ERROR_MARK}"
    if note:
        label = f"{label}; {note}"
    contrib = dynamics.year_contributions(agg, coef)
    year_terms = None
    if adjusted:
        assert shift is not None and parts is not None
        contrib = adjustment.year_contributions(contrib, shift, parts)
        years = agg.years

        def year_terms(r: int) -> np.ndarray:
            return adjustment.area_draw_terms(shift, parts, years[r])

    by_year = summarize(contrib, factors, cv, area_terms=year_terms)
    order = {y: i for i, y in enumerate(agg.years)}
    stocks = with_columns(stocks, {**_fields("stock_tc", by_year, [order[y] for y in stocks["year"]]),
                                   "uncertainty_method": label, **(stock_labels or {})})
    if sinks.empty:  # a single map year: no period, but the same columns
        sinks = sinks.copy()
        for f in UNCERTAINTY_FIELDS:
            sinks[f"sink_tco2e_{f}"] = pd.Series(dtype=float)
        sinks["conservative_sink_tco2e"] = pd.Series(dtype=float)
        sinks["conservative_rule"] = pd.Series(dtype=str)
        sinks["uncertainty_method"] = pd.Series(dtype=str)
        return stocks, with_columns(sinks, sink_labels) if sink_labels else sinks
    start, end = dynamics.period_contributions(agg, coef)
    period_terms = None
    if adjusted:
        assert shift is not None and parts is not None
        start, end = adjustment.period_contributions(start, end, agg.periods, shift, parts)
        periods = agg.periods

        def period_terms(r: int) -> np.ndarray:
            t1, t2 = periods[r]
            return adjustment.area_draw_terms(shift, parts, t2) - adjustment.area_draw_terms(shift, parts, t1)

    by_period = summarize(end - start, factors, cv, scale=CO2_PER_C, area_terms=period_terms)
    index = {p: i for i, p in enumerate(agg.periods)}
    cols: dict[str, Any] = _fields("sink_tco2e", by_period, [index[(a, b)] for a, b in zip(sinks["period_start"], sinks["period_end"],
                                                                           strict=True)])
    cols["conservative_sink_tco2e"] = np.asarray([
        conservative_sink(float(s), float(lo), float(hi), float(u), rule)
        for s, lo, hi, u in zip(sinks["sink_tco2e"].to_numpy(dtype=np.float64), cols["sink_tco2e_lower90"],
                                cols["sink_tco2e_upper90"], cols["sink_tco2e_u90_pct"], strict=True)], dtype=np.float64)
    cols["conservative_rule"] = rule
    cols["uncertainty_method"] = label
    return stocks, with_columns(sinks, {**cols, **(sink_labels or {})})


def _fields(name: str, summary: Summary, rows: list[int]) -> dict[str, np.ndarray]:
    return {f"{name}_{f}": np.asarray(getattr(summary, f), dtype=np.float64)[rows] for f in UNCERTAINTY_FIELDS}


def with_columns(df: pd.DataFrame, columns: dict[str, Any]) -> pd.DataFrame:
    """``df`` with ``columns`` (arrays or scalars) added after its own, in one step."""
    return pd.concat([df, pd.DataFrame(columns, index=df.index)], axis=1)
