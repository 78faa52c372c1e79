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


def stock_tables(site_id: str, stock: xr.DataArray, class_area_ha: xr.DataArray, nodata_ha: xr.DataArray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Site-year stocks and site-year-class stocks as flat tables."""
    by_class = stock.to_dataset(dim="pool").rename({p: f"stock_{p}_tc" for p in POOLS})
    by_class["area_ha"] = class_area_ha
    by_class_df = by_class.to_dataframe().reset_index()
    by_class_df["stock_tc"] = by_class_df[pool_stock_columns()].sum(axis=1)
    by_class_df = by_class_df[by_class_df["area_ha"] > 0]
    by_class_df.insert(0, "site_id", site_id)
    by_class_df = by_class_df[STOCK_BY_CLASS_COLUMNS].reset_index(drop=True)

    per_year = stock.sum("carbon_class").to_dataset(dim="pool").rename({p: f"stock_{p}_tc" for p in POOLS})
    per_year["area_ha"] = class_area_ha.sum("carbon_class")
    per_year["nodata_ha"] = nodata_ha
    years_df = per_year.to_dataframe().reset_index()
    years_df["stock_tc"] = years_df[pool_stock_columns()].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        years_df["stock_tc_per_ha"] = np.where(
            years_df["area_ha"] > 0, years_df["stock_tc"] / years_df["area_ha"], 0.0
        )
    years_df.insert(0, "site_id", site_id)
    years_df = years_df[STOCK_COLUMNS]
    return years_df, by_class_df


def sink_table(
    site_id: str,
    periods: list[tuple[int, int]],
    flows: xr.Dataset,
    site_area_ha: float,
    full_period: tuple[int, int] | None,
) -> pd.DataFrame:
    """One row per period: stocks at both ends, change (by pool, with gains and losses of
    the biomass and dead-organic-matter pools), sink and annual sink (methods §6, §9)."""
    rows = []
    for i, (y0, y1) in enumerate(periods):
        start = flows["stock_start_tc"].isel(period=i)
        end = flows["stock_end_tc"].isel(period=i)
        row: dict[str, Any] = {
            "site_id": site_id,
            "period_start": int(y0),
            "period_end": int(y1),
            "period_years": int(y1) - int(y0),
            "is_full_period": full_period == (int(y0), int(y1)),
            "area_ha": float(flows["area_ha"][i]),
            "nodata_ha": _gap(site_area_ha, float(flows["area_ha"][i])),
            "stock_start_tc": float(start.sum()),
            "stock_end_tc": float(end.sum()),
        }
        row["stock_change_tc"] = row["stock_end_tc"] - row["stock_start_tc"]
        for p in POOLS:
            row[f"stock_change_{p}_tc"] = float(end.sel(pool=p) - start.sel(pool=p))
        for p in GAIN_LOSS_POOLS:
            row[f"gain_{p}_tc"] = float(flows["gain_tc"].isel(period=i).sel(pool=p))
            row[f"loss_{p}_tc"] = float(flows["loss_tc"].isel(period=i).sel(pool=p))
        row["sink_tco2e"] = float(sink_tco2e(row["stock_change_tc"]))
        row["annual_sink_tco2e"] = row["sink_tco2e"] / row["period_years"]
        rows.append(row)
    return pd.DataFrame(rows, columns=SINK_COLUMNS)


def transition_table(site_id: str, periods: list[tuple[int, int]], transitions: dict[tuple[int, int], np.ndarray],
                     classes: list[str]) -> pd.DataFrame:
    """Land-cover transition matrix in long form (ha from class x to class), non-zero cells."""
    rows = []
    for y0, y1 in periods:
        matrix = transitions[(y0, y1)]
        for i, j in zip(*np.nonzero(matrix > 0), strict=True):
            rows.append({"site_id": site_id, "period_start": int(y0), "period_end": int(y1),
                         "from_class": classes[i], "to_class": classes[j], "area_ha": float(matrix[i, j])})
    return pd.DataFrame(rows, columns=["site_id", "period_start", "period_end", "from_class", "to_class", "area_ha"])


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
