"""The density maps written only for a site's report are written at the panels' size: the
pixels a nearest-neighbour read of the full-resolution map takes (``decimated_grid``), in one
small COG per map, never the full map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS

from carbon.io.maps import REPORT_MAP_PX, DensityMapWriter, decimated_grid
from carbon.report.page import MAX_PANEL_PX
from carbon.rules.grid import Grid

YEARS = [2018, 2021, 2024]
GRID = Grid(crs=CRS.from_epsg(32650), transform=Affine(30, 0, 380_000, 0, -30, 3_450_000), width=1303, height=905)


def _write(out_dir: Path, max_px: int | None | str, strips: list[tuple[int, int, np.ndarray | None, dict]],
           taken: bool = False) -> DensityMapWriter:
    """The maps of ``strips``; ``taken``: each strip's densities given only at the pixels the
    writer keeps (``pixels``), as a scan that computes no other gives them."""
    with DensityMapWriter(out_dir, "s", GRID, YEARS, 2018, max_px=max_px) as writer:  # type: ignore[arg-type]
        for row_off, nrows, inside, density in strips:
            if inside is None:
                writer.write_empty(row_off, nrows)
                continue
            at = writer.pixels(row_off, nrows, inside) if taken else None
            for y in YEARS:
                writer.write_year(y, row_off, nrows, inside, density[y] if at is None else density[y][at],
                                  taken=at is not None)
    return writer


@pytest.fixture(scope="module")
def strips() -> list[tuple[int, int, np.ndarray | None, dict]]:
    """The site's rows in strips of 37 (as a scan feeds them): some strips wholly outside the
    site, the others with scattered pixels outside it."""
    rng = np.random.default_rng(7)
    out = []
    for row_off in range(0, GRID.height, 37):
        nrows = min(37, GRID.height - row_off)
        if row_off // 37 in (2, 3, 11):
            out.append((row_off, nrows, None, {}))
            continue
        inside = rng.random((nrows, GRID.width)) < 0.8
        density = {y: rng.uniform(0, 150, int(inside.sum())).astype(np.float32) for y in YEARS}
        out.append((row_off, nrows, inside, density))
    return out


def test_report_maps_hold_the_full_maps_pixels_a_nearest_read_takes(tmp_path: Path, strips: list) -> None:
    full = _write(tmp_path / "full", None, strips)
    small = _write(tmp_path / "small", REPORT_MAP_PX, strips)
    shown, k = decimated_grid(GRID, REPORT_MAP_PX)
    assert k == 4 and MAX_PANEL_PX == REPORT_MAP_PX
    assert [p.name for p in full.paths] == [p.name for p in small.paths] == [
        "s_stock_density_2018.tif", "s_stock_density_2021.tif", "s_stock_density_2024.tif",
        "s_stock_change_2018_2024.tif"]
    for f, s in zip(full.paths, small.paths, strict=True):
        with rasterio.open(f) as a, rasterio.open(s) as b:
            assert (a.width, a.height) == (GRID.width, GRID.height) and a.overviews(1)  # full: COG with overviews
            assert (b.width, b.height) == (shown.width, shown.height) == (326, 227)
            assert b.transform == shown.transform and b.crs == a.crs and np.isnan(b.nodata)
            assert b.profile["blockxsize"] <= 512 and not b.overviews(1)
            # the pixel at the centre of each k x k block (a nearest-neighbour read onto the
            # decimated grid, as the land cover is read: read_site_codes); the last row's
            # centre lies beyond the grid: nodata
            want = a.read(1)[k // 2::k, k // 2::k]
            got = b.read(1)
            assert want.shape == (226, 326)
            np.testing.assert_array_equal(got[:226], want)  # NaN where NaN: outside the site, empty strips
            assert np.isnan(got[226:]).all()
            assert np.isnan(want).any() and np.isfinite(want).any()


def test_report_maps_need_the_density_of_their_own_pixels_only(tmp_path: Path, strips: list) -> None:
    every = _write(tmp_path / "every", REPORT_MAP_PX, strips)
    taken = _write(tmp_path / "taken", REPORT_MAP_PX, strips, taken=True)
    row_off, nrows, inside, _ = strips[0]
    at = taken.pixels(row_off, nrows, inside)
    assert at is not None and 0 < len(at) < inside.sum() / 10  # about one pixel in 16
    for a, b in zip(every.paths, taken.paths, strict=True):
        with rasterio.open(a) as x, rasterio.open(b) as y:
            np.testing.assert_array_equal(x.read(1), y.read(1))
    full = DensityMapWriter(tmp_path / "full", "s", GRID, YEARS, 2018, max_px=None)
    assert full.pixels(row_off, nrows, inside) is None


def test_maps_written_for_a_report_only_are_small_and_maps_asked_for_full(tmp_path: Path, strips: list) -> None:
    report_only = _write(tmp_path / "runs" / "r1" / "report-maps" / "s", "auto", strips)
    asked = _write(tmp_path / "runs" / "r1" / "maps" / "s", "auto", strips)
    assert report_only.decimated and not asked.decimated
    with rasterio.open(report_only.paths[0]) as src:
        assert max(src.width, src.height) <= MAX_PANEL_PX
    with rasterio.open(asked.paths[0]) as src:
        assert (src.width, src.height) == (GRID.width, GRID.height)
    assert not list((tmp_path / "runs").rglob(".*.tmp.tif"))


def test_a_failed_scan_leaves_no_report_map(tmp_path: Path, strips: list) -> None:
    out = tmp_path / "runs" / "r1" / "report-maps" / "s"
    with pytest.raises(RuntimeError), DensityMapWriter(out, "s", GRID, YEARS, 2018) as writer:
        row_off, nrows, inside, density = strips[0]
        writer.write_year(2018, row_off, nrows, inside, density[2018])
        raise RuntimeError("the scan failed")
    assert not list(out.glob("*.tif"))
