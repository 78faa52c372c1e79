"""Pixel area on the ellipsoid, checked against pyproj.Geod and published figures."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from pyproj import CRS, Geod, Transformer

from carbon.area import pixel_area_m2

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
