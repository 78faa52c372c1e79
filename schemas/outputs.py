"""Contracts of every output table, with consistency checks (docs/data-contracts.md).

Sign convention: ``sink_tco2e`` > 0 is a removal (docs/methods.md §1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from carbon.errors import OutputValidationError
from carbon.rules.results import SiteResult
from carbon.rules.vocabulary import (
    CO2_PER_C,
    CONSERVATIVE_RULES,
    GAIN_LOSS_POOLS,
    METHODS,
    POOLS,
    SINK_COLUMNS,
    STOCK_BY_CLASS_COLUMNS,
    STOCK_COLUMNS,
    UNCERTAINTY_FIELDS,
    UNCERTAINTY_PCT_FIELDS,
    one_of,
    pool_change_columns,
    pool_stock_columns,
    uncertainty_columns,
)
from schemas._validate import failure_messages

REL_TOL = 1e-9
ABS_TOL_TC = 1e-6

POOL_STOCK_COLUMNS = pool_stock_columns()
POOL_CHANGE_COLUMNS = pool_change_columns()
# Per-pool and per-field columns are regex columns built from the vocabulary (adding a pool or an
# uncertainty field changes rules/vocabulary.py only); ``_all_columns`` checks that every one is there.
STOCK_POOL_RE = rf"^stock_{one_of(POOLS)}_tc$"
CHANGE_POOL_RE = rf"^stock_change_{one_of(POOLS)}_tc$"
GAIN_RE = rf"^gain_{one_of(GAIN_LOSS_POOLS)}_tc$"
LOSS_RE = rf"^loss_{one_of(GAIN_LOSS_POOLS)}_tc$"
_VALUE_FIELDS = tuple(f for f in UNCERTAINTY_FIELDS if f not in UNCERTAINTY_PCT_FIELDS)


def _interval_re(quantity: str, fields: tuple[str, ...]) -> str:
    return rf"^{quantity}_{one_of(fields)}$"


def _has_all(df: pd.DataFrame, columns: list[str]) -> bool:
    return all(c in df.columns for c in columns)


def _ordered(df: pd.DataFrame, name: str) -> pd.Series:
    """lower95 <= lower90 <= median <= upper90 <= upper95 and lower95 <= mean <= upper95,
    with a tolerance of rounding (docs/methods.md §10)."""
    tol = 1e-9 * (1 + df[f"{name}_mean"].abs())
    chain = [f"{name}_{f}" for f in ("lower95", "lower90", "median", "upper90", "upper95")]
    ok = pd.Series(True, index=df.index)
    for a, b in zip(chain, chain[1:], strict=False):
        ok &= df[a] <= df[b] + tol
    ok &= (df[f"{name}_lower95"] <= df[f"{name}_mean"] + tol) & (df[f"{name}_mean"] <= df[f"{name}_upper95"] + tol)
    for u in ("u90_pct", "u95_pct", "u95_pct_approach1"):
        ok &= df[f"{name}_{u}"].isna() | (df[f"{name}_{u}"] >= 0)
    return ok


def _close(a: pd.Series, b: pd.Series) -> pd.Series:
    return pd.Series(np.isclose(a.astype(float), b.astype(float), rtol=REL_TOL, atol=ABS_TOL_TC), index=a.index)


class StocksTable(pa.DataFrameModel):
    """Site-year carbon stocks (t C) over the land with data that year."""

    site_id: Series[str]
    year: Series[int]
    area_ha: Series[float] = pa.Field(ge=0)
    nodata_ha: Series[float] = pa.Field(ge=0)
    stock_pool_tc: Series[float] = pa.Field(ge=0, alias=STOCK_POOL_RE, regex=True)
    stock_tc: Series[float] = pa.Field(ge=0)
    stock_tc_per_ha: Series[float] = pa.Field(ge=0)
    method: Series[str] = pa.Field(isin=list(METHODS))
    coefficient_set: Series[str]
    coefficient_sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    stock_tc_interval: Series[float] = pa.Field(ge=0, alias=_interval_re("stock_tc", _VALUE_FIELDS), regex=True)
    stock_tc_pct: Series[float] = pa.Field(ge=0, nullable=True, alias=_interval_re("stock_tc", UNCERTAINTY_PCT_FIELDS),
                                           regex=True)
    uncertainty_method: Series[str]

    class Config:
        strict = False

    @pa.dataframe_check(error="a column of the vocabulary is missing (a pool or an uncertainty field)")
    @classmethod
    def _all_columns(cls, df: pd.DataFrame) -> bool:
        return _has_all(df, [*STOCK_COLUMNS, *uncertainty_columns("stock_tc")])

    @pa.dataframe_check(error="pools do not sum to stock_tc")
    @classmethod
    def _pools_sum(cls, df: pd.DataFrame) -> Series[bool]:
        return _close(df[POOL_STOCK_COLUMNS].sum(axis=1), df["stock_tc"])

    @pa.dataframe_check(error="stock interval out of order (lower95 <= lower90 <= median <= upper90 <= upper95, "
                        "lower95 <= mean <= upper95, U% >= 0)")
    @classmethod
    def _interval(cls, df: pd.DataFrame) -> Series[bool]:
        return _ordered(df, "stock_tc")

    @pa.dataframe_check(error="stock_tc_per_ha != stock_tc / area_ha")
    @classmethod
    def _density(cls, df: pd.DataFrame) -> Series[bool]:
        expected = (df["stock_tc"] / df["area_ha"]).where(df["area_ha"] > 0, 0.0)
        return _close(expected, df["stock_tc_per_ha"])

    @pa.dataframe_check(error="one row per site and year")
    @classmethod
    def _unique(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df.duplicated(["site_id", "year"], keep=False)


class StocksByClassTable(pa.DataFrameModel):
    """Site-year-class area (ha) and stocks (t C)."""

    site_id: Series[str]
    year: Series[int]
    carbon_class: Series[str]
    area_ha: Series[float] = pa.Field(gt=0)
    stock_pool_tc: Series[float] = pa.Field(ge=0, alias=STOCK_POOL_RE, regex=True)
    stock_tc: Series[float] = pa.Field(ge=0)

    class Config:
        strict = False

    @pa.dataframe_check(error="a pool column of the vocabulary is missing")
    @classmethod
    def _all_columns(cls, df: pd.DataFrame) -> bool:
        return _has_all(df, STOCK_BY_CLASS_COLUMNS)

    @pa.dataframe_check(error="pools do not sum to stock_tc")
    @classmethod
    def _pools_sum(cls, df: pd.DataFrame) -> Series[bool]:
        return _close(df[POOL_STOCK_COLUMNS].sum(axis=1), df["stock_tc"])


class AreaByCodeTable(pa.DataFrameModel):
    """Area (ha) and pixel count by source land-cover code: the audit trail to pixels."""

    site_id: Series[str]
    year: Series[int]
    legend: Series[str]
    code: Series[int]
    carbon_class: Series[str]
    pixel_count: Series[int] = pa.Field(gt=0)
    area_ha: Series[float] = pa.Field(ge=0)

    class Config:
        strict = False


class SinksTable(pa.DataFrameModel):
    """Site-period stock change (t C) and sink (t CO2e, removals positive)."""

    site_id: Series[str]
    period_start: Series[int]
    period_end: Series[int]
    period_years: Series[int] = pa.Field(gt=0)
    is_full_period: Series[bool]
    area_ha: Series[float] = pa.Field(ge=0)
    nodata_ha: Series[float] = pa.Field(ge=0)
    stock_start_tc: Series[float] = pa.Field(ge=0)
    stock_end_tc: Series[float] = pa.Field(ge=0)
    stock_change_tc: Series[float]
    stock_change_pool_tc: Series[float] = pa.Field(alias=CHANGE_POOL_RE, regex=True)
    gain_pool_tc: Series[float] = pa.Field(ge=0, alias=GAIN_RE, regex=True)
    loss_pool_tc: Series[float] = pa.Field(le=0, alias=LOSS_RE, regex=True)
    sink_tco2e: Series[float]
    annual_sink_tco2e: Series[float]
    method: Series[str] = pa.Field(isin=list(METHODS))
    coefficient_set: Series[str]
    coefficient_sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    sink_tco2e_interval: Series[float] = pa.Field(alias=_interval_re("sink_tco2e", _VALUE_FIELDS), regex=True)
    sink_tco2e_pct: Series[float] = pa.Field(ge=0, nullable=True,
                                             alias=_interval_re("sink_tco2e", UNCERTAINTY_PCT_FIELDS), regex=True)
    conservative_sink_tco2e: Series[float]
    conservative_rule: Series[str] = pa.Field(isin=list(CONSERVATIVE_RULES))
    uncertainty_method: Series[str]

    class Config:
        strict = False

    @pa.dataframe_check(error="a column of the vocabulary is missing (a pool or an uncertainty field)")
    @classmethod
    def _all_columns(cls, df: pd.DataFrame) -> bool:
        return _has_all(df, [*SINK_COLUMNS, *uncertainty_columns("sink_tco2e")])

    @pa.dataframe_check(error="sink interval out of order (lower95 <= lower90 <= median <= upper90 <= upper95, "
                        "lower95 <= mean <= upper95, U% >= 0)")
    @classmethod
    def _interval(cls, df: pd.DataFrame) -> Series[bool]:
        return _ordered(df, "sink_tco2e")

    @pa.dataframe_check(error="conservative sink exceeds the estimate (ar_tool14) or differs from lower90")
    @classmethod
    def _conservative(cls, df: pd.DataFrame) -> Series[bool]:
        tol = 1e-9 * (1 + df["sink_tco2e"].abs())
        ar = df["conservative_sink_tco2e"] <= df["sink_tco2e"] + tol
        low = (df["conservative_sink_tco2e"] - df["sink_tco2e_lower90"]).abs() <= tol
        return ar.where(df["conservative_rule"] == "ar_tool14", low)

    @pa.dataframe_check(error="stock_change_tc != stock_end_tc - stock_start_tc")
    @classmethod
    def _change(cls, df: pd.DataFrame) -> Series[bool]:
        return _close(df["stock_end_tc"] - df["stock_start_tc"], df["stock_change_tc"])

    @pa.dataframe_check(error="pool changes do not sum to stock_change_tc")
    @classmethod
    def _pool_changes(cls, df: pd.DataFrame) -> Series[bool]:
        return _close(df[POOL_CHANGE_COLUMNS].sum(axis=1), df["stock_change_tc"])

    @pa.dataframe_check(error="gains and losses of a pool do not add up to its stock change")
    @classmethod
    def _gain_loss(cls, df: pd.DataFrame) -> Series[bool]:
        ok = pd.Series(True, index=df.index)
        for p in GAIN_LOSS_POOLS:
            ok &= _close(df[f"gain_{p}_tc"] + df[f"loss_{p}_tc"], df[f"stock_change_{p}_tc"])
        return ok

    @pa.dataframe_check(error="sink_tco2e != stock_change_tc x 44/12")
    @classmethod
    def _sink(cls, df: pd.DataFrame) -> Series[bool]:
        return _close(df["stock_change_tc"] * CO2_PER_C, df["sink_tco2e"])

    @pa.dataframe_check(error="annual_sink_tco2e != sink_tco2e / period_years")
    @classmethod
    def _annual(cls, df: pd.DataFrame) -> Series[bool]:
        return _close(df["sink_tco2e"] / df["period_years"], df["annual_sink_tco2e"])

    @pa.dataframe_check(error="period_years != period_end - period_start")
    @classmethod
    def _years(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["period_end"] - df["period_start"]) == df["period_years"]


class TransitionsTable(pa.DataFrameModel):
    """Land-cover transition areas (ha) from class to class over a period."""

    site_id: Series[str]
    period_start: Series[int]
    period_end: Series[int]
    from_class: Series[str]
    to_class: Series[str]
    area_ha: Series[float] = pa.Field(gt=0)

    class Config:
        strict = False


class CoefficientsUsedTable(pa.DataFrameModel):
    """The coefficient behind every class and pool at a site, with its source."""

    site_id: Series[str]
    carbon_class: Series[str]
    pool: Series[str] = pa.Field(isin=list(POOLS))
    stock_tc_per_ha: Series[float] = pa.Field(ge=0)
    source: Series[str]

    class Config:
        strict = False


class ClassAreasTable(pa.DataFrameModel):
    """Per site, year and carbon class: the mapped area and the map-error-adjusted area with its
    95% interval (docs/methods.md §8); without an accuracy sample the adjusted columns repeat the
    mapped area."""

    site_id: Series[str]
    year: Series[int]
    carbon_class: Series[str]
    area_ha: Series[float] = pa.Field(ge=0)
    area_adjusted_ha: Series[float] = pa.Field(ge=0)
    area_adjusted_ha_lower95: Series[float] = pa.Field(ge=0)
    area_adjusted_ha_upper95: Series[float] = pa.Field(ge=0)
    adjusted: Series[bool]
    accuracy_sample: Series[str]

    class Config:
        strict = False

    @pa.dataframe_check(error="adjusted area outside its interval")
    @classmethod
    def _interval(cls, df: pd.DataFrame) -> Series[bool]:
        tol = 1e-9 * (1 + df["area_adjusted_ha"].abs())
        return ((df["area_adjusted_ha_lower95"] <= df["area_adjusted_ha"] + tol)
                & (df["area_adjusted_ha"] <= df["area_adjusted_ha_upper95"] + tol))

    @pa.dataframe_check(error="without an accuracy sample the adjusted area must be the mapped area")
    @classmethod
    def _unadjusted(cls, df: pd.DataFrame) -> Series[bool]:
        return df["adjusted"] | (_close(df["area_adjusted_ha"], df["area_ha"]) & _close(
            df["area_adjusted_ha_lower95"], df["area_ha"]) & _close(df["area_adjusted_ha_upper95"], df["area_ha"]))


MODELS: dict[str, type[pa.DataFrameModel]] = {
    "stocks": StocksTable,
    "stocks_by_class": StocksByClassTable,
    "area_by_code": AreaByCodeTable,
    "sinks": SinksTable,
    "transitions": TransitionsTable,
    "coefficients_used": CoefficientsUsedTable,
    "class_areas": ClassAreasTable,
}


def validate_site_result(result: SiteResult) -> None:
    """Validate every table of a site and the consistency between them; raise one error
    listing every problem (a failure here is a bug, and nothing is published)."""
    problems: list[str] = []
    for name, df in result.tables().items():
        _, msgs = failure_messages(MODELS[name], df, where=f"site {result.site_id}, table {name}", row_offset=0)
        problems += msgs
    problems += _cross_checks(result)
    if problems:
        raise OutputValidationError(f"computed tables of site {result.site_id!r} fail their contracts", problems)


def validate_site_results(results: list[SiteResult]) -> dict[str, list[str]]:
    """The check of ``validate_site_result`` for a batch of sites: each table of the whole
    batch validated at once (one contract check per table, not per site and table), then each
    site's cross-table consistency. Site id -> its problems; a site without problems is absent.
    When the batch breaks a contract, its sites are checked one by one, so that each problem is
    named with its site and the others stay publishable."""
    if not results:
        return {}
    batch_ok = True
    batch: dict[str, pd.DataFrame] = {}
    for name, model in MODELS.items():
        frames = [t for t in (r.tables()[name] for r in results) if not t.empty]
        if not frames:
            continue
        df = batch[name] = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        _, msgs = failure_messages(model, df, where=f"table {name}", row_offset=0)
        if msgs:
            batch_ok = False
            break
    suspects = _batch_suspects(batch, {r.site_id: r.provenance.get("site_area_ha") for r in results}) \
        if batch_ok else set()
    problems: dict[str, list[str]] = {}
    for r in results:
        if batch_ok:  # the sites the batch's sums single out are checked one by one, for their messages
            found = _cross_checks(r) if r.site_id in suspects else []
        else:
            try:
                validate_site_result(r)
                found = []
            except OutputValidationError as exc:
                found = exc.problems
        if found:
            problems[r.site_id] = found
    return problems


def _batch_suspects(batch: dict[str, pd.DataFrame], site_area: dict[str, float | None]) -> set[str]:
    """The sites of a batch that may fail ``_cross_checks``: the same sums and comparisons over
    the whole batch's tables at once (grouped by site), so that only these sites are checked
    one by one. A sum whose last bits differ from the site's own can only add a suspect."""
    empty = pd.DataFrame(columns=["site_id", "year", "area_ha", "stock_tc", "period_start", "period_end",
                                  "area_adjusted_ha", "nodata_ha"])
    stocks = batch.get("stocks", empty)
    if stocks.empty:
        return set()
    keys = ["site_id", "year"]
    idx = pd.MultiIndex.from_frame(stocks[keys])

    def summed(name: str, columns: list[str]) -> pd.DataFrame:
        df = batch.get(name, empty)
        sums = df.groupby(keys)[columns].sum() if not df.empty else pd.DataFrame(columns=columns, dtype=float)
        return sums.reindex(idx).fillna(0.0)

    def far(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray, atol: float = 1e-9) -> np.ndarray:
        return ~np.isclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-9, atol=atol)

    area = stocks["area_ha"].to_numpy(dtype=float)
    by_class = summed("stocks_by_class", ["area_ha", "stock_tc"])
    codes = summed("area_by_code", ["area_ha"])
    bad = far(by_class["area_ha"], area) | far(codes["area_ha"], area) \
        | far(by_class["stock_tc"], stocks["stock_tc"], ABS_TOL_TC)
    areas = batch.get("class_areas", empty)
    if not areas.empty:
        mapped = summed("class_areas", ["area_ha", "area_adjusted_ha"])
        has = stocks["site_id"].isin(set(areas["site_id"])).to_numpy()
        bad |= has & (far(mapped["area_ha"], area) | far(mapped["area_adjusted_ha"], area, 1e-6))
    total = stocks["site_id"].map(site_area)
    known = total.notna().to_numpy()
    bad |= known & far(stocks["area_ha"] + stocks["nodata_ha"], total.fillna(0.0))
    suspects = set(stocks["site_id"][bad]) | {
        s for s, a in site_area.items() if a is not None and not np.isfinite(float(a))}
    sinks = batch.get("sinks", empty)
    if not sinks.empty:
        limit = sinks["site_id"].map(site_area).astype(float)
        over = (limit.notna() & (sinks["area_ha"] > limit * (1 + 1e-9) + 1e-9)).to_numpy()
        pkeys = ["site_id", "period_start", "period_end"]
        trans = batch.get("transitions", empty)
        t = trans.groupby(pkeys)["area_ha"].sum() if not trans.empty else pd.Series(dtype=float)
        t = t.reindex(pd.MultiIndex.from_frame(sinks[pkeys])).fillna(0.0)
        suspects |= set(sinks["site_id"][over | far(t, sinks["area_ha"])])
    return suspects


