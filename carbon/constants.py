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
