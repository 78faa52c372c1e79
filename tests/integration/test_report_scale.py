"""The report of a large site reads its rasters decimated to the panels' size: no figure holds
a full-resolution window of the site (the density maps written for it are the panels' size,
the land cover is read a row at a time, only the rows shown), and the land-cover legend still
names every class the run counted, however small its patches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.io
import rasterio.vrt
import shapely
from affine import Affine
from matplotlib.figure import Figure

from carbon.io.config import load_config
from carbon.io.outputs import read_site_tables, run_maps
from carbon.report.page import MAX_PANEL_PX, site_report
from tests.conftest import write_config
from tests.rasters import write_tif

SIZE = 3000
SITE = "big-site"
UTM = "EPSG:32650"
#: CLCD codes of the blocks (cropland, forest, grassland, water, impervious); wetland (9) and
#: shrub (3) only as 2 x 2 patches in a corner, too small for any pixel of a decimated read.
BLOCKS = np.array([1, 2, 4, 5, 8], dtype=np.uint8)
RARE = {2018: 9, 2024: 3}


@pytest.fixture(scope="module")
def big_site(tmp_path_factory) -> Path:
    """A 3000 x 3000 two-year CLCD pair (blocks of 100 px, some changed; a rare class in one
    corner each year), one site over all of it, metered by the real loop (tables and density
    maps kept in the run's folder), 100 Monte Carlo draws."""
    from carbon.pipeline import loop

    folder = tmp_path_factory.mktemp("scale")
    rng = np.random.default_rng(3000)
    coarse = rng.choice(BLOCKS, size=(SIZE // 100, SIZE // 100))
    later = np.where(rng.random(coarse.shape) < 0.2, rng.choice(BLOCKS, size=coarse.shape), coarse)
    transform = Affine(30, 0, 380_000, 0, -30, 3_450_000)
    rows = ["year,path,legend"]
    for year, grid in ((2018, coarse), (2024, later)):
        codes = np.repeat(np.repeat(grid, 100, axis=0), 100, axis=1)
        codes[1:3, 1:3] = RARE[year]
        write_tif(folder / f"lc{year}.tif", codes, crs=UTM, transform=transform)
        rows.append(f"{year},lc{year}.tif,clcd")
    (folder / "catalog.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    left, top = transform.c, transform.f
    box = shapely.box(left, top - 30 * SIZE, left + 30 * SIZE, top)
    gpd.GeoDataFrame({"site_id": [SITE], "name": ["a large site"], "site_type": ["reclaimed_mine"],
                      "ecozone": ["subtropical_humid_asia"], "baseline_year": [2018]},
                     geometry=[box], crs=UTM).to_file(folder / "sites.geojson", driver="GeoJSON")
    cfg_path = write_config(folder / "c.toml", sites=folder / "sites.geojson", landcover=folder / "catalog.csv")
    cfg_path.write_text(cfg_path.read_text() + "monte_carlo_draws = 100\n", encoding="utf-8")
    ctx = loop.start_run(str(cfg_path), None)
    outcomes = [loop.attempt(SITE, lambda: loop.meter_site(ctx, SITE, loop.SiteParams(), report_maps=True))]
    assert [o.status for o in outcomes] == ["succeeded"], [o.error for o in outcomes]
    loop.finish_run(ctx, outcomes)
    return cfg_path


def _run_folder(cfg: Any) -> tuple[Path, Path]:
    from carbon.io.ledger import Ledger

    run_id = str(Ledger(cfg.ledger_url).current("stocks", SITE)["run_id"].iloc[0])
    return cfg.output_dir / "runs" / run_id / "sites" / SITE, run_maps(cfg.output_dir, run_id, SITE)


def test_the_report_of_a_large_site_reads_no_full_resolution_array(big_site: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(big_site)
    _, maps = _run_folder(cfg)
    density = sorted(maps.glob("*.tif"))
    assert len(density) == 3
    for p in density:  # written for the report only: at the panels' size (carbon/io/maps.py)
        with rasterio.open(p) as src:
            assert max(src.width, src.height) <= MAX_PANEL_PX and src.width * 8 >= SIZE, (src.width, src.height)

    shapes: list[tuple[str, tuple[int, ...]]] = []

    def recording(cls: type, name: str) -> None:
        original = getattr(cls, name)

        def read(self: Any, *args: Any, **kwargs: Any) -> Any:
            out = original(self, *args, **kwargs)
            shapes.append((f"{cls.__name__}.{name} {self.name}", np.shape(out)))
            return out

        monkeypatch.setattr(cls, name, read)

    for cls in (rasterio.io.DatasetReader, rasterio.vrt.WarpedVRT):
        for name in ("read", "read_masks"):
            recording(cls, name)
    page = site_report(cfg, SITE, out_dir=tmp_path / "report")
    text = page.read_text(encoding="utf-8")
    assert "cannot be read" not in text and "were not written" not in text
    for png in ("land_cover.png", "stock_density.png", "stock_by_pool.png"):
        assert (page.parent / png).stat().st_size > 10_000
    read_files = {what.split(" ", 1)[1] for what, _ in shapes}
    assert any("lc2018.tif" in f for f in read_files) and any("stock_density" in f for f in read_files), shapes
    # the density maps are read whole: they are the panels' size
    maps_read = [(what, shape) for what, shape in shapes if "stock_" in what]
    assert maps_read and all(max(shape[-2:]) <= MAX_PANEL_PX for _, shape in maps_read), maps_read
    # the land cover one row of the decimated grid at a time (every k-th row, k = 8 here): no
    # read holds more than a row, and each raster gives the figure an eighth of its pixels
    k = -(-SIZE // MAX_PANEL_PX)
    for year in (2018, 2024):
        reads = [shape for what, shape in shapes if f"lc{year}.tif" in what]
        assert reads and all(shape[-2] == 1 for shape in reads), reads
        assert sum(int(np.prod(shape)) for shape in reads) <= -(-SIZE // k) * SIZE * 2  # values and masks


def test_the_decimated_land_cover_figure_names_every_class_present(big_site: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from carbon.io.sites import load_sites
    from carbon.io.tables import load_catalog, load_coefficients
    from carbon.pipeline.plan import read_site_codes
    from carbon.rules.site import select_sites

    cfg = load_config(big_site)
    site_dir, _ = _run_folder(cfg)
    by_code = read_site_tables(site_dir)["area_by_code"]
    counted = {int(c) for c in by_code["code"]}
    assert set(RARE.values()) <= counted
    # the rare classes are in no pixel of the decimated read: only the run's table names them
    site = select_sites(load_sites(cfg.sites), [SITE])[0]
    _, _, codes = read_site_codes(site, load_catalog(cfg.landcover), load_coefficients(cfg.coefficients),
                                  years=[2018, 2024], max_px=MAX_PANEL_PX)
    for values, valid, _ in codes.values():
        assert max(values.shape) <= MAX_PANEL_PX
        assert not set(RARE.values()) & {int(c) for c in np.unique(values[valid])}

    legends: list[list[str]] = []
    original = Figure.legend

    def legend(self: Figure, *args: Any, **kwargs: Any) -> Any:
        legends.append([h.get_label() for h in kwargs.get("handles", [])])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "legend", legend)
    site_report(cfg, SITE, out_dir=tmp_path / "report")
    land_cover = [labels for labels in legends if labels]  # the land-cover figure's legend
    assert len(land_cover) == 1, legends
    named = {int(label.split(" ", 1)[0]) for label in land_cover[0]}
    assert named == counted, (land_cover, counted)