def _cross_checks(r: SiteResult) -> list[str]:
    out = []
    by_year = r.stocks_by_class.groupby("year")[["area_ha", "stock_tc"]].sum()
    codes = r.area_by_code.groupby("year")["area_ha"].sum()
    for row in r.stocks.itertuples():
        cls_area = float(by_year["area_ha"].get(row.year, 0.0))
        if not np.isclose(cls_area, row.area_ha, rtol=1e-9, atol=1e-9):
            out.append(f"year {row.year}: class areas sum to {cls_area} ha, site area with data is {row.area_ha} ha")
        if not np.isclose(float(codes.get(row.year, 0.0)), row.area_ha, rtol=1e-9, atol=1e-9):
            out.append(f"year {row.year}: areas by code do not sum to the site area")
        if not np.isclose(float(by_year["stock_tc"].get(row.year, 0.0)), row.stock_tc, rtol=1e-9, atol=ABS_TOL_TC):
            out.append(f"year {row.year}: class stocks do not sum to the site stock")
    if not r.class_areas.empty:
        mapped = r.class_areas.groupby("year")["area_ha"].sum()
        adjusted = r.class_areas.groupby("year")["area_adjusted_ha"].sum()
        for row in r.stocks.itertuples():
            if not np.isclose(float(mapped.get(row.year, 0.0)), row.area_ha, rtol=1e-9, atol=1e-9):
                out.append(f"year {row.year}: mapped class areas do not sum to the site area with data")
            if not np.isclose(float(adjusted.get(row.year, 0.0)), row.area_ha, rtol=1e-9, atol=1e-6):
                out.append(f"year {row.year}: adjusted class areas do not sum to the site area with data")
    site_area = r.provenance.get("site_area_ha")
    if site_area is not None:
        for row in r.stocks.itertuples():
            if not np.isclose(row.area_ha + row.nodata_ha, site_area, rtol=1e-9, atol=1e-9):
                out.append(f"year {row.year}: area_ha + nodata_ha != site area {site_area} ha")
    for row in r.sinks.itertuples():
        if site_area is not None and row.area_ha > site_area * (1 + 1e-9) + 1e-9:
            out.append(f"period {row.period_start}-{row.period_end}: area with data exceeds the site area")
    trans = r.transitions.groupby(["period_start", "period_end"])["area_ha"].sum()
    for row in r.sinks.itertuples():
        t = float(trans.get((row.period_start, row.period_end), 0.0))
        if not np.isclose(t, row.area_ha, rtol=1e-9, atol=1e-9):
            out.append(f"period {row.period_start}-{row.period_end}: transitions sum to {t} ha, sink area is {row.area_ha} ha")
    return out
