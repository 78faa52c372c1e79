"""The accounting arithmetic: pure functions over xarray objects and tables.

No file access here. Areas come in as hectares by class (per year) and as
transition matrices (per period); coefficients as pool densities in t C/ha. Every rule
is written in docs/methods.md; the section is named where it is applied.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from carbon.rules.vocabulary import (
    CO2_PER_C,
    GAIN_LOSS_POOLS,
    POOLS,
    SINK_COLUMNS,
    STOCK_BY_CLASS_COLUMNS,
    STOCK_COLUMNS,
    pool_stock_columns,
)


def sink_tco2e(stock_change_tc: np.ndarray | float) -> np.ndarray | float:
    """Removals are positive: a stock gain is a sink (methods §1)."""
    return np.asarray(stock_change_tc) * CO2_PER_C


def _frame(columns: dict[str, Any], order: list[str]) -> pd.DataFrame:
    """A table from its columns (arrays or scalars), in ``order``: one construction, not a
    reshaping of xarray objects, so that thousands of small sites build their tables quickly."""
    return pd.DataFrame(columns, columns=order)


def _pool_total(pools: np.ndarray) -> np.ndarray:
    """Σ over the pool axis (last), pool by pool in pool order, NaN as 0 (the row sum of the pool
    columns)."""
    total = np.zeros(pools.shape[:-1])
    for j in range(pools.shape[-1]):
        total = total + np.nan_to_num(pools[..., j], nan=0.0)
    return total


def _pool_order(values: xr.DataArray) -> list[int]:
    """Where each pool of POOLS is along the ``pool`` dimension of ``values``."""
    have = [str(p) for p in values["pool"].values]
    return [have.index(p) for p in POOLS]


def stock_tables(site_id: str, stock: xr.DataArray, class_area_ha: xr.DataArray, nodata_ha: xr.DataArray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Site-year stocks and site-year-class stocks as flat tables."""
    pools = _pool_order(stock)
    per_year = stock.sum("carbon_class").transpose("year", "pool").values[:, pools]
    stock = stock.transpose("year", "carbon_class", "pool")
    years = np.asarray(stock["year"].values, dtype=np.int64)
    classes = np.asarray([str(c) for c in stock["carbon_class"].values], dtype=str)
    values = np.asarray(stock.values[:, :, pools], dtype=np.float64)  # (year, class, pool)
    area = np.asarray(class_area_ha.transpose("year", "carbon_class").values, dtype=np.float64)
    n_years, n_classes = area.shape

    flat = values.reshape(n_years * n_classes, len(POOLS))
    keep = area.reshape(-1) > 0
    cols: dict[str, Any] = {"site_id": site_id, "year": np.repeat(years, n_classes)[keep],
                            "carbon_class": np.tile(classes, n_years)[keep], "area_ha": area.reshape(-1)[keep]}
    cols.update({c: flat[keep, j] for j, c in enumerate(pool_stock_columns())})
    cols["stock_tc"] = _pool_total(flat[keep])
    by_class_df = _frame(cols, STOCK_BY_CLASS_COLUMNS)

    year_area = class_area_ha.sum("carbon_class").values
    year_stock = _pool_total(per_year)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_ha = np.where(year_area > 0, year_stock / year_area, 0.0)
    cols = {"site_id": site_id, "year": years, "area_ha": year_area,
            "nodata_ha": np.asarray(nodata_ha.values if np.array_equal(nodata_ha["year"].values, years)
                                    else nodata_ha.sel(year=years).values, dtype=np.float64)}
    cols.update({c: per_year[:, j] for j, c in enumerate(pool_stock_columns())})
    cols.update({"stock_tc": year_stock, "stock_tc_per_ha": per_ha})
    return _frame(cols, STOCK_COLUMNS), by_class_df


