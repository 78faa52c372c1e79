"""Pixel area on the ellipsoid, checked against pyproj.Geod and published figures."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from pyproj import CRS, Geod, Transformer

from carbon.rules.area import pixel_area_m2, quadrangle_area_m2

WGS84 = CRS.from_epsg(4326)
CLCD_ALBERS = CRS.from_proj4("+proj=aea +lat_0=0 +lon_0=105 +lat_1=25 +lat_2=47 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs")


def geod_quad_area(lon0: float, lat0: float, dlon: float, dlat: float, n: int = 200) -> float:
    """Geodesic area of a lon/lat box, its parallels densified (pyproj.Geod, independent)."""
    lons = np.concatenate([np.linspace(lon0, lon0 + dlon, n), np.full(n, lon0 + dlon),
                           np.linspace(lon0 + dlon, lon0, n), np.full(n, lon0)])
    lats = np.concatenate([np.full(n, lat0), np.linspace(lat0, lat0 + dlat, n),
                           np.full(n, lat0 + dlat), np.linspace(lat0 + dlat, lat0, n)])
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)
    return abs(area)


@pytest.mark.parametrize(("lat", "expected_m2"), [(0.0, 85.48), (30.5, 73.91)])
def test_worldcover_pixel_area_matches_published_figures(lat: float, expected_m2: float) -> None:
    d = 1 / 12000
    t = Affine(d, 0, 114.0, 0, -d, lat + d / 2)  # pixel centred on ``lat``
    a = pixel_area_m2(WGS84, t, 0, 1, 1)[0, 0]
    assert a == pytest.approx(expected_m2, abs=0.01)
    assert a == pytest.approx(geod_quad_area(114.0, lat - d / 2, d, d), rel=1e-6)


def test_one_degree_cell_matches_geod() -> None:
    a = pixel_area_m2(WGS84, Affine(1, 0, 114, 0, -1, 31), 0, 1, 1)[0, 0]
    assert a / 1e6 == pytest.approx(10642, abs=1)
    assert a == pytest.approx(geod_quad_area(114, 30, 1, 1, n=2000), rel=1e-6)


def test_equal_area_albers_is_exactly_900_m2() -> None:
    a = pixel_area_m2(CLCD_ALBERS, Affine(30, 0, 1_000_020, 0, -30, 3_400_020), 0, 5, 7)
    assert np.all(a == 900.0)


def test_utm_pixel_area_is_corrected_to_the_ellipsoid() -> None:
    utm = CRS.from_epsg(32650)  # Wuhan: 114.3E lies 2.7 degrees from the central meridian 117E
    t = Affine(30, 0, 240_000, 0, -30, 3_380_000)
    areas = pixel_area_m2(utm, t, 0, 3, 3)
    to_ll = Transformer.from_crs(utm, WGS84, always_xy=True)
    for r, c in [(0, 0), (2, 1), (1, 2)]:
        x0, y0 = t @ (c, r)
        xs = np.concatenate([np.linspace(x0, x0 + 30, 20), np.full(20, x0 + 30), np.linspace(x0 + 30, x0, 20), np.full(20, x0)])
        ys = np.concatenate([np.full(20, y0), np.linspace(y0, y0 - 30, 20), np.full(20, y0 - 30), np.linspace(y0 - 30, y0, 20)])
        lon, lat = to_ll.transform(xs, ys)
        expected = abs(Geod(ellps="WGS84").polygon_area_perimeter(lon, lat)[0])
        assert areas[r, c] == pytest.approx(expected, rel=1e-6)
    # the map-unit area (900 m2) is off by almost a tenth of a percent here
    assert abs(areas[0, 0] - 900) / 900 > 5e-4


def geod_pixel_area(crs: CRS, t: Affine, col: int, row: int, n: int = 50) -> float:
    """Independent: the pixel's densified outline taken to lon/lat, its geodesic area on the
    CRS's ellipsoid (pyproj.Geod)."""
    ell = crs.ellipsoid
    lonlat = CRS.from_proj4(f"+proj=longlat +a={ell.semi_major_metre} +b={ell.semi_minor_metre}")
    to_ll = Transformer.from_crs(crs, lonlat, always_xy=True)
    u = np.linspace(0, 1, n, endpoint=False)
    cols = np.concatenate([col + u, np.full(n, col + 1), col + 1 - u, np.full(n, col)])
    rows = np.concatenate([np.full(n, row), row + u, np.full(n, row + 1), row + 1 - u])
    x, y = t @ (cols, rows)
    lon, lat = to_ll.transform(x, y)
    return abs(Geod(a=ell.semi_major_metre, b=ell.semi_minor_metre).polygon_area_perimeter(lon, lat)[0])


@pytest.mark.parametrize(("crs", "transform"), [
    ("EPSG:3857", Affine(30, 0, 12_724_000, 0, -30, 3_568_000)),  # Web Mercator at 30.5 N: spherical scale in PROJ
    ("ESRI:54009", Affine(30, 0, 10_900_000, 0, -30, 3_700_000)),  # Mollweide on WGS 84
    ("EPSG:27572", Affine(30, 0, 600_000, 0, -30, 2_400_000)),  # Lambert II, Paris meridian, grads
    ("EPSG:2056", Affine(100, 0, 2_535_050, 0, -100, 1_160_050)),  # Swiss LV95 (Bessel)
])
def test_pixel_area_matches_geod_in_awkward_crs(crs: str, transform: Affine) -> None:
    c = CRS.from_user_input(crs)
    areas = pixel_area_m2(c, transform, 0, 130, 150)
    for r, col in [(0, 0), (64, 64), (100, 37), (129, 149)]:
        assert areas[r, col] == pytest.approx(geod_pixel_area(c, transform, col, r), rel=1e-6)


def test_web_mercator_map_units_overstate_area_by_a_third() -> None:
    a = pixel_area_m2(CRS.from_epsg(3857), Affine(30, 0, 12_724_000, 0, -30, 3_568_000), 0, 1, 1)[0, 0]
    assert 900 / a == pytest.approx(1.347, abs=0.005)  # 1/cos^2(30.5 N): Web Mercator's areal scale (Snyder 1987)


def test_geographic_grid_in_grads() -> None:
    c = CRS.from_epsg(4807)  # NTF (Paris), angles in grads
    g = 1 / 1000  # grads
    a = pixel_area_m2(c, Affine(g, 0, 0, 0, -g, 50 + g / 2), 0, 1, 1)[0, 0]
    expected = quadrangle_area_m2(np.array([(50 - g / 2) * 0.9]), np.array([(50 + g / 2) * 0.9]), g * 0.9, c)[0]
    assert a == pytest.approx(expected, rel=1e-12)
    assert a == pytest.approx(geod_quad_area(0, (50 - g / 2) * 0.9, g * 0.9, g * 0.9), rel=1e-2)  # ~ WGS84
