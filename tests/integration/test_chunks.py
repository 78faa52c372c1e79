"""Large sites in chunks: the dask-chunked land-cover stack and the threaded chunk sums give
the same tables as one pass over the site, on real rasters (../shared/datasets); the
compiled kernel agrees with plain numpy arithmetic written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from carbon.errors import InputError
from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline import scan
from carbon.pipeline.plan import class_names_of, plan_site, reference_grid
from carbon.pipeline.site import compute_site
from carbon.rules import kernels
from carbon.rules.grid import site_grid, to_crs
from carbon.rules.policies import site_dynamics
from carbon.rules.results import SiteResult
from tests.conftest import write_catalog
from tests.integration.test_real_data import box_site, swiss  # noqa: F401 (a fixture)


def _tables_equal(a: SiteResult, b: SiteResult) -> None:
    """Equal up to the order of float sums: 1e-9 relative, or 1e-12 of the table's largest
    value (a change is a difference of stocks a million times larger)."""
    for name, left in a.tables().items():
        right = b.tables()[name]
        scale = float(left.select_dtypes("float").abs().max().max()) if len(left) else 0.0
        assert list(left.columns) == list(right.columns), name
        assert len(left) == len(right), name
        for col in left.columns:
            if pd.api.types.is_float_dtype(left[col]):
                np.testing.assert_allclose(left[col].to_numpy(), right[col].to_numpy(), rtol=1e-9, atol=1e-12 * scale,
                                           err_msg=f"{name}.{col}")
            else:
                assert left[col].tolist() == right[col].tolist(), f"{name}.{col}"


def _chunked(monkeypatch: pytest.MonkeyPatch, cells: int) -> None:
    monkeypatch.setattr(scan, "CHUNK_CELLS", cells)
    monkeypatch.setattr(scan, "THREADS", 2)


@pytest.fixture
def willamette(shared: Path, tmp_path: Path):
    d = shared / "invest_willamette"
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(2000, d / "lulc_samp_cur.tif", "lucode"),
                                                               (2030, d / "lulc_samp_fut.tif", "lucode")]))
    return d, catalog, load_coefficients(d / "carbon_pools_willamette.csv")


def test_chunked_stock_difference_equals_one_pass_and_numpy_counts(willamette, monkeypatch) -> None:
    d, catalog, coef = willamette
    site = box_site(d / "lulc_samp_cur.tif")
    monkeypatch.setattr(scan, "THREADS", 1)
    serial = compute_site(site, catalog, coef, draws=500)  # one strip
    _chunked(monkeypatch, 100_000)  # 1889 x 1325 pixels in 256 x 256 tiles: chunks of 256 rows
    calls: list[int] = []
    real = scan.scan_rows

    def spy(plan, row0, row1, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(row0)
        return real(plan, row0, row1, *args, **kwargs)

    monkeypatch.setattr(scan, "scan_rows", spy)
    chunked = compute_site(site, catalog, coef, draws=500, max_cells=20_000)
    assert sorted(calls) == list(range(0, 1889, 256))  # cut where the tiles are  # it did run in chunks
    _tables_equal(serial, chunked)
    assert serial.provenance["years"] == chunked.provenance["years"]  # the same codes digest, so the same draws
    assert serial.provenance["monte_carlo"] == chunked.provenance["monte_carlo"]
    # pixel counts by code: numpy on the file
    with rasterio.open(d / "lulc_samp_cur.tif") as src:
        a = src.read(1)
    v, n = np.unique(a[a != 255], return_counts=True)
    got = chunked.area_by_code.query("year == 2000").set_index("code")["pixel_count"]
    assert got.to_dict() == {int(c): int(k) for c, k in zip(v, n, strict=True)}


def test_chunked_gain_loss_on_four_swiss_epochs_equals_one_pass(swiss, monkeypatch) -> None:
    d, catalog, coef, legends = swiss
    site = box_site(d / "AS18_17.tif")
    monkeypatch.setattr(scan, "THREADS", 1)
    serial = compute_site(site, catalog, coef, legends_dir=legends, method="gain_loss", draws=500)
    _chunked(monkeypatch, 300_000)
    chunked = compute_site(site, catalog, coef, legends_dir=legends, method="gain_loss", draws=500, max_cells=50_000)
    _tables_equal(serial, chunked)
    assert serial.provenance["flicker_filtered_ha"] == pytest.approx(chunked.provenance["flicker_filtered_ha"])


def test_site_landcover_is_a_lazy_chunked_stack_of_the_rasters(willamette) -> None:
    d, catalog, coef = willamette
    site = box_site(d / "lulc_samp_cur.tif")
    year_meta = plan_site(site, catalog, coef)
    years = sorted(year_meta)
    class_names = class_names_of(coef, year_meta)
    ref_year, ref = reference_grid(site, year_meta)
    grid = site_grid(ref, to_crs(site.geometry, site.crs, ref.crs))
    plan = scan.ScanPlan.build(year_meta, years, [(years[0], years[1])], class_names, site_dynamics(site, coef), grid,
                               to_crs(site.geometry, site.crs, ref.crs), scan.DEFAULT_MAX_CELLS, ref)
    ds = scan.site_landcover(plan, 500)
    assert ds["code"].chunks[1] == (500, 500, 500, 389)  # rows in chunks, nothing read yet
    assert ds.sizes == {"year": 2, "y": 1889, "x": 1325}
    for i, f in enumerate(("lulc_samp_cur.tif", "lulc_samp_fut.tif")):
        with rasterio.open(d / f) as src:
            a = src.read(1)
            assert ds["x"].values[0] == pytest.approx(src.transform.c + src.transform.a / 2)
        np.testing.assert_array_equal(ds["code"].isel(year=i).values, a)
        np.testing.assert_array_equal(ds["valid"].isel(year=i).values, a != 255)


def _numpy_reference(codes, valid, table, class_of_code, n_codes, area, cov, k):  # noqa: ANN001, ANN202
    """The same sums, written with numpy only: per year, the weighted area and count of each
    crosswalk row, nodata, unknown codes; the (class, class) transition areas."""
    inside = cov > 0
    w = (area * cov)[inside] / 1e4
    rows = []
    out = {"code_area": [], "pixels": [], "nodata": [], "unknown": []}
    for y in range(codes.shape[0]):
        row = table[y][codes[y].astype(np.int64)][inside]
        v = valid[y][inside]
        known = v & (row < n_codes[y])
        out["code_area"].append(np.bincount(row[known], weights=w[known], minlength=n_codes[y]))
        out["pixels"].append(np.bincount(row[known], minlength=n_codes[y]))
        out["nodata"].append(w[~known].sum())
        out["unknown"].append(int((v & ~known).sum()))
        rows.append(np.where(known, class_of_code[y][np.where(known, row, 0)], -1))
    both = (rows[0] >= 0) & (rows[1] >= 0)
    out["trans"] = np.bincount(rows[0][both] * k + rows[1][both], weights=w[both], minlength=k * k).reshape(k, k)
    out["site"] = w.sum()
    out["classes"] = rows
    return out


@pytest.mark.parametrize("use_cov", [False, True])
def test_kernel_matches_numpy(use_cov: bool) -> None:
    rng = np.random.default_rng(7)
    n_years, nrows, ncols, k = 2, 37, 213, 5
    codes = rng.integers(0, 12, size=(n_years, nrows, ncols)).astype(np.uint8)  # codes 10, 11: unknown
    valid = rng.random((n_years, nrows, ncols)) > 0.1
    n_codes = np.array([10, 10])
    table = np.full((n_years, 256), 10, dtype=np.int64)
    table[:, :10] = np.arange(10)
    class_of_code = np.tile(np.arange(10) % k, (n_years, 1)).astype(np.int64)
    # areas from two node rows (like carbon.rules.area.StripAreas) and a coverage with holes
    ratio = np.stack([1 + 1e-3 * np.linspace(0, 1, ncols), 1 + 2e-3 * np.linspace(1, 0, ncols)])
    t = np.linspace(0, 1, nrows)
    row_m2 = np.full(nrows, 900.0)
    area = row_m2[:, None] * (ratio[0] * (1 - t)[:, None] + ratio[1] * t[:, None])
    cov = np.clip(rng.random((nrows, ncols)) * 1.5 - 0.25, 0, 1) if use_cov else np.ones((nrows, ncols))
    ref = _numpy_reference(codes, valid, table, class_of_code, n_codes, area, cov, k)

    code_area, pixels = np.zeros((n_years, 10)), np.zeros((n_years, 10), dtype=np.int64)
    nodata, unknown, trans = np.zeros(n_years), np.zeros(n_years, dtype=np.int64), np.zeros((1, k, k))
    classes, weight = np.empty((n_years, nrows * ncols), dtype=np.int32), np.empty(nrows * ncols)
    site = kernels.accumulate_strip(codes, valid, table, np.zeros(n_years, dtype=np.int64), n_codes, class_of_code,
                                    row_m2, ratio, np.zeros(nrows, dtype=np.int64), t,
                                    cov if use_cov else np.ones((1, 1)), use_cov, np.array([[0, 1]]),
                                    code_area, pixels, nodata, unknown, trans, classes, weight, True)
    assert site == pytest.approx(ref["site"], rel=1e-12)
    np.testing.assert_allclose(code_area, np.stack(ref["code_area"]), rtol=1e-12)
    np.testing.assert_array_equal(pixels, np.stack(ref["pixels"]))
    np.testing.assert_allclose(nodata, ref["nodata"], rtol=1e-12)
    assert unknown.tolist() == ref["unknown"]
    np.testing.assert_allclose(trans[0], ref["trans"], rtol=1e-12)
    inside = (cov > 0).reshape(-1)
    for y in range(n_years):
        np.testing.assert_array_equal(classes[y][inside], ref["classes"][y])
        assert (classes[y][~inside] == kernels.INVALID).all()
    np.testing.assert_allclose(weight[inside], ((area * cov) / 1e4).reshape(-1)[inside], rtol=1e-12)


def test_chunks_are_cut_where_the_reference_tiles_are(monkeypatch) -> None:
    from types import SimpleNamespace

    from affine import Affine

    monkeypatch.setattr(scan, "CHUNK_CELLS", 1000 * 600)
    ref = SimpleNamespace(block_height=256, transform=Affine(30, 0, 0, 0, -30, 0))
    # the site grid starts at raster row 100: tiles end at grid rows 156, 412, 668, ...
    grid = SimpleNamespace(width=1000, height=1500, transform=Affine(30, 0, 0, 0, -30, -3000))
    bounds = scan.chunk_bounds(SimpleNamespace(grid=grid, ref=ref))
    assert bounds == [0, 412, 924, 1436, 1500]  # 512 rows each (600 rounded down to whole tiles)
    assert all((b + 100) % 256 == 0 for b in bounds[1:-1])


def test_chunked_polygon_site_with_boundary_pixels_equals_one_pass(willamette, monkeypatch) -> None:
    d, catalog, coef = willamette
    with rasterio.open(d / "lulc_samp_cur.tif") as src:
        cx, cy = (src.bounds.left + src.bounds.right) / 2, (src.bounds.bottom + src.bounds.top) / 2
        site = box_site(d / "lulc_samp_cur.tif")
    import shapely

    from carbon.rules.site import Site

    circle = Site("circle", "circle", "other", "*", shapely.Point(cx, cy).buffer(20_000, quad_segs=64), site.crs)
    monkeypatch.setattr(scan, "THREADS", 1)
    serial = compute_site(circle, catalog, coef, draws=500)
    _chunked(monkeypatch, 100_000)
    monkeypatch.setattr(scan, "THREADS", 3)
    chunked = compute_site(circle, catalog, coef, draws=500, max_cells=20_000)
    _tables_equal(serial, chunked)
    # partial pixels count by their share: the area is the circle's, not a whole number of pixels
    assert chunked.provenance["site_area_ha"] == pytest.approx(serial.provenance["site_area_ha"], rel=1e-12)
    assert chunked.provenance["site_area_ha"] % 0.09 != pytest.approx(0, abs=1e-6)


def test_a_failing_chunk_fails_the_site_after_the_other_chunks_end(willamette, monkeypatch) -> None:
    d, catalog, coef = willamette
    site = box_site(d / "lulc_samp_cur.tif")
    _chunked(monkeypatch, 100_000)
    real = scan.scan_rows
    ended: list[int] = []

    def flaky(plan, row0, row1, *args, **kwargs):  # noqa: ANN001, ANN202
        if row0 == 256:
            raise InputError("cannot read raster (corrupt or truncated?)", path="tile.tif")
        out = real(plan, row0, row1, *args, **kwargs)
        ended.append(row0)
        return out

    monkeypatch.setattr(scan, "scan_rows", flaky)
    with pytest.raises(InputError, match="corrupt or truncated"):
        compute_site(site, catalog, coef, draws=100)
    assert sorted(ended) == [r for r in range(0, 1889, 256) if r != 256]  # every other chunk ran to its end
