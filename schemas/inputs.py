"""Contracts of every input table (docs/data-contracts.md).

Units are in the field names: ``stock_tc_per_ha`` is tonnes of carbon per hectare.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from carbon.rules.vocabulary import CARBON_CLASSES, POOLS, SITE_ID_PATTERN, SITE_TYPES

LEGEND_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class SitesTable(pa.DataFrameModel):
    """Site properties (the attribute table of the sites GeoJSON / GeoPackage)."""

    site_id: Series[str] = pa.Field(str_matches=SITE_ID_PATTERN, unique=True)
    name: Series[str] = pa.Field(str_length={"min_value": 1})
    site_type: Series[str] = pa.Field(isin=list(SITE_TYPES))
    ecozone: Series[str] = pa.Field(str_length={"min_value": 1})
    baseline_year: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, ge=1900, le=2100, coerce=True
    )

    class Config:
        strict = False  # extra properties are kept for registry metadata


class CatalogTable(pa.DataFrameModel):
    """Land-cover catalog: one GeoTIFF per row; rows of one year are tiles of one mosaic."""

    year: Series[int] = pa.Field(ge=1900, le=2100, coerce=True)
    path: Series[str] = pa.Field(str_length={"min_value": 1})
    legend: Series[str] = pa.Field(str_matches=LEGEND_NAME_PATTERN)
    source: Series[str] | None = pa.Field(nullable=True)

    class Config:
        strict = False

    @pa.dataframe_check(error="the same path is listed twice for one year")
    @classmethod
    def _unique_year_path(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df.duplicated(subset=["year", "path"], keep=False)


class CrosswalkTable(pa.DataFrameModel):
    """Legend crosswalk: source code -> carbon class."""

    code: Series[int] = pa.Field(unique=True, coerce=True)
    label: Series[str] = pa.Field(nullable=True)
    carbon_class: Series[str] = pa.Field(isin=list(CARBON_CLASSES))
    color: Series[str] | None = pa.Field(nullable=True, str_matches=r"^#[0-9a-fA-F]{6}$")  # display colour

    class Config:
        strict = False


class CoefficientTable(pa.DataFrameModel):
    """Carbon-stock coefficients, long form: one row per class, ecozone and pool."""

    carbon_class: Series[str] = pa.Field(isin=list(CARBON_CLASSES))
    ecozone: Series[str] = pa.Field(str_length={"min_value": 1})
    pool: Series[str] = pa.Field(isin=list(POOLS))
    stock_tc_per_ha: Series[float] = pa.Field(ge=0, coerce=True)
    sd_tc_per_ha: Series[float] = pa.Field(ge=0, nullable=True, coerce=True)
    growth_tc_per_ha_yr: Series[float] | None = pa.Field(ge=0, nullable=True, coerce=True)
    source: Series[str] = pa.Field(str_length={"min_value": 1})

    class Config:
        strict = False

    @pa.dataframe_check(error="duplicate (carbon_class, ecozone, pool) row")
    @classmethod
    def _unique_key(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df.duplicated(subset=["carbon_class", "ecozone", "pool"], keep=False)


class InvestPoolsTable(pa.DataFrameModel):
    """InVEST Carbon pools table (t C/ha), accepted as InVEST writes it."""

    lucode: Series[int] = pa.Field(unique=True, coerce=True)
    c_above: Series[float] = pa.Field(ge=0, coerce=True)
    c_below: Series[float] = pa.Field(ge=0, coerce=True)
    c_soil: Series[float] = pa.Field(ge=0, coerce=True)
    c_dead: Series[float] = pa.Field(ge=0, coerce=True)

    class Config:
        strict = False
