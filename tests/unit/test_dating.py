"""Dating the changes seen between sparse maps (docs/methods.md §9): a change first seen in
the map of year s, whose previous map is of year p, is spread evenly over the change years
p+1 .. s. Cases worked out by hand, and one history observed every year and every five years.

Coefficients (tests/unit/test_dynamics.py): forest grows 4 t C/ha/yr above ground and 1 below,
to 100 and 25; its soil holds 60 t C/ha, cropland 5 (agb) and 40 (soil); soils move over 20 years.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import CRS

from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.site import compute_site
from carbon.rules.dynamics import run_history
from carbon.rules.site import Site
from tests.rasters import CLCD_ALBERS, X0, Y0, write_tif
from tests.unit.test_dynamics import COEF, per_ha, run, sink

CROP, FOREST, BUILT = 1, 2, 8  # CLCD codes


def test_run_history_gives_each_change_its_span() -> None:
    years = np.array([2000, 2005, 2006, 2010])
    nd = -1
    classes = np.array([[0, 0, 0], [0, 1, nd], [1, 1, nd], [1, 0, 1]])
    start, previous, span = run_history(classes, years)
    # pixel 0: class 0 in 2000 and 2005, class 1 from 2006: maps a year apart, span 1
    assert start[:, 0].tolist() == [-1, -1, 2006, 2006] and span[:, 0].tolist() == [1, 1, 1, 1]
    # pixel 1: changes at 2005 (span 5), back at 2010 (span 4)
    assert start[:, 1].tolist() == [-1, 2005, 2005, 2010] and span[:, 1].tolist() == [1, 5, 5, 4]
    assert previous[:, 1].tolist() == [-1, 0, 0, 1]
    # pixel 2: no data in 2005 and 2006: the change seen in 2010 is spread over 2001..2010
    assert start[:, 2].tolist() == [-1, -2, -2, 2010] and span[:, 2].tolist() == [1, -2, -2, 10]
    assert previous[:, 2].tolist() == [-1, -2, -2, 0]


def test_a_change_between_maps_five_years_apart_is_spread_over_the_five_years(tmp_path: Path) -> None:
    r = run(tmp_path, {2015: CROP, 2020: FOREST})
    # change years 2016..2020, each 1/5: ages 4, 3, 2, 1, 0 at 2020 -> agb 4 x 2 = 8, bgb 2;
    # soil from the mean change year (2015 + 1 + 2020) / 2 = 2018: 40 + 20 x 2/20 = 42
    assert per_ha(r, 2015) == pytest.approx(45)
    assert per_ha(r, 2020, "stock_agb_tc") == pytest.approx(8)
    assert per_ha(r, 2020, "stock_bgb_tc") == pytest.approx(2)
    assert per_ha(r, 2020, "stock_soc_tc") == pytest.approx(42)
    whole = sink(r, 2015, 2020)
    assert whole["stock_change_tc"] / 0.36 == pytest.approx(52 - 45)
    assert whole["gain_agb_tc"] / 0.36 == pytest.approx(8)
    assert whole["loss_agb_tc"] / 0.36 == pytest.approx(-5)
    # the same as annual maps showing the change in the middle year, 2018
    (tmp_path / "annual").mkdir()
    annual = run(tmp_path / "annual", {2015: CROP, 2016: CROP, 2017: CROP, 2018: FOREST, 2019: FOREST, 2020: FOREST})
    assert per_ha(annual, 2020) == pytest.approx(per_ha(r, 2020))


def test_a_conversion_seen_only_at_the_end_of_a_long_interval_is_neither_zero_nor_mature(tmp_path: Path) -> None:
    r = run(tmp_path, {2000: CROP, 2020: FOREST})
    # change years 2001..2020: ages 0..19, mean 9.5 -> agb 38, bgb 9.5 (maturity, 100 and 25, not reached);
    # soil from 2010.5: 40 + 20 x 9.5/20 = 49.5
    assert per_ha(r, 2020, "stock_agb_tc") == pytest.approx(38)
    assert per_ha(r, 2020, "stock_bgb_tc") == pytest.approx(9.5)
    assert per_ha(r, 2020, "stock_soc_tc") == pytest.approx(49.5)
    assert 0 < per_ha(r, 2020, "stock_agb_tc") < 100


def test_annual_maps_are_dated_as_before(tmp_path: Path) -> None:
    r = run(tmp_path, {2020: CROP, 2021: FOREST, 2022: FOREST})
    assert per_ha(r, 2021) == pytest.approx(40)  # age 0, soil still cropland's
    assert per_ha(r, 2022) == pytest.approx(4 + 1 + 41)


# --- one history, observed every year and every five years ------------------------------

YEARS = list(range(2000, 2021))


#: The year each pixel changes (4 x 10 pixels), drawn once with a fixed seed: a history whose
#: changes fall in any year of 2001..2020, as land use changes.
CHANGE_YEAR = np.random.default_rng(20240601).integers(2001, 2021, size=(4, 10))


def _history(year: int) -> np.ndarray:
    """Rows 0 and 1: cropland planted to forest in their pixel's change year (a reclaimed
    site); row 2: forest cleared to settlement; row 3: forest throughout."""
    changed = year >= CHANGE_YEAR
    out = np.empty((4, 10), dtype=np.uint8)
    out[0:2] = np.where(changed[0:2], FOREST, CROP)
    out[2] = np.where(changed[2], BUILT, FOREST)
    out[3] = FOREST
    return out


def _site_run(folder: Path, years: list[int]):
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["year,path,legend"]
    for y in years:
        write_tif(folder / f"lc{y}.tif", _history(y))
        rows.append(f"{y},lc{y}.tif,clcd")
    (folder / "catalog.csv").write_text("\n".join(rows) + "\n")
    (folder / "coef.csv").write_text(COEF)
    site = Site("s", "S", "reclaimed_mine", "*", shapely.box(X0, Y0 - 120, X0 + 300, Y0),
                CRS.from_proj4(CLCD_ALBERS))
    return compute_site(site, load_catalog(folder / "catalog.csv"), load_coefficients(folder / "coef.csv"),
                        method="gain_loss")


def test_one_history_observed_every_year_and_every_five_years_gives_the_same_sink(tmp_path: Path) -> None:
    every_year = _site_run(tmp_path / "annual", YEARS)
    every_five = _site_run(tmp_path / "five", YEARS[::5])
    a = sink(every_year, 2000, 2020)["sink_tco2e"]
    b = sink(every_five, 2000, 2020)["sink_tco2e"]
    assert np.sign(a) == np.sign(b) != 0
    assert abs(b - a) <= 0.15 * abs(a), (a, b)
    # and the stocks at the shared map years
    for y in YEARS[::5]:
        sa = every_year.stocks.set_index("year").loc[y, "stock_tc"]
        sb = every_five.stocks.set_index("year").loc[y, "stock_tc"]
        assert abs(sb - sa) <= 0.15 * sa, (y, sa, sb)


def test_a_clearing_seen_in_one_map_between_sparse_maps_is_not_flicker(tmp_path: Path) -> None:
    """Forest 2000, cropland 2005, forest 2010: the cropland lasted years, not map noise (only
    A -> B -> A within 3 years is filtered). Both changes are dated: the clearing over
    2001..2005 (soil from 2003), the planting over 2006..2010 (ages 4..0, soil from 2008)."""
    r = run(tmp_path, {2000: FOREST, 2005: CROP, 2010: FOREST})
    assert r.provenance["flicker_filtered_ha"] == {"2000": 0.0, "2005": 0.0, "2010": 0.0}
    assert per_ha(r, 2010, "stock_agb_tc") == pytest.approx(8)  # 4 x mean age 2
    assert per_ha(r, 2010, "stock_bgb_tc") == pytest.approx(2)
    # soil: 60 until 2003, towards cropland's 40 for 5 years -> 55 in 2008, towards 60 -> 55.5 in 2010
    assert per_ha(r, 2010, "stock_soc_tc") == pytest.approx(55.5)
    assert sink(r, 2000, 2010)["stock_change_tc"] / 0.36 == pytest.approx(65.5 - 185)


def test_density_maps_show_the_classes_as_the_history_reads_them(tmp_path: Path) -> None:
    """Forest, cropland for one year, forest (annual maps): the cropland year is flicker; the
    2019 density map shows the forest the stocks count (185 t C/ha), not cropland's biomass."""
    import rasterio

    from carbon.io.tables import load_catalog as _load
    from tests.rasters import uniform_history

    catalog = _load(uniform_history(tmp_path, {2018: FOREST, 2019: CROP, 2020: FOREST}))
    (tmp_path / "coef.csv").write_text(COEF)
    site = Site("s", "S", "reclaimed_mine", "*", shapely.box(X0, Y0 - 60, X0 + 60, Y0), CRS.from_proj4(CLCD_ALBERS))
    r = compute_site(site, catalog, load_coefficients(tmp_path / "coef.csv"), method="gain_loss",
                     maps_dir=tmp_path / "maps")
    assert per_ha(r, 2019) == pytest.approx(185)
    with rasterio.open(tmp_path / "maps" / "s_stock_density_2019.tif") as src:
        density = src.read(1)
    assert np.nanmax(density) == pytest.approx(185) and np.nanmin(density) == pytest.approx(185)
