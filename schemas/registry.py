"""Contracts of the registry exports (docs/registry.md): validated before anything is written."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

DATE8 = r"^\d{8}$"
ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


def _close(a: pd.Series, b: pd.Series) -> pd.Series:
    return (a - b).abs() <= 1e-6 * (1 + b.abs())


class CommonExport(pa.DataFrameModel):
    """The common record (json export): one row per site, monitoring period and vintage."""

    site_id: Series[str]
    monitoring_start: Series[str] = pa.Field(str_matches=ISO_DATE)
    monitoring_end: Series[str] = pa.Field(str_matches=ISO_DATE)
    vintage_start: Series[str] = pa.Field(str_matches=ISO_DATE)
    vintage_end: Series[str] = pa.Field(str_matches=ISO_DATE)
    days: Series[int] = pa.Field(gt=0, le=366)
    project_removals_tco2e: Series[float]
    baseline_removals_tco2e: Series[float]
    net_stock_change_tco2e: Series[float]
    leakage_pct: Series[float] = pa.Field(ge=0, le=100)
    leakage_tco2e: Series[float] = pa.Field(ge=0)
    project_emissions_tco2e: Series[float] = pa.Field(ge=0)
    net_after_leakage_tco2e: Series[float]
    uncertainty_deduction_tco2e: Series[float] = pa.Field(ge=0)
    buffer_pct: Series[float] = pa.Field(ge=0, le=100)
    buffer_base: Series[str] = pa.Field(isin=["net_stock_change", "net_after_leakage"])
    buffer_tco2e: Series[float] = pa.Field(ge=0)
    net_creditable_tco2e: Series[float]
    issuable_tco2e: Series[int] = pa.Field(ge=0)
    buffer_credits: Series[int] = pa.Field(ge=0)
    ledger_run_id: Series[str]

    class Config:
        strict = False

    @pa.dataframe_check(error="net creditable != project - baseline - leakage - emissions - uncertainty - buffer")
    @classmethod
    def _net(cls, df: pd.DataFrame) -> Series[bool]:
        expected = (df["project_removals_tco2e"] - df["baseline_removals_tco2e"] - df["leakage_tco2e"]
                    - df["project_emissions_tco2e"] - df["uncertainty_deduction_tco2e"] - df["buffer_tco2e"])
        return _close(df["net_creditable_tco2e"], expected)

    @pa.dataframe_check(error="issuable quantity exceeds the vintage's net creditable removals")
    @classmethod
    def _never_over_issue(cls, df: pd.DataFrame) -> Series[bool]:
        return df["issuable_tco2e"] <= df["net_creditable_tco2e"].clip(lower=0) + 1e-6

    @pa.dataframe_check(error="vintage outside its monitoring period or ends before it starts")
    @classmethod
    def _vintage_inside(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["monitoring_start"] <= df["vintage_start"]) & (df["vintage_start"] <= df["vintage_end"]) & (
            df["vintage_end"] <= df["monitoring_end"])


class CcerExport(pa.DataFrameModel):
    """CCER public platform fields (reductions: 公示中减排量 / 已登记减排量 / 已签发减排量)."""

    projectName: Series[str] = pa.Field(str_length={"min_value": 1})
    orgCustomerName: Series[str] = pa.Field(str_length={"min_value": 1})
    projectType: Series[str] = pa.Field(str_matches=r"^[A-Z]\d{4}$")
    methodologyNum: Series[str] = pa.Field(str_matches=r"^CCER-\d{2}-\d{3}-V\d{2}$")
    methodologyName: Series[str]
    provinceName: Series[str] = pa.Field(str_length={"min_value": 1})
    monitoringStart: Series[str] = pa.Field(str_matches=DATE8)
    monitoringEnd: Series[str] = pa.Field(str_matches=DATE8)
    vintageStart: Series[str] = pa.Field(str_matches=DATE8)
    vintageEnd: Series[str] = pa.Field(str_matches=DATE8)
    expectYearNum: Series[int] = pa.Field(ge=0)
    certifiedNum: Series[int] = pa.Field(ge=0)

    class Config:
        strict = False


class VerraExport(pa.DataFrameModel):
    """VCS monitoring and issuance fields."""

    project_id: Series[str] = pa.Field(str_matches=r"^\d+$")
    project_name: Series[str] = pa.Field(str_length={"min_value": 1})
    country_area: Series[str] = pa.Field(str_matches=r"^[A-Z]{2}$")
    methodology: Series[str] = pa.Field(str_matches=r"^VM\d{4}$")
    vintage_start: Series[str] = pa.Field(str_matches=ISO_DATE)
    vintage_end: Series[str] = pa.Field(str_matches=ISO_DATE)
    total_vintage_quantity: Series[int] = pa.Field(ge=0)
    credits_to_buffer: Series[int] = pa.Field(ge=0)

    class Config:
        strict = False


MODELS = {"json": CommonExport, "ccer": CcerExport, "verra": VerraExport}
