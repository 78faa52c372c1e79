"""The sites as a GIS layer (GeoPackage, GeoParquet): written by `carbon-sink results --format
gpkg|geoparquet --out FILE` and by every metering run beside its manifest, read back with
pyogrio and geopandas and compared with the ledger's numbers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
from typer.testing import CliRunner

from carbon.io.config import load_config
from carbon.io.layers import RUN_LAYER, site_layer, write_layer
from carbon.io.ledger import Ledger
from carbon.io.sites import load_sites
from carbon.pipeline.loop import SiteParams, finish_run, meter_site, start_run
from flows.cli import app
from tests.conftest import publish, write_config

runner = CliRunner()
SITES = ["daye-mine-wc", "wuhan-quarry-reclaim"]


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    cfg = write_config(tmp_path_factory.mktemp("layers") / "c.toml")
    publish(cfg, SITES)
    return cfg


def _check_against_ledger(layer: gpd.GeoDataFrame, cfg_path: Path, site_ids: list[str]) -> None:
    cfg = load_config(cfg_path)
    ledger = Ledger(cfg.ledger_url)
    sinks = ledger.current("sinks")
    sinks = sinks[sinks["is_full_period"]].set_index("site_id")
    stocks = ledger.current("stocks")
    sites = {s.site_id: s for s in load_sites(cfg.sites)}
    assert sorted(layer["site_id"]) == sorted(site_ids)
    assert layer.crs is not None and layer.crs.equals(sites[site_ids[0]].crs)
    for row in layer.itertuples():
        sink = sinks.loc[row.site_id]
        for f in ("sink_tco2e", "sink_tco2e_lower90", "sink_tco2e_upper90", "conservative_sink_tco2e", "area_ha"):
            assert getattr(row, f) == pytest.approx(float(sink[f]), rel=1e-12), (row.site_id, f)
        assert (row.period_start, row.period_end) == (int(sink["period_start"]), int(sink["period_end"]))
        assert row.run_id == sink["run_id"]
        years = stocks[stocks["site_id"] == row.site_id].set_index("year")["stock_tc"]
        assert row.first_year == years.index.min() and row.last_year == years.index.max()
        assert row.stock_first_tc == pytest.approx(years.iloc[0], rel=1e-12)
        assert row.stock_last_tc == pytest.approx(years.iloc[-1], rel=1e-12)
        assert row.geometry.equals_exact(sites[row.site_id].geometry, 1e-9)


@pytest.mark.parametrize("fmt", ["gpkg", "geoparquet"])
def test_results_writes_a_layer_that_reads_back_as_the_ledger(published: Path, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / ("sites.gpkg" if fmt == "gpkg" else "sites.parquet")
    result = runner.invoke(app, ["results", "--config", str(published), "--format", fmt, "--out", str(path)])
    assert result.exit_code == 0, result.output
    assert f"wrote {path}: 2 site(s), EPSG:4326" in result.output
    if fmt == "gpkg":
        assert pyogrio.list_layers(path)[:, 0].tolist() == ["sites"]
        layer = pyogrio.read_dataframe(path)
    else:
        layer = gpd.read_parquet(path)
    _check_against_ledger(layer, published, SITES)
    one = runner.invoke(app, ["results", "--config", str(published), "--format", fmt, "--out", str(path),
                              "--site", "daye-mine-wc"])
    assert one.exit_code == 0, one.output
    assert (gpd.read_file(path) if fmt == "gpkg" else gpd.read_parquet(path))["site_id"].tolist() == ["daye-mine-wc"]


def test_layer_options_are_checked(published: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["results", "--config", str(published), "--format", "gpkg"]).exit_code == 2
    assert runner.invoke(app, ["results", "--config", str(published), "--out", str(tmp_path / "x.gpkg")]).exit_code == 2
    bad = runner.invoke(app, ["results", "--config", str(published), "--format", "gpkg", "--out",
                              str(tmp_path / "no-folder" / "x.gpkg")])
    assert bad.exit_code == 3 and "existing folder" in " ".join(bad.output.split())


def test_sites_in_several_crs_are_written_in_epsg_4326(published: Path, tmp_path: Path) -> None:
    cfg = load_config(published)
    sites = list(load_sites(cfg.sites))
    utm = gpd.GeoSeries([sites[0].geometry], crs=sites[0].crs).to_crs(32650)
    sites[0] = dataclasses.replace(sites[0], geometry=utm.iloc[0], crs=utm.crs)
    layer = site_layer(Ledger(cfg.ledger_url), sites)
    assert layer.crs.to_epsg() == 4326
    back = pyogrio.read_dataframe(write_layer(layer, tmp_path / "mixed.gpkg"))
    moved = back.set_index("site_id")
    assert "EPSG:32650" in set(moved["source_crs"]) and "EPSG:4326" in set(moved["source_crs"])
    utm_site = sites[0].site_id
    original = next(s for s in load_sites(cfg.sites) if s.site_id == utm_site)
    assert moved.loc[utm_site, "geometry"].symmetric_difference(original.geometry).area < 1e-12


def test_a_metering_run_writes_the_layer_beside_its_manifest(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path / "c.toml")
    ctx = start_run(str(cfg_path), ["daye-mine-wc"])
    outcome = meter_site(ctx, "daye-mine-wc", SiteParams())
    summary = finish_run(ctx, [outcome])
    manifest = Path(summary["manifest"])
    layer_path = manifest.parent / RUN_LAYER
    assert layer_path.is_file()
    layer = pyogrio.read_dataframe(layer_path)
    _check_against_ledger(layer, cfg_path, ["daye-mine-wc"])
    assert layer["run_id"].tolist() == [json.loads(manifest.read_text())["run_id"]]