def sink_table(
    site_id: str,
    periods: list[tuple[int, int]],
    flows: xr.Dataset,
    site_area_ha: float,
    full_period: tuple[int, int] | None,
) -> pd.DataFrame:
    """One row per period: stocks at both ends, change (by pool, with gains and losses of
    the biomass and dead-organic-matter pools), sink and annual sink (methods §6, §9)."""
    if not periods:
        return pd.DataFrame(columns=SINK_COLUMNS)
    pools = _pool_order(flows["stock_start_tc"])

    def by_pool(name: str) -> np.ndarray:
        return np.asarray(flows[name].transpose("period", "pool").values[:, pools], dtype=np.float64)

    start, end = by_pool("stock_start_tc"), by_pool("stock_end_tc")
    gain, loss = by_pool("gain_tc"), by_pool("loss_tc")
    y0 = np.asarray([int(a) for a, _ in periods], dtype=np.int64)
    y1 = np.asarray([int(b) for _, b in periods], dtype=np.int64)
    area = np.asarray(flows["area_ha"].values, dtype=np.float64)
    stock_start, stock_end = np.nansum(start, axis=1), np.nansum(end, axis=1)
    change = stock_end - stock_start
    sink = np.asarray(sink_tco2e(change), dtype=np.float64)
    cols: dict[str, Any] = {
        "site_id": site_id, "period_start": y0, "period_end": y1, "period_years": y1 - y0,
        "is_full_period": np.asarray([full_period == p for p in zip(y0.tolist(), y1.tolist(), strict=True)],
                                     dtype=bool),
        "area_ha": area, "nodata_ha": np.asarray([_gap(site_area_ha, float(a)) for a in area], dtype=np.float64),
        "stock_start_tc": stock_start, "stock_end_tc": stock_end, "stock_change_tc": change,
    }
    for j, p in enumerate(POOLS):
        cols[f"stock_change_{p}_tc"] = end[:, j] - start[:, j]
    for p in GAIN_LOSS_POOLS:
        cols[f"gain_{p}_tc"] = gain[:, POOLS.index(p)]
        cols[f"loss_{p}_tc"] = loss[:, POOLS.index(p)]
    cols["sink_tco2e"] = sink
    cols["annual_sink_tco2e"] = sink / (y1 - y0)
    return _frame(cols, SINK_COLUMNS)


def transition_table(site_id: str, periods: list[tuple[int, int]], transitions: dict[tuple[int, int], np.ndarray],
                     classes: list[str]) -> pd.DataFrame:
    """Land-cover transition matrix in long form (ha from class x to class), non-zero cells."""
    names = np.asarray(classes, dtype=object)
    starts, ends, froms, tos, areas = [], [], [], [], []
    for y0, y1 in periods:
        matrix = transitions[(y0, y1)]
        i, j = np.nonzero(matrix > 0)
        starts.append(np.full(len(i), int(y0), dtype=np.int64))
        ends.append(np.full(len(i), int(y1), dtype=np.int64))
        froms.append(names[i])
        tos.append(names[j])
        areas.append(np.asarray(matrix[i, j], dtype=np.float64))
    cols = ["site_id", "period_start", "period_end", "from_class", "to_class", "area_ha"]
    if sum(len(a) for a in areas) == 0:
        return pd.DataFrame(columns=cols)
    return _frame({"site_id": site_id, "period_start": np.concatenate(starts), "period_end": np.concatenate(ends),
                   "from_class": np.concatenate(froms), "to_class": np.concatenate(tos),
                   "area_ha": np.concatenate(areas)}, cols)


def periods(years: list[int], start_year: int) -> list[tuple[int, int]]:
    """Consecutive map years, plus the whole period from ``start_year`` to the last year
    (methods §6). Each (start, end) appears once."""
    years = sorted(years)
    out = list(zip(years[:-1], years[1:], strict=True))
    whole = (start_year, years[-1])
    if whole[0] < whole[1] and whole not in out:
        out.append(whole)
    return out


def _gap(site_area_ha: float, with_data_ha: float) -> float:
    """Site area without data in both years of a period; sums of the same pixels in another
    order differ by ~1e-15 of the area, which is no gap."""
    gap = site_area_ha - with_data_ha
    return gap if gap > 1e-9 * site_area_ha else 0.0
