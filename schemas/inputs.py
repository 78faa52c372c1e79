"""Contracts of every input table (docs/data-contracts.md).

Units are in the field names: ``stock_tc_per_ha`` is tonnes of carbon per hectare.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from carbon.rules.dynamics import (
    AGE_CURVE_AGES,
    AGE_CURVE_DECREASING,
    AGE_CURVE_NEGATIVE,
    AGE_CURVE_NOT_PAIRS,
    AGE_CURVE_TOLERANCE,
    CURVES,
    age_curve_problem,
    parse_age_curve,
)
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
    accuracy: Series[str] | None = pa.Field(nullable=True)  # an accuracy-assessment sample (CSV) of the map

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


#: Bounds of a coefficient: far above any ecosystem carbon density or growth rate measured (the
#: densest forests hold of the order of 1,000-2,000 t C/ha above ground, peat soils a few
#: thousand to depth), so that only an impossible value (inf, 1e300, a unit slip) is refused.
MAX_TC_PER_HA = 10_000.0
MAX_GROWTH_TC_PER_HA_YR = 100.0


class CoefficientTable(pa.DataFrameModel):
    """Carbon-stock coefficients, long form: one row per class, ecozone and pool."""

    carbon_class: Series[str] = pa.Field(isin=list(CARBON_CLASSES))
    ecozone: Series[str] = pa.Field(str_length={"min_value": 1})
    pool: Series[str] = pa.Field(isin=list(POOLS))
    # finite and below a physical bound (docs/data-contracts.md): inf, 1e300 or a unit slip
    stock_tc_per_ha: Series[float] = pa.Field(ge=0, le=MAX_TC_PER_HA, coerce=True)
    sd_tc_per_ha: Series[float] = pa.Field(ge=0, le=MAX_TC_PER_HA, nullable=True, coerce=True)
    growth_tc_per_ha_yr: Series[float] | None = pa.Field(ge=0, le=MAX_GROWTH_TC_PER_HA_YR, nullable=True, coerce=True)
    source: Series[str] = pa.Field(str_length={"min_value": 1})
    # Age curves (docs/methods.md §9), all optional; a row with neither curve nor age_curve is linear.
    curve: Series[str] | None = pa.Field(isin=list(CURVES), nullable=True)
    curve_k: Series[float] | None = pa.Field(gt=0, nullable=True, coerce=True)  # 1/yr, chapman_richards
    curve_p: Series[float] | None = pa.Field(gt=0, nullable=True, coerce=True)  # chapman_richards
    age_curve: Series[str] | None = pa.Field(nullable=True)  # "age:stock;..." pairs, t C/ha

    class Config:
        strict = False

    @staticmethod
    def _text(df: pd.DataFrame, column: str) -> pd.Series:
        """A text column with empty cells (and an absent column) as None."""
        if column not in df.columns:
            return pd.Series([None] * len(df), index=df.index, dtype=object)
        return pd.Series([v.strip() if isinstance(v, str) and v.strip() else None for v in df[column]],
                         index=df.index, dtype=object)

    @staticmethod
    def _number(df: pd.DataFrame, column: str) -> pd.Series:
        """A numeric column, NaN where empty, not a number (reported by its own check) or absent."""
        if column not in df.columns:
            return pd.Series(np.nan, index=df.index, dtype=float)
        return pd.to_numeric(df[column], errors="coerce").astype(float)

    @pa.dataframe_check(error="duplicate (carbon_class, ecozone, pool) row")
    @classmethod
    def _unique_key(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df.duplicated(subset=["carbon_class", "ecozone", "pool"], keep=False)

    @pa.check("curve_k", "curve_p", name="finite", error="finite")
    @classmethod
    def _finite_curve_parameter(cls, s: Series[float]) -> Series[bool]:
        x = pd.to_numeric(s, errors="coerce")  # a value that is not a number is reported by its coercion
        return pd.Series(np.isfinite(x) | x.isna(), index=s.index)

    @staticmethod
    def _age_curve_is_not(s: pd.Series, problem: str) -> pd.Series:
        return pd.Series([age_curve_problem(v) != problem for v in s], index=s.index, dtype=bool)

    @pa.check("age_curve", name="age_curve pairs", error=AGE_CURVE_NOT_PAIRS)
    @classmethod
    def _age_curve_pairs(cls, s: Series[str]) -> Series[bool]:
        return cls._age_curve_is_not(s, AGE_CURVE_NOT_PAIRS)

    @pa.check("age_curve", name="age_curve ages", error=AGE_CURVE_AGES)
    @classmethod
    def _age_curve_ages(cls, s: Series[str]) -> Series[bool]:
        return cls._age_curve_is_not(s, AGE_CURVE_AGES)

    @pa.check("age_curve", name="age_curve stocks >= 0", error=AGE_CURVE_NEGATIVE)
    @classmethod
    def _age_curve_non_negative(cls, s: Series[str]) -> Series[bool]:
        return cls._age_curve_is_not(s, AGE_CURVE_NEGATIVE)

    @pa.check("age_curve", name="age_curve non-decreasing", error=AGE_CURVE_DECREASING)
    @classmethod
    def _age_curve_non_decreasing(cls, s: Series[str]) -> Series[bool]:
        return cls._age_curve_is_not(s, AGE_CURVE_DECREASING)

    @pa.dataframe_check(error="column curve_k/curve_p: chapman_richards needs both curve_k > 0 and curve_p > 0")
    @classmethod
    def _chapman_richards_parameters(cls, df: pd.DataFrame) -> Series[bool]:
        cr = cls._text(df, "curve") == "chapman_richards"
        return ~cr | (cls._number(df, "curve_k").notna() & cls._number(df, "curve_p").notna())

    @pa.dataframe_check(error="column curve_k/curve_p: given on a row whose curve is not chapman_richards")
    @classmethod
    def _parameters_only_for_chapman_richards(cls, df: pd.DataFrame) -> Series[bool]:
        cr = cls._text(df, "curve") == "chapman_richards"
        return cr | (cls._number(df, "curve_k").isna() & cls._number(df, "curve_p").isna())

    @pa.dataframe_check(error="columns curve and age_curve: a row gives either a curve or an age_curve, not both")
    @classmethod
    def _curve_or_age_curve(cls, df: pd.DataFrame) -> Series[bool]:
        return cls._text(df, "curve").isna() | cls._text(df, "age_curve").isna()

    @pa.dataframe_check(error="columns curve/age_curve: an age curve applies to a biomass pool "
                              "(agb, bgb, deadwood, litter), not to soc (SOC follows its own transition)")
    @classmethod
    def _curves_on_biomass_pools(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["pool"] != "soc") | (cls._text(df, "curve").isna() & cls._text(df, "age_curve").isna())

    @pa.dataframe_check(error=f"column age_curve: its last stock must equal stock_tc_per_ha (the mature stock) "
                              f"within {AGE_CURVE_TOLERANCE:g}")
    @classmethod
    def _age_curve_ends_at_the_mature_stock(cls, df: pd.DataFrame) -> Series[bool]:
        stock = cls._number(df, "stock_tc_per_ha")
        ok = [
            not isinstance(text, str) or age_curve_problem(text) is not None or pd.isna(mature)
            or math.isclose(parse_age_curve(text)[1][-1], float(mature), rel_tol=AGE_CURVE_TOLERANCE,
                            abs_tol=AGE_CURVE_TOLERANCE)
            for text, mature in zip(cls._text(df, "age_curve"), stock, strict=True)
        ]
        return pd.Series(ok, index=df.index, dtype=bool)


class InvestPoolsTable(pa.DataFrameModel):
    """InVEST Carbon pools table (t C/ha), accepted as InVEST writes it."""

    lucode: Series[int] = pa.Field(unique=True, coerce=True)
    c_above: Series[float] = pa.Field(ge=0, le=MAX_TC_PER_HA, coerce=True)
    c_below: Series[float] = pa.Field(ge=0, le=MAX_TC_PER_HA, coerce=True)
    c_soil: Series[float] = pa.Field(ge=0, le=MAX_TC_PER_HA, coerce=True)
    c_dead: Series[float] = pa.Field(ge=0, le=MAX_TC_PER_HA, coerce=True)

    class Config:
        strict = False


class AccuracySampleTable(pa.DataFrameModel):
    """The counts of a stratified random accuracy-assessment sample of a map, strata = map
    classes: how many sample units of each map code have each reference code (docs/methods.md §8)."""

    map_code: Series[int] = pa.Field(coerce=True)
    reference_code: Series[int] = pa.Field(coerce=True)
    count: Series[int] = pa.Field(ge=0, coerce=True)

    class Config:
        strict = False

    @pa.dataframe_check(error="a map class (stratum) sampled fewer than twice has no variance: sample it at least twice")
    @classmethod
    def _two_per_stratum(cls, df: pd.DataFrame) -> Series[bool]:
        totals = df.groupby("map_code")["count"].transform("sum")
        return totals >= 2

    @pa.dataframe_check(error="the same (map_code, reference_code) pair is listed twice")
    @classmethod
    def _unique_pair(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df.duplicated(subset=["map_code", "reference_code"], keep=False)
