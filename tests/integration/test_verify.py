"""``carbon-sink verify``: the hash chain names a row changed behind the ledger's back, and a
run recomputed from its inputs names an input raster whose bytes changed; an untouched
ledger verifies (exit 0). The demo's quarry site, metered by the same loop as the flows."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform
from rasterio.windows import Window
from typer.testing import CliRunner

from carbon.io.config import load_config
from carbon.io.ledger import Ledger
from carbon.pipeline.loop import SiteParams, finish_run, for_each_site, meter_site, start_run
from carbon.pipeline.verify import verify_chain, verify_run
from flows.cli import app
from tests.conftest import DEMO, write_config

runner = CliRunner()
SITE = "wuhan-quarry-reclaim"


@pytest.fixture
def metered(tmp_path: Path) -> Path:
    """The quarry site metered and published; its land-cover maps copied, to be changed."""
    landcover = tmp_path / "landcover"
    shutil.copytree(DEMO / "landcover", landcover)
    cfg = write_config(tmp_path / "c.toml", landcover=landcover / "catalog.csv", output_dir=tmp_path / "out")
    with cfg.open("a", encoding="utf-8") as f:
        f.write("monte_carlo_draws = 500\n")
    ctx = start_run(cfg, [SITE])
    outcomes = for_each_site(ctx.site_ids, lambda s: meter_site(ctx, s, SiteParams()))
    assert finish_run(ctx, outcomes)["status"] == "completed"
    return cfg


def verify(cfg: Path, *args: str):
    result = runner.invoke(app, ["verify", "--config", str(cfg), *args])
    return result, result.output.splitlines()


def test_an_untouched_ledger_verifies(metered: Path) -> None:
    result, lines = verify(metered)
    assert result.exit_code == 0, result.output
    assert lines[0].startswith("chain: 2 record(s), intact; head ")  # the site run and the run's closing
    assert any(line.endswith("inputs, code version and every published table match (relative tolerance 1e-09)")
               for line in lines)
    assert not [line for line in lines if line.startswith("difference")]


def test_a_row_changed_by_raw_sql_is_named(metered: Path) -> None:
    db = load_config(metered).output_dir / "ledger.db"
    with sqlite3.connect(db) as c:
        (site_run_id,) = c.execute("SELECT site_run_id FROM site_runs").fetchone()
        c.execute("UPDATE sinks SET sink_tco2e = sink_tco2e * 2 WHERE period_start = 2018 AND period_end = 2024")
    result, lines = verify(metered)
    assert result.exit_code == 1
    assert lines[0] == (f"chain: 2 record(s); first broken record: sinks (site run {site_run_id}, site {SITE}): "
                        "row period_start=2018 period_end=2024 differs from what was published")
    # the recomputation names the value too
    assert any(line.startswith(f"difference: site {SITE}: sinks period_start=2018 period_end=2024, sink_tco2e: "
                               "ledger ") for line in lines), lines
    assert "1 difference(s)" not in result.output


def test_a_chain_record_removed_or_a_row_added_is_named(metered: Path) -> None:
    url = load_config(metered).ledger_url
    db = load_config(metered).output_dir / "ledger.db"
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM ledger_chain WHERE seq = 1")
        c.execute("INSERT INTO exported_vintages VALUES ('verra', ?, '2018-01-01', '2024-12-31', 1, 2018, 2024, 99)",
                  (SITE,))
    problems = verify_chain(url).problems
    assert problems[0].startswith("ledger_chain 2 (run ") and "a record was removed, inserted or reordered" in problems[0]
    assert f"site_runs 1 (site {SITE}, run " in problems[1] and problems[1].endswith("in no chained record "
                                                                                     "(written around carbon-sink?)")
    assert problems[2] == (f"exported_vintages (registry verra, site {SITE}, vintage 2018-01-01..2024-12-31, site run "
                           "1): in no chained export")
    result, _ = verify(metered, "--chain-only")
    assert result.exit_code == 1 and "3 difference(s)" in result.output


def test_an_input_raster_changed_is_reported_by_the_recomputed_run(metered: Path) -> None:
    cfg = load_config(metered)
    ledger = Ledger(cfg.ledger_url)
    (site_run,) = ledger.run_site_runs(ledger.latest_finished_run()["run_id"])
    recorded = json.loads(site_run["inputs_json"])["years"]["2022"]["rasters"]
    raster = next(p for p in recorded if Path(p).name.startswith("clcd_2022"))
    with rasterio.open(raster, "r+") as ds:  # a block of the quarry turned to water
        (x,), (y,) = transform("EPSG:4326", ds.crs, [114.550103], [30.45])
        row, col = ds.index(x, y)
        window = Window(col - 3, row - 3, 6, 6)
        ds.write(np.full((6, 6), 5, dtype=ds.dtypes[0]), 1, window=window)
    check = verify_run(cfg)
    changed = [d for d in check.differences if f"raster {raster} (2022) changed: recorded " in d]
    assert changed == [d for d in check.differences if "raster" in d] and len(changed) == 1
    assert any(d.startswith(f"site {SITE}: stocks year=2022, stock_tc: ledger ") for d in check.differences)
    result, lines = verify(metered, "--run", check.run_id)
    assert result.exit_code == 1
    assert lines[0].startswith("chain: 2 record(s), intact")  # the ledger itself is untouched
    assert any(f"raster {raster} (2022) changed" in line for line in lines)


def test_an_unknown_run_is_one_clear_line(metered: Path) -> None:
    result = runner.invoke(app, ["verify", "--config", str(metered), "--run", "no-such-run"])
    assert result.exit_code == 3
    assert " ".join(result.output.split()).startswith("error: no run 'no-such-run' in ledger sqlite:///")
    assert "Traceback" not in result.output


def test_a_ledger_without_a_finished_run_checks_its_chain(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", output_dir=tmp_path / "out")
    (tmp_path / "out").mkdir()
    result, lines = verify(cfg)
    assert result.exit_code == 0, result.output
    assert lines[:2] == ["chain: 0 record(s), intact; head " + "0" * 64,
                         "note: no finished run in the ledger: nothing to recompute"]
    assert lines[2].endswith("ledger.db: the chain is intact")
