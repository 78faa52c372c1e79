"""Prefect flows against a real (test) Prefect server: publishing, incremental runs,
single-site re-runs, partial failure, artifacts, path safety."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import time
from collections import Counter
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from carbon.io.ledger import Ledger
from carbon.io.outputs import OutputDirError, inside
from flows.metering import metering_run, site_run
from tests.conftest import DEMO, write_config

pytestmark = pytest.mark.usefixtures("prefect_server")
SITES = {"wuhan-quarry-reclaim", "jiufeng-forest-park", "liangzi-lakeside-wetland", "daye-mine-wc"}


def ledger_of(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'out' / 'ledger.db'}")


def test_metering_run_publishes_then_skips_unchanged_sites(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml")
    state = metering_run(config=str(cfg), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["n_sites"] == 4 and summary["n_failed"] == 0 and summary["n_skipped"] == 0
    ledger = ledger_of(tmp_path)
    sinks = ledger.current("sinks")
    assert set(sinks["site_id"]) == SITES
    # files: per-site tables (CSV and Parquet) and the run manifest with every input hash
    run_dir = tmp_path / "out" / "runs" / summary["run_id"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    quarry = manifest["sites"]["wuhan-quarry-reclaim"]
    assert quarry["status"] == "succeeded"
    rasters = quarry["inputs"]["years"]["2018"]["rasters"]
    assert all(len(h) == 64 for h in rasters.values())
    # each site's inputs went through the ledger (the batch returns its records without them, the
    # manifest reads them back): exactly the inputs its key was computed from
    for rec in manifest["sites"].values():
        assert hashlib.sha256(json.dumps(rec["inputs"], sort_keys=True).encode()).hexdigest() == rec["input_key"]
    csv = pd.read_csv(run_dir / "sites" / "wuhan-quarry-reclaim" / "sinks.csv")
    parquet = pd.read_parquet(run_dir / "sites" / "wuhan-quarry-reclaim" / "sinks.parquet")
    assert csv["sink_tco2e"].tolist() == pytest.approx(parquet["sink_tco2e"].tolist())

    # one report per published site, linked from the run's markdown artifact
    assert set(summary["reports"]) == SITES
    assert all(Path(p).is_file() and p.endswith("index.html") for p in summary["reports"].values())
    # drawn from the density maps the metering wrote for the reports, kept with the run until a
    # later run publishes the site again: a report drawn again later reads the same maps
    from carbon.io.config import load_config
    from carbon.report.page import site_report

    assert not (run_dir / "maps").exists()  # no maps asked for: only those for the reports
    stocks = ledger.current("stocks")
    full = sinks[sinks["is_full_period"]].set_index("site_id")
    for site_id in SITES:  # every map year's density and the full period's change
        kept = {p.name for p in (run_dir / "report-maps" / site_id).glob("*.tif")}
        start, end = int(full.loc[site_id, "period_start"]), int(full.loc[site_id, "period_end"])
        assert kept == {f"{site_id}_stock_density_{y}.tif" for y in stocks.loc[stocks["site_id"] == site_id, "year"]} | {
            f"{site_id}_stock_change_{start}_{end}.tif"}, kept
    for site_id in ("wuhan-quarry-reclaim", "daye-mine-wc"):
        again = site_report(load_config(cfg), site_id, out_dir=tmp_path / "again" / site_id)
        assert Path(summary["reports"][site_id]).read_text() == again.read_text()
        assert "were not written" not in again.read_text()
        assert (again.parent / "stock_density.png").stat().st_size > 10_000

    again = metering_run(config=str(cfg), return_state=True).result()
    assert again["n_skipped"] == 4
    forced = metering_run(config=str(cfg), force=True, return_state=True).result()
    assert forced["n_skipped"] == 0
    # the first run's report maps are pruned: only the latest published run's are kept
    assert not (run_dir / "report-maps").exists()
    assert len(list((tmp_path / "out" / "runs" / forced["run_id"] / "report-maps").iterdir())) == 4
    hist = ledger.history("daye-mine-wc")
    assert hist["status"].tolist() == ["succeeded", "skipped", "succeeded"]


def test_changed_input_is_recomputed(tmp_path: Path) -> None:
    sites = tmp_path / "sites.geojson"
    shutil.copy(DEMO / "sites.geojson", sites)
    cfg = write_config(tmp_path / "c.toml", sites=sites)
    assert metering_run(config=str(cfg), return_state=True).result()["n_failed"] == 0
    gdf = gpd.read_file(sites)
    idx = gdf.site_id == "daye-mine-wc"
    gdf.loc[idx, "geometry"] = [shapely.buffer(g, -0.0005) for g in gdf.loc[idx].geometry]  # ~50 m inwards
    gdf.to_file(sites, driver="GeoJSON")
    summary = metering_run(config=str(cfg), return_state=True).result()
    outcomes = json.loads(Path(summary["manifest"]).read_text())["sites"]
    assert outcomes["daye-mine-wc"]["status"] == "succeeded"
    assert {s for s, o in outcomes.items() if o["status"] == "skipped"} == SITES - {"daye-mine-wc"}


def test_site_run_adds_a_version_for_that_site_alone(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml")
    metering_run(config=str(cfg), return_state=True)
    ledger = ledger_of(tmp_path)
    before = {s: len(ledger.history(s)) for s in SITES}
    state = site_run(site_id="wuhan-quarry-reclaim", config=str(cfg), years=[2018, 2020, 2024], maps=True,
                     return_state=True)
    assert state.is_completed(), state.message
    after = {s: len(ledger.history(s)) for s in SITES}
    assert after["wuhan-quarry-reclaim"] == before["wuhan-quarry-reclaim"] + 1
    assert all(after[s] == before[s] for s in SITES - {"wuhan-quarry-reclaim"})
    # other map years than the configuration gives the site: a scenario, beside the official
    # estimate, which it does not replace; only its own periods are in it
    official = ledger.current("sinks", "wuhan-quarry-reclaim")
    assert len(official) == 7 and official["scenario"].isna().all()
    sinks = ledger.current("sinks", "wuhan-quarry-reclaim", scenario="years=2018,2020,2024")
    assert sinks["site_run_id"].nunique() == 1
    assert set(map(tuple, sinks[["period_start", "period_end"]].values.tolist())) == {
        (2018, 2020), (2020, 2024), (2018, 2024)}
    assert sinks["is_full_period"].sum() == 1
    run_id = state.result()["run_id"]
    maps = list((tmp_path / "out" / "runs" / run_id / "maps" / "wuhan-quarry-reclaim").glob("*.tif"))
    assert len(maps) == 4  # three density maps and the change map


def test_bad_site_fails_alone_and_the_run_shows_it(tmp_path: Path) -> None:
    gdf = gpd.read_file(DEMO / "sites.geojson")
    bad = gdf.iloc[[0]].copy()
    bad["site_id"] = "far-away"
    bad["geometry"] = bad.translate(xoff=10.0)  # outside every raster
    gdf = pd.concat([gdf, bad], ignore_index=True)
    sites = tmp_path / "sites.geojson"
    gpd.GeoDataFrame(gdf, crs=4326).to_file(sites, driver="GeoJSON")
    cfg = write_config(tmp_path / "c.toml", sites=sites)
    state = metering_run(config=str(cfg), return_state=True)
    assert state.is_failed()
    assert "1 of 5 sites failed (far-away)" in state.message
    ledger = ledger_of(tmp_path)
    assert set(ledger.current("sinks")["site_id"]) == SITES
    hist = ledger.history("far-away")
    assert hist["status"].tolist() == ["failed"]
    assert "outside every raster" in hist["error"].iloc[0]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["metering-run-summary"])))
        table = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["site-sinks"])))
    assert any("far-away" in str(a.data) and "outside every raster" in str(a.data) for a in arts)
    assert any("Site reports" in str(a.data) and "wuhan-quarry-reclaim/index.html" in str(a.data) for a in arts)
    assert table


def test_site_ids_never_make_paths_outside_output_dir(tmp_path: Path) -> None:
    for bad in ("../../../../x", "/etc", "../../../..", "../../../../out/../x"):
        with pytest.raises(OutputDirError):
            inside(tmp_path, "runs", "r", "sites", bad)
    assert inside(tmp_path, "runs", "r", "sites", "ok-site") == tmp_path.resolve() / "runs" / "r" / "sites" / "ok-site"


def test_dask_local_cluster_gives_the_serial_results(tmp_path: Path) -> None:
    from flows.metering import with_dask

    (tmp_path / "serial").mkdir()
    (tmp_path / "dask").mkdir()
    serial_cfg = write_config(tmp_path / "serial" / "c.toml")
    dask_cfg = write_config(tmp_path / "dask" / "c.toml")
    from flows import progress

    heard: list[tuple[str, str]] = []
    unsubscribe = progress.subscribe(lambda site_id, status: heard.append((site_id, status)))
    try:
        assert metering_run(config=str(serial_cfg), reports=False, return_state=True).is_completed()
        serial_heard = [h for h in heard if h[1] != "started"]
        heard.clear()
        state = with_dask(workers=2)(config=str(dask_cfg), return_state=True)  # reports drawn by the flow's pool
    finally:
        unsubscribe()
    assert state.is_completed(), state.message
    # the progress of each site reaches this process, once, from threads and from Dask workers alike
    assert sorted(serial_heard) == sorted((s, "succeeded") for s in SITES)
    assert sorted(heard) == sorted((s, "succeeded") for s in SITES)
    pages = state.result()["reports"]
    assert set(pages) == SITES and all(Path(p).is_file() for p in pages.values()), pages
    cols = ["site_id", "period_start", "period_end", "sink_tco2e", "sink_tco2e_lower90", "sink_tco2e_upper90",
            "conservative_sink_tco2e"]
    serial = Ledger(f"sqlite:///{tmp_path / 'serial' / 'out' / 'ledger.db'}").current("sinks")[cols]
    dask = Ledger(f"sqlite:///{tmp_path / 'dask' / 'out' / 'ledger.db'}").current("sinks")[cols]
    pd.testing.assert_frame_equal(serial.reset_index(drop=True), dask.reset_index(drop=True))


# --- the cost of a site: the sites file read once, one task run per site ------------------


def test_sites_file_is_read_once_per_version_and_again_when_it_changes(tmp_path: Path) -> None:
    from carbon.io import sites as sites_module

    path = tmp_path / "sites.geojson"
    shutil.copy(DEMO / "sites.geojson", path)
    first = sites_module.load_sites(path)
    assert isinstance(first, tuple) and {s.site_id for s in first} == SITES
    assert sites_module.load_sites(path) is first  # the same validated sites, not read again
    assert sites_module.load_sites(str(path)) is first
    with pytest.raises(TypeError, match="read-only"):
        first[0].properties["method"] = "gain_loss"  # shared by every caller: cannot be changed
    with pytest.raises(AttributeError):
        first[0].name = "other"  # type: ignore[misc]

    gdf = gpd.read_file(path)
    gdf.loc[gdf.site_id == "daye-mine-wc", "name"] = "Daye mine, west cut (renamed)"
    gdf.to_file(path, driver="GeoJSON")
    second = sites_module.load_sites(path)
    assert second is not first
    assert {s.site_id: s.name for s in second}["daye-mine-wc"] == "Daye mine, west cut (renamed)"
    assert {s.site_id: s.name for s in first}["daye-mine-wc"] != "Daye mine, west cut (renamed)"

    # a change of the same size (one character) within the same second is a new version too
    text = path.read_text()
    path.write_text(text.replace("(renamed)", "(renamex)"))
    assert {s.site_id: s.name for s in sites_module.load_sites(path)}["daye-mine-wc"].endswith("(renamex)")

    # a file made invalid is read again and refused, not answered from memory
    path.write_text(text.replace('"site_type": "', '"site_type": "not-a-type-', 1))
    from carbon.errors import InputError

    with pytest.raises(InputError, match="sites are invalid"):
        sites_module.load_sites(path)


def test_a_metering_run_reads_the_sites_file_once_and_runs_one_task_per_site(tmp_path: Path,
                                                                             monkeypatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from carbon.io import sites as sites_module

    reads = []
    real = sites_module._read_sites
    monkeypatch.setattr(sites_module, "_read_sites", lambda path: reads.append(path) or real(path))
    sites = tmp_path / "sites.geojson"
    shutil.copy(DEMO / "sites.geojson", sites)
    cfg = write_config(tmp_path / "c.toml", sites=sites)
    state = metering_run(config=str(cfg), reports=False, return_state=True)
    assert state.is_completed(), state.message
    assert len(reads) == 1, reads  # prepare-run and every site share one validated read

    flow_run_id = state.state_details.flow_run_id
    want = {"prepare-run": 1, "meter-batch": len(SITES), "finish-run": 1}  # 4 sites, 4 workers: one site a batch
    deadline = time.monotonic() + 60
    while True:  # task runs reach the server as events: wait until every expected one is there
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        names = Counter(r.task_key.rsplit("-", 1)[0].replace("_", "-") for r in runs)
        if all(names[k] >= n for k, n in want.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert dict(names) == want, names
    assert sorted(r.name for r in runs if r.name.startswith("meter-")) == sorted(f"meter-{s}" for s in SITES)


@pytest.mark.parametrize("batch", [1, 4])
def test_transient_ledger_error_in_publish_is_retried_and_then_succeeds(tmp_path: Path, monkeypatch,
                                                                         batch: int) -> None:
    """Sites one per task run (batch 1) or all four in one task run and one transaction (batch
    4): a transient ledger error is retried; a lasting one on one site's rows fails that site
    alone (a batch is then published site by site)."""
    from carbon.io.ledger import LedgerError
    from carbon.pipeline import loop

    monkeypatch.setenv("CARBON_SINK_BATCH_SITES", str(batch))
    monkeypatch.setattr(loop, "IO_RETRY_DELAYS", (0.05, 0.1, 0.2))
    waits = []
    monkeypatch.setattr(loop, "_sleep", lambda s: waits.append(s) or time.sleep(s))
    calls: Counter[str] = Counter()
    real_publish = Ledger.publish_sites

    def flaky_publish(self, sites):  # noqa: ANN001, ANN202
        ids = [kw["site_id"] for kw in sites]
        calls.update(ids)
        if "daye-mine-wc" in ids and calls["daye-mine-wc"] <= 2:
            raise LedgerError("ledger is locked (database is locked)", transient=True)
        if "jiufeng-forest-park" in ids:
            raise LedgerError("ledger has schema version 3")  # not transient: never tried again
        return real_publish(self, sites)

    monkeypatch.setattr(Ledger, "publish_sites", flaky_publish)
    cfg = write_config(tmp_path / "c.toml")
    state = metering_run(config=str(cfg), reports=False, return_state=True)
    assert state.is_failed()
    assert "1 of 4 sites failed (jiufeng-forest-park)" in state.message
    if batch == 1:
        assert calls["daye-mine-wc"] == 3 and calls["jiufeng-forest-park"] == 1
        assert calls["wuhan-quarry-reclaim"] == 1
    else:  # the batch: tried three times (twice transient), then each site on its own
        assert calls["jiufeng-forest-park"] == 4 and calls["wuhan-quarry-reclaim"] == 4
    assert waits == [0.05, 0.1]  # exponential backoff, only for the transient failures
    ledger = ledger_of(tmp_path)
    for site_id in ("daye-mine-wc", "wuhan-quarry-reclaim", "liangzi-lakeside-wetland"):
        assert ledger.history(site_id)["status"].tolist() == ["succeeded"]
        assert site_id in set(ledger.current("sinks")["site_id"])
    failed = ledger.history("jiufeng-forest-park")
    assert failed["status"].tolist() == ["failed"] and "schema version 3" in failed["error"].iloc[0]


def test_with_retries_gives_up_after_the_last_delay() -> None:
    from carbon.pipeline.loop import with_retries

    tries = []

    def always_busy() -> None:
        tries.append(1)
        raise OSError(errno.EBUSY, "device busy")

    with pytest.raises(OSError, match="device busy"):
        with_retries(always_busy, delays=(0.0, 0.0, 0.0))
    assert len(tries) == 4  # the first try and three retries
    tries.clear()

    def missing() -> None:
        tries.append(1)
        raise FileNotFoundError(errno.ENOENT, "no such file")

    with pytest.raises(FileNotFoundError):
        with_retries(missing, delays=(0.0, 0.0, 0.0))
    assert len(tries) == 1


def test_a_local_dask_run_through_the_cli_has_one_prefect_server(tmp_path: Path) -> None:
    """``carbon-sink run --dask local``: the Dask workers report to the run's one temporary Prefect
    server (before, each worker started a server of its own: three servers on a 2-core machine,
    and Dask was no faster than one process), and publish what a run in one process publishes."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CARBON_SINK_RUNNER": "off", "COLUMNS": "200", "PREFECT_LOGGING_LEVEL": "INFO",
           "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)  # what a scheduler or an analyst's shell has
    cli = str(Path(sys.executable).with_name("carbon-sink"))
    runs = {}
    for name, extra in (("dask", ["--dask", "local", "--workers", "2"]), ("one", ["--processes", "0"])):
        (tmp_path / name).mkdir()
        cfg = write_config(tmp_path / name / "c.toml")
        done = subprocess.run([cli, "run", "--config", str(cfg), "--no-reports", *extra], env=env,
                              capture_output=True, text=True, timeout=600)
        said = done.stdout + done.stderr
        assert done.returncode == 0, said[-3000:]
        runs[name] = said
        assert said.count("Starting temporary server") == 1, said[-3000:]
    # (no check for tracebacks here: at INFO, Dask's own cluster shutdown may log a closed comm's)
    cols = ["site_id", "period_start", "period_end", "sink_tco2e", "sink_tco2e_lower90", "sink_tco2e_upper90",
            "conservative_sink_tco2e"]
    a, b = (Ledger(f"sqlite:///{tmp_path / n / 'out' / 'ledger.db'}").current("sinks")[cols].reset_index(drop=True)
            for n in ("dask", "one"))
    assert sorted(a["site_id"].unique()) == sorted(SITES)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
