"""Every bad input gets a clear InputError naming the file, site, row or field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import CRS

from carbon.errors import InputError
from carbon.io.config import load_config
from carbon.io.sites import load_sites
from carbon.io.tables import load_catalog, load_coefficients, load_crosswalk
from carbon.pipeline.site import compute_site
from carbon.rules.site import Site
from tests.conftest import write_catalog, write_coefficients
from tests.rasters import CLCD_ALBERS, X0, Y0, write_tif

GOOD = np.array([[2, 2, 4], [4, 7, 7], [1, 1, 1]], dtype=np.uint8)
DENSITY = {c: {"agb": 10, "soc": 50} for c in ("forest", "grassland", "barren", "cropland", "shrubland")}
SITE_GEOM = shapely.box(X0 + 10, Y0 - 80, X0 + 80, Y0 - 10)


def albers_site(geom=SITE_GEOM, ecozone="*", site_id="s1") -> Site:
    return Site(site_id, "S", "other", ecozone, geom, CRS.from_proj4(CLCD_ALBERS))


def setup(tmp_path: Path, rasters: dict[int, np.ndarray] | None = None, **tif_kw):
    rows = []
    for year, codes in (rasters or {2020: GOOD, 2021: GOOD}).items():
        write_tif(tmp_path / f"lc{year}.tif", codes, **tif_kw)
        rows.append((year, f"lc{year}.tif", "clcd"))
    catalog = load_catalog(write_catalog(tmp_path / "catalog.csv", rows))
    coef = load_coefficients(write_coefficients(tmp_path / "coef.csv", DENSITY))
    return catalog, coef


def sites_file(tmp_path: Path, features: list[dict]) -> Path:
    path = tmp_path / "sites.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def feature(site_id: str, coords=None, **props) -> dict:
    coords = coords or [[114.0, 30.0], [114.01, 30.0], [114.01, 30.01], [114.0, 30.01], [114.0, 30.0]]
    p = {"site_id": site_id, "name": "n", "site_type": "forest", "ecozone": "subtropical_humid_asia"} | props
    return {"type": "Feature", "properties": p, "geometry": {"type": "Polygon", "coordinates": [coords]}}


def test_missing_raster_file_is_named(tmp_path: Path) -> None:
    cat = write_catalog(tmp_path / "catalog.csv", [(2020, "nowhere.tif", "clcd")])
    with pytest.raises(InputError, match=r"nowhere\.tif") as e:
        load_catalog(cat)
    assert "row 2" in str(e.value)


def test_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="catalog file not found"):
        load_catalog(tmp_path / "absent.csv")


def test_truncated_geotiff_is_named_not_a_gdal_traceback(tmp_path: Path, shared: Path) -> None:
    src = shared / "corine_clc_lausanne" / "ls100_06.tif"
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(2006, bad.name, "corine")]))
    coef = load_coefficients(write_coefficients(tmp_path / "k.csv", DENSITY))
    site = Site("lsn", "L", "other", "*", shapely.box(2530000, 1150000, 2540000, 1160000), CRS.from_epsg(2056))
    with pytest.raises(InputError, match="truncated.tif"):
        compute_site(site, catalog, coef)


def test_corrupt_file_that_is_not_a_tiff(tmp_path: Path) -> None:
    (tmp_path / "lc2020.tif").write_text("this is not a GeoTIFF")
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(2020, "lc2020.tif", "clcd")]))
    coef = load_coefficients(write_coefficients(tmp_path / "k.csv", DENSITY))
    with pytest.raises(InputError, match=r"cannot open raster.*lc2020\.tif"):
        compute_site(albers_site(), catalog, coef)


def test_float_land_cover_is_refused(tmp_path: Path, shared: Path) -> None:
    # a real float32 land-cover raster with NaN as nodata and no nodata tag
    f = shared / "esa_cci_lc_newguinea_motif" / "landcover2001s.tif"
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(2001, f, "clcd")]))
    coef = load_coefficients(write_coefficients(tmp_path / "k.csv", DENSITY))
    import rasterio

    with rasterio.open(f) as src:
        site = Site("png", "P", "forest", "*", shapely.box(*src.bounds), CRS.from_wkt(src.crs.to_wkt()))
    with pytest.raises(InputError, match=r"integer codes.*float32") as e:
        compute_site(site, catalog, coef)
    assert "landcover2001s.tif" in str(e.value)


def test_raster_without_crs(tmp_path: Path) -> None:
    catalog, coef = setup(tmp_path, crs=None)
    with pytest.raises(InputError, match="no coordinate reference system"):
        compute_site(albers_site(), catalog, coef)


def test_site_outside_every_raster(tmp_path: Path) -> None:
    catalog, coef = setup(tmp_path)
    far = shapely.box(X0 + 50_000, Y0 - 1000, X0 + 51_000, Y0)
    with pytest.raises(InputError, match="outside every raster") as e:
        compute_site(albers_site(far), catalog, coef)
    assert "s1" in str(e.value)


def test_self_intersecting_polygon(tmp_path: Path) -> None:
    bowtie = [[114.0, 30.0], [114.01, 30.01], [114.01, 30.0], [114.0, 30.01], [114.0, 30.0]]
    path = sites_file(tmp_path, [feature("ok"), feature("bowtie", bowtie)])
    with pytest.raises(InputError, match=r"feature 2 \(site_id 'bowtie'\): geometry is invalid \(Self-intersection"):
        load_sites(path)


def test_duplicate_site_id(tmp_path: Path) -> None:
    path = sites_file(tmp_path, [feature("a"), feature("a")])
    with pytest.raises(InputError, match=r"feature 2, column site_id: duplicate value 'a'"):
        load_sites(path)


@pytest.mark.parametrize("bad_id", ["../x", "Upper", "a b", "x" * 65, ""])
def test_site_id_must_be_a_slug(tmp_path: Path, bad_id: str) -> None:
    path = sites_file(tmp_path, [feature("fine"), feature(bad_id)])
    with pytest.raises(InputError, match=r"feature 2, column site_id"):
        load_sites(path)


def test_every_site_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = sites_file(tmp_path, [feature("../x", site_type="mine"), feature("b", ecozone="")])
    with pytest.raises(InputError) as e:
        load_sites(path)
    text = str(e.value)
    assert "site_id" in text and "site_type" in text and "ecozone" in text


def test_unknown_codes_are_listed_with_the_file(tmp_path: Path) -> None:
    codes = GOOD.copy()
    codes[0, 1] = 42
    codes[1, 1] = 77
    catalog, coef = setup(tmp_path, {2020: GOOD, 2021: codes})
    with pytest.raises(InputError, match=r"lc2021\.tif: codes \[42, 77\] are in no row of the 'clcd' crosswalk"):
        compute_site(albers_site(), catalog, coef)


def test_unknown_code_outside_the_site_is_not_an_error(tmp_path: Path) -> None:
    codes = GOOD.copy()
    codes[2, 2] = 42  # pixel (2, 2) lies outside this site polygon
    catalog, coef = setup(tmp_path, {2020: GOOD, 2021: codes})
    r = compute_site(albers_site(shapely.box(X0 + 10, Y0 - 50, X0 + 50, Y0 - 10)), catalog, coef)
    assert len(r.stocks) == 2


@pytest.mark.parametrize(("value", "message"), [("-5", "greater_than_or_equal_to"), ("", "value is missing")])
def test_negative_or_missing_coefficient(tmp_path: Path, value: str, message: str) -> None:
    path = write_coefficients(tmp_path / "coef.csv", DENSITY)
    lines = path.read_text().splitlines()
    fields = lines[3].split(",")
    fields[3] = value
    lines[3] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"coef\.csv, row 4, column stock_tc_per_ha: .*{message}"):
        load_coefficients(path)


def test_ecozone_absent_from_table(tmp_path: Path) -> None:
    _, _ = setup(tmp_path)
    catalog = load_catalog(tmp_path / "catalog.csv")
    coef = load_coefficients(write_coefficients(tmp_path / "zoned.csv", DENSITY, ecozone="subtropical_humid_asia"))
    with pytest.raises(InputError, match=r"ecozone 'boreal_moist' is absent .*subtropical_humid_asia"):
        compute_site(albers_site(ecozone="boreal_moist"), catalog, coef)


def test_requested_year_absent_from_catalog(tmp_path: Path) -> None:
    catalog, coef = setup(tmp_path)
    with pytest.raises(InputError, match=r"requested year\(s\) \[2019\] absent from the land-cover catalog"):
        compute_site(albers_site(), catalog, coef, years=[2019, 2021])


def test_baseline_year_without_map(tmp_path: Path) -> None:
    catalog, coef = setup(tmp_path)
    with pytest.raises(InputError, match="period start 2015 has no land-cover map"):
        compute_site(albers_site(), catalog, coef, start_year=2015)


def test_crosswalk_class_outside_vocabulary(tmp_path: Path) -> None:
    (tmp_path / "mine.csv").write_text("code,label,carbon_class\n1,a,forest\n2,b,jungle\n")
    with pytest.raises(InputError, match=r"mine\.csv, row 3, column carbon_class: value 'jungle'"):
        load_crosswalk("mine", tmp_path)


def test_unknown_legend(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no crosswalk for legend 'modis_igbp'"):
        load_crosswalk("modis_igbp", tmp_path)


def test_invest_table_with_a_crosswalk_legend(tmp_path: Path, shared: Path) -> None:
    catalog, _ = setup(tmp_path)
    coef = load_coefficients(shared / "invest_willamette" / "carbon_pools_willamette.csv")
    with pytest.raises(InputError, match="needs catalog legend 'lucode'"):
        compute_site(albers_site(), catalog, coef)


def test_catalog_missing_column(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("year,path\n2020,a.tif\n")
    with pytest.raises(InputError, match="required column 'legend' is missing"):
        load_catalog(tmp_path / "c.csv")


def test_sites_file_missing_or_unreadable(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="sites file not found"):
        load_sites(tmp_path / "none.geojson")
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(InputError, match=r"cannot be read.*bad\.geojson"):
        load_sites(tmp_path / "bad.geojson")


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="configuration file not found"):
        load_config(tmp_path / "none.toml")
    (tmp_path / "c.toml").write_text('sites = "s.geojson"\nlandcovr = "x.csv"\n')
    with pytest.raises(InputError) as e:
        load_config(tmp_path / "c.toml")
    assert "unknown key 'landcovr'" in str(e.value) and "required key 'landcover' is missing" in str(e.value)


def test_partly_covered_site_reports_nodata(tmp_path: Path) -> None:
    catalog, coef = setup(tmp_path)
    half_out = shapely.box(X0 + 60, Y0 - 60, X0 + 120, Y0)  # the raster is 90 m wide
    r = compute_site(albers_site(half_out), catalog, coef)
    s = r.stocks.iloc[0]
    assert s["area_ha"] == pytest.approx(0.18)
    assert s["nodata_ha"] == pytest.approx(0.18)


def test_geopackage_sites_are_read(tmp_path: Path, shared: Path) -> None:
    src = shared / "corine_clc_lausanne" / "gmb-lausanne.gpkg"
    import geopandas as gpd

    gdf = gpd.read_file(src)
    gdf["site_id"] = "lausanne"
    gdf["name"] = "Lausanne"
    gdf["site_type"] = "other"
    gdf["ecozone"] = "*"
    gdf.to_file(tmp_path / "sites.gpkg")
    sites = load_sites(tmp_path / "sites.gpkg")
    assert sites[0].site_id == "lausanne" and sites[0].crs.to_epsg() == 2056
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_south_up_raster_is_refused(tmp_path: Path) -> None:
    from affine import Affine

    catalog, coef = setup(tmp_path, transform=Affine(30, 0, X0, 0, 30, Y0 - 90))
    with pytest.raises(InputError, match="south-up"):
        compute_site(albers_site(), catalog, coef)


def test_internal_mask_is_nodata_on_the_reference_grid(tmp_path: Path) -> None:
    import rasterio

    path = write_tif(tmp_path / "lc2020.tif", GOOD, nodata=None)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        mask = np.full(GOOD.shape, 255, dtype=np.uint8)
        mask[0, 0] = 0
        dst.write_mask(mask)
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(2020, path.name, "clcd")]))
    coef = load_coefficients(write_coefficients(tmp_path / "k.csv", DENSITY))
    site = albers_site(shapely.box(X0, Y0 - 60, X0 + 60, Y0))  # 4 whole pixels, (0, 0) masked
    r = compute_site(site, catalog, coef)
    assert r.stocks.iloc[0]["nodata_ha"] == pytest.approx(0.09)
    assert r.stocks.iloc[0]["area_ha"] == pytest.approx(0.27)


def test_local_crs_raster_is_refused(tmp_path: Path) -> None:
    local = 'LOCAL_CS["local",UNIT["metre",1]]'
    catalog, coef = setup(tmp_path, crs=local)
    with pytest.raises(InputError, match=r"lc2020\.tif"):
        compute_site(albers_site(), catalog, coef)


def test_empty_crosswalk(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("code,label,carbon_class\n")
    with pytest.raises(InputError, match="legend crosswalk has no rows"):
        load_crosswalk("empty", tmp_path)


def test_year_with_no_data_inside_the_site(tmp_path: Path) -> None:
    catalog, coef = setup(tmp_path, {2020: GOOD, 2021: np.zeros_like(GOOD)})
    with pytest.raises(InputError, match=r"no land-cover data inside the site in map year\(s\) \[2021\]"):
        compute_site(albers_site(), catalog, coef)
    r = compute_site(albers_site(), catalog, coef, years=[2020])  # the way out the message names
    assert r.sinks.empty and len(r.stocks) == 1
