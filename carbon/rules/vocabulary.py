"""Constants of the accounting (docs/methods.md §1)."""

from __future__ import annotations

#: Mass ratio CO2 / C = 44/12 (IPCC 2006 Vol.4 Ch.2). docs/methods.md §1.
CO2_PER_C: float = 44.0 / 12.0

#: IPCC carbon pools (2006 Vol.4 Ch.2 §2.2), in output column order.
POOLS: tuple[str, ...] = ("agb", "bgb", "deadwood", "litter", "soc")

#: Controlled vocabulary of carbon classes that legend crosswalks map to.
CARBON_CLASSES: tuple[str, ...] = (
    "forest",
    "shrubland",
    "grassland",
    "cropland",
    "wetland",
    "water",
    "settlement",
    "barren",
    "mining_land",
    "snow_ice",
)

SITE_TYPES: tuple[str, ...] = (
    "reclaimed_mine",
    "forest",
    "wetland",
    "grassland",
    "cropland",
    "other",
)

#: site_id slug: lowercase letters, digits, '-' and '_', 1 to 64 characters.
SITE_ID_PATTERN: str = r"^[a-z0-9_-]{1,64}$"

#: Legend name used for InVEST carbon pools tables: raster codes are looked up directly.
INVEST_LEGEND: str = "lucode"

#: Ecozone key that matches any site (coefficient tables).
ANY_ECOZONE: str = "*"

#: Accounting methods (docs/methods.md §9); the first is the stock-difference method.
METHODS: tuple[str, ...] = ("stock_difference", "gain_loss")

#: Pools whose gains and losses are reported apart (the biomass and dead-organic-matter pools;
#: soil carbon moves as one transition, docs/methods.md §9).
GAIN_LOSS_POOLS: tuple[str, ...] = tuple(p for p in POOLS if p != "soc")

#: Rules of the conservative sink (docs/methods.md §10).
CONSERVATIVE_RULES: tuple[str, ...] = ("ar_tool14", "lower90")

#: What a registry's buffer share is taken of (docs/registry.md).
BUFFER_BASES: tuple[str, ...] = ("net_stock_change", "net_after_leakage")

#: Registry export formats (docs/registry.md).
REGISTRIES: tuple[str, ...] = ("ccer", "verra", "json")

#: The summary of a Monte Carlo distribution beside every stock and sink (docs/methods.md §10):
#: the column ``<quantity>_<field>``; the ``u*_pct`` fields are half-widths in % of the mean.
UNCERTAINTY_FIELDS: tuple[str, ...] = ("mean", "median", "lower90", "upper90", "lower95", "upper95", "u90_pct",
                                       "u95_pct", "u95_pct_approach1")
#: The uncertainty fields that are percentages (NaN where the mean is 0 and the width is not).
UNCERTAINTY_PCT_FIELDS: tuple[str, ...] = tuple(f for f in UNCERTAINTY_FIELDS if "_pct" in f)


def pool_stock_columns() -> list[str]:
    """``stock_<pool>_tc`` for every pool, in pool order."""
    return [f"stock_{p}_tc" for p in POOLS]


def pool_change_columns() -> list[str]:
    """``stock_change_<pool>_tc`` for every pool, in pool order."""
    return [f"stock_change_{p}_tc" for p in POOLS]


def gain_loss_columns() -> list[str]:
    """``gain_<pool>_tc``, ``loss_<pool>_tc`` for every gain-loss pool."""
    return [f"{kind}_{p}_tc" for p in GAIN_LOSS_POOLS for kind in ("gain", "loss")]


def uncertainty_columns(quantity: str) -> list[str]:
    """``<quantity>_<field>`` for every uncertainty field (e.g. ``sink_tco2e_lower90``)."""
    return [f"{quantity}_{f}" for f in UNCERTAINTY_FIELDS]


def one_of(names: tuple[str, ...]) -> str:
    """A regular expression matching exactly one of ``names`` (pandera's regex columns)."""
    return "(" + "|".join(names) + ")"


#: Columns of the per-year stocks table, in order.
STOCK_COLUMNS: list[str] = ["site_id", "year", "area_ha", "nodata_ha", *pool_stock_columns(), "stock_tc",
                            "stock_tc_per_ha"]
#: Columns of the per-class stocks table, in order.
STOCK_BY_CLASS_COLUMNS: list[str] = ["site_id", "year", "carbon_class", "area_ha", *pool_stock_columns(), "stock_tc"]
#: Columns of the sinks table as the accounting makes it (intervals and labels follow), in order.
SINK_COLUMNS: list[str] = [
    "site_id", "period_start", "period_end", "period_years", "is_full_period", "area_ha", "nodata_ha",
    "stock_start_tc", "stock_end_tc", "stock_change_tc", *pool_change_columns(), *gain_loss_columns(),
    "sink_tco2e", "annual_sink_tco2e",
]
#: Columns of the class areas table: mapped and map-error-adjusted areas (docs/methods.md §8).
CLASS_AREA_COLUMNS: list[str] = ["site_id", "year", "carbon_class", "area_ha", "area_adjusted_ha",
                                 "area_adjusted_ha_lower95", "area_adjusted_ha_upper95", "adjusted",
                                 "accuracy_sample"]

#: The standard normal quantile of a two-sided 95% interval.
Z95 = 1.959963984540054
