"""The accounting arithmetic: pure functions over xarray objects and tables.

No file access here. Areas come in as hectares by class (per year) and as
transition matrices (per period); coefficients as pool densities in t C/ha. Every rule
is written in docs/methods.md; the section is named where it is applied.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from carbon.constants import CO2_PER_C, POOLS


def density_array(densities: pd.DataFrame) -> xr.DataArray:
    """Pool densities (t C/ha) as a DataArray (carbon_class, pool)."""
    values = densities[list(POOLS)].to_numpy(dtype=np.float64)
    return xr.DataArray(
        values,
        dims=("carbon_class", "pool"),
        coords={"carbon_class": list(densities.index), "pool": list(POOLS)},
        name="density_tc_per_ha",
    )


def class_stocks(class_area_ha: xr.DataArray, density: xr.DataArray) -> xr.DataArray:
    """Stock (t C) = area (ha) x density (t C/ha), per year, class and pool (methods §2)."""
    stock = class_area_ha * density
    stock.name = "stock_tc"
    return stock


def sink_tco2e(stock_change_tc: np.ndarray | float) -> np.ndarray | float:
    """Removals are positive: a stock gain is a sink (methods §1)."""
    return np.asarray(stock_change_tc) * CO2_PER_C


def stock_tables(site_id: str, stock: xr.DataArray, class_area_ha: xr.DataArray, nodata_ha: xr.DataArray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Site-year stocks and site-year-class stocks as flat tables."""
    by_class = stock.to_dataset(dim="pool").rename({p: f"stock_{p}_tc" for p in POOLS})
    by_class["area_ha"] = class_area_ha
    by_class_df = by_class.to_dataframe().reset_index()
    by_class_df["stock_tc"] = by_class_df[[f"stock_{p}_tc" for p in POOLS]].sum(axis=1)
    by_class_df = by_class_df[by_class_df["area_ha"] > 0]
    by_class_df.insert(0, "site_id", site_id)
    by_class_df = by_class_df[
        ["site_id", "year", "carbon_class", "area_ha", *[f"stock_{p}_tc" for p in POOLS], "stock_tc"]
    ].reset_index(drop=True)

    per_year = stock.sum("carbon_class").to_dataset(dim="pool").rename({p: f"stock_{p}_tc" for p in POOLS})
    per_year["area_ha"] = class_area_ha.sum("carbon_class")
    per_year["nodata_ha"] = nodata_ha
    years_df = per_year.to_dataframe().reset_index()
    years_df["stock_tc"] = years_df[[f"stock_{p}_tc" for p in POOLS]].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        years_df["stock_tc_per_ha"] = np.where(
            years_df["area_ha"] > 0, years_df["stock_tc"] / years_df["area_ha"], 0.0
        )
    years_df.insert(0, "site_id", site_id)
    years_df = years_df[
        ["site_id", "year", "area_ha", "nodata_ha", *[f"stock_{p}_tc" for p in POOLS], "stock_tc", "stock_tc_per_ha"]
    ]
    return years_df, by_class_df


def sink_table(
    site_id: str,
    transition_ha: xr.DataArray,
    density: xr.DataArray,
    site_area_ha: float,
    full_period: tuple[int, int] | None,
) -> pd.DataFrame:
    """One row per period: stocks at both ends, change, sink and annual sink (methods §6)."""
    if transition_ha.sizes.get("period", 0) == 0:
        return pd.DataFrame(columns=SINK_COLUMNS)
    start_area = transition_ha.sum("to_class").rename(from_class="carbon_class")
    end_area = transition_ha.sum("from_class").rename(to_class="carbon_class")
    start = (start_area * density).sum("carbon_class")  # (period, pool)
    end = (end_area * density).sum("carbon_class")
    change = end - start
    area = transition_ha.sum(("from_class", "to_class"))
    rows = []
    for i, (y0, y1) in enumerate(transition_ha["period"].values.tolist()):
        row = {
            "site_id": site_id,
            "period_start": int(y0),
            "period_end": int(y1),
            "period_years": int(y1) - int(y0),
            "is_full_period": full_period == (int(y0), int(y1)),
            "area_ha": float(area[i]),
            "nodata_ha": max(0.0, site_area_ha - float(area[i])),
            "stock_start_tc": float(start[i].sum()),
            "stock_end_tc": float(end[i].sum()),
        }
        row["stock_change_tc"] = row["stock_end_tc"] - row["stock_start_tc"]
        for p in POOLS:
            row[f"stock_change_{p}_tc"] = float(change[i].sel(pool=p))
        row["sink_tco2e"] = float(sink_tco2e(row["stock_change_tc"]))
        row["annual_sink_tco2e"] = row["sink_tco2e"] / row["period_years"]
        rows.append(row)
    return pd.DataFrame(rows, columns=SINK_COLUMNS)


SINK_COLUMNS = [
    "site_id",
    "period_start",
    "period_end",
    "period_years",
    "is_full_period",
    "area_ha",
    "nodata_ha",
    "stock_start_tc",
    "stock_end_tc",
    "stock_change_tc",
    *[f"stock_change_{p}_tc" for p in POOLS],
    "sink_tco2e",
    "annual_sink_tco2e",
]


def transition_table(site_id: str, transition_ha: xr.DataArray) -> pd.DataFrame:
    """Land-cover transition matrix in long form (ha from class x to class), non-zero cells."""
    cols = ["site_id", "period_start", "period_end", "from_class", "to_class", "area_ha"]
    if transition_ha.sizes.get("period", 0) == 0:
        return pd.DataFrame(columns=cols)
    df = transition_ha.rename("area_ha").to_dataframe().reset_index()
    df = df[df["area_ha"] > 0].copy()
    df["period_start"] = [int(p[0]) for p in df["period"]]
    df["period_end"] = [int(p[1]) for p in df["period"]]
    df.insert(0, "site_id", site_id)
    return df[cols].reset_index(drop=True)


def periods(years: list[int], start_year: int) -> list[tuple[int, int]]:
    """Consecutive map years, plus the whole period from ``start_year`` to the last year
    (methods §6). Each (start, end) appears once."""
    years = sorted(years)
    out = list(zip(years[:-1], years[1:], strict=True))
    whole = (start_year, years[-1])
    if whole[0] < whole[1] and whole not in out:
        out.append(whole)
    return out
