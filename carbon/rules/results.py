"""What one site's computation returns: every table of the site, validated against
schemas/outputs.py before it leaves the pipeline, with the arrays behind them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import xarray as xr

from carbon.rules import dynamics


@dataclass
class SiteResult:
    """Every table of one site, validated against schemas/outputs.py before it is returned."""

    site_id: str
    stocks: pd.DataFrame
    stocks_by_class: pd.DataFrame
    area_by_code: pd.DataFrame
    sinks: pd.DataFrame
    transitions: pd.DataFrame
    coefficients_used: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict)
    stock: xr.DataArray | None = field(default=None, repr=False)  # (year, carbon_class, pool), t C
    aggregates: dynamics.Aggregates | None = field(default=None, repr=False)  # areas by class, age, transition
    coefficients: dynamics.Coefficients | None = field(default=None, repr=False)
    class_areas: pd.DataFrame = field(default_factory=pd.DataFrame)  # mapped and map-error-adjusted areas

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "stocks": self.stocks,
            "stocks_by_class": self.stocks_by_class,
            "area_by_code": self.area_by_code,
            "sinks": self.sinks,
            "transitions": self.transitions,
            "coefficients_used": self.coefficients_used,
            "class_areas": self.class_areas,
        }

