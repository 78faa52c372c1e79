"""Sites metered in batches (one contract check and one ledger transaction per batch) publish
exactly what the same sites publish one by one: real municipalities of the Swiss
Arealstatistik (../shared/datasets), four map years."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from carbon.io.config import load_config
from carbon.io.ledger import Ledger
from carbon.io.outputs import read_site_tables
from carbon.pipeline import loop
from tests.conftest import ALL_CLASSES, write_catalog, write_coefficients, write_config, write_legend
from tests.integration.test_real_data import DENSITY, SWISS_LEGEND, YEARS

TABLES = ("stocks", "sinks", "transitions", "class_areas")  # the ledger's; the run folders hold every table
#: what differs between two publications of the same estimate: the run and when
RUN_COLUMNS = ["run_id", "created_at", "site_run_id", "code_version"]
N_SITES = 12


def _config(shared: Path, tmp_path: Path, name: str, extra_sites: list[dict] | None = None) -> Path:
    d = shared / "swiss_arealstatistik_as17"
    muni = gpd.read_file(d / "boundaries" / "municipalities_in_study_extent.gpkg")
    muni = muni.sort_values("GMDNR").head(N_SITES)
    sites = gpd.GeoDataFrame({
        "site_id": [f"ch-{n}" for n in muni["GMDNR"]], "name": muni["GMDNAME"].tolist(),
        "site_type": "forest", "ecozone": "*"}, geometry=muni.geometry.values, crs=muni.crs)
    if extra_sites:
        sites = pd.concat([sites, gpd.GeoDataFrame(extra_sites, crs=muni.crs)], ignore_index=True)
    folder = tmp_path / name
    folder.mkdir()
    sites.to_file(folder / "sites.gpkg")
    catalog = write_catalog(folder / "catalog.csv", [(y, d / f, "arealstatistik17") for y, f in YEARS.items()])
    write_legend(folder / "legends" / "arealstatistik17.csv", SWISS_LEGEND)
    coef = write_coefficients(folder / "coefficients.csv", {**{c: {} for c in ALL_CLASSES}, **DENSITY})
    cfg = write_config(folder / "c.toml", sites=folder / "sites.gpkg", landcover=catalog, coefficients=coef)
    cfg.write_text(cfg.read_text() + f'legends = "{folder / "legends"}"\nmonte_carlo_draws = 2000\n')
    return cfg


def _published(cfg: Path) -> dict[str, pd.DataFrame]:
    ledger = Ledger(load_config(cfg).ledger_url)
    return {name: ledger.current(name).drop(columns=RUN_COLUMNS, errors="ignore").reset_index(drop=True)
            for name in TABLES}


def _meter(cfg: Path, batch: int) -> list[loop.Outcome]:
    ctx = loop.start_run(str(cfg))
    ids = list(ctx.site_ids)
    outcomes: list[loop.Outcome] = []
    for i in range(0, len(ids), batch):
        outcomes += loop.meter_sites(ctx, ids[i:i + batch], loop.SiteParams())
    loop.finish_run(ctx, outcomes)
    return outcomes


def test_a_batch_publishes_what_the_sites_publish_one_by_one(shared: Path, tmp_path: Path) -> None:
    one = _meter(_config(shared, tmp_path, "one", None), batch=1)
    many = _meter(_config(shared, tmp_path, "many", None), batch=N_SITES)
    assert [o.status for o in one] == [o.status for o in many] == ["succeeded"] * N_SITES
    a, b = _published(tmp_path / "one" / "c.toml"), _published(tmp_path / "many" / "c.toml")
    assert len(a["sinks"]) >= N_SITES * 3  # three periods a site, and the whole period
    for name in TABLES:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)
    for x, y in zip(one, many, strict=True):  # every table the run wrote, CSV and Parquet alike
        tx, ty = (read_site_tables(Path(o.value["site_dir"])) for o in (x, y))
        assert sorted(tx) == sorted(ty) and len(tx) == 7
        for name in tx:
            pd.testing.assert_frame_equal(tx[name], ty[name], check_exact=True, obj=f"{x.site_id} {name}")
        assert (Path(x.value["site_dir"]) / "stocks.csv").read_text() == (Path(y.value["site_dir"]) / "stocks.csv").read_text()
    # the same sites in one transaction: one ledger row per site, every one succeeded
    ledger = Ledger(load_config(tmp_path / "many" / "c.toml").ledger_url)
    assert sorted(ledger.current("sinks")["site_id"].unique()) == sorted(o.site_id for o in many)


def test_a_bad_site_in_a_batch_fails_alone(shared: Path, tmp_path: Path) -> None:
    import shapely

    outside = {"site_id": "nowhere", "name": "off the map", "site_type": "forest", "ecozone": "*",
               "geometry": shapely.box(2400000, 1300000, 2401000, 1301000)}  # north-west of the rasters
    cfg = _config(shared, tmp_path, "bad", [outside])
    outcomes = _meter(cfg, batch=N_SITES + 1)
    status = {o.site_id: o.status for o in outcomes}
    assert status.pop("nowhere") == "failed"
    assert set(status.values()) == {"succeeded"}
    bad = next(o for o in outcomes if o.site_id == "nowhere")
    assert bad.error is not None
    ledger = Ledger(load_config(cfg).ledger_url)
    assert ledger.history("nowhere")["status"].tolist() == ["failed"]
    # the other sites' estimates are those of a batch without the bad site
    good = _meter(_config(shared, tmp_path, "good", None), batch=N_SITES)
    assert all(o.status == "succeeded" for o in good)
    a, b = _published(cfg), _published(tmp_path / "good" / "c.toml")
    for name in TABLES:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


@pytest.mark.prefect
def test_the_metering_flow_in_batches_publishes_the_same_estimates(shared: Path, tmp_path: Path, prefect_server,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.metering import batches_of, metering_run

    monkeypatch.setenv("CARBON_SINK_BATCH_SITES", "5")
    assert [len(b) for b in batches_of([f"s{i}" for i in range(N_SITES)], 4)] == [5, 5, 2]
    cfg = _config(shared, tmp_path, "flow", None)
    state = metering_run(config=str(cfg), reports=False, return_state=True)
    assert state.is_completed(), state.message
    _meter(_config(shared, tmp_path, "loop", None), batch=1)
    a, b = _published(cfg), _published(tmp_path / "loop" / "c.toml")
    for name in TABLES:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


def test_the_batch_check_names_the_sites_whose_tables_disagree_and_only_those(shared: Path, tmp_path: Path) -> None:
    """The batch's contract check sums the whole batch's tables at once and checks only the
    sites it singles out one by one: each broken sum (a class area, an area by code, a class
    stock, a class-areas row, the nodata area, a transition, a sink area above the site's)
    is found on its own site, with the messages the site's own check gives, and no other."""
    from carbon.errors import OutputValidationError
    from schemas._validate import failure_messages
    from schemas.outputs import MODELS, validate_site_result, validate_site_results

    cfg = load_config(_config(shared, tmp_path, "check", None))
    results = loop.compute_config(cfg).results
    rs = list(results.values())
    assert len(rs) == N_SITES
    assert validate_site_results(rs) == {}

    def bump(df: pd.DataFrame, column: str, by: float, row: int = 0) -> None:
        df.loc[df.index[row], column] = df.loc[df.index[row], column] + by

    bump(rs[0].stocks_by_class, "area_ha", 0.5)                       # class areas off the site's
    bump(rs[1].area_by_code, "area_ha", 0.01)                          # areas by code off
    for column in ("stock_agb_tc", "stock_tc"):                         # class stocks off the site's
        bump(rs[2].stocks_by_class, column, 1.0)
    for column in ("area_ha", "area_adjusted_ha", "area_adjusted_ha_lower95", "area_adjusted_ha_upper95"):
        bump(rs[3].class_areas, column, 0.5)                           # class-areas rows off the site's
    bump(rs[4].stocks, "nodata_ha", 0.25)                              # area + nodata != the site's
    bump(rs[5].transitions, "area_ha", 0.3)                            # transitions off the sink area
    rs[6].provenance["site_area_ha"] = float(rs[6].sinks["area_ha"].max()) / 2  # sink area above the site's
    for name, model in MODELS.items():  # every row still meets its own contract: the batch's sums must find them
        _, msgs = failure_messages(model, pd.concat([r.tables()[name] for r in rs], ignore_index=True), where=name,
                                   row_offset=0)
        assert msgs == []
    broken = validate_site_results(rs)
    assert sorted(broken) == sorted(r.site_id for r in rs[:7])
    for r in rs[:7]:
        with pytest.raises(OutputValidationError) as one:
            validate_site_result(r)
        assert broken[r.site_id] == one.value.problems
    for r in rs[7:]:
        validate_site_result(r)  # the others are sound


def test_a_run_in_worker_processes_publishes_what_the_loop_publishes(shared: Path, tmp_path: Path) -> None:
    """``carbon-sink run --processes 2`` (what a run of 200 sites or more does on two cores):
    the batches go to two worker processes, which report to the run's one Prefect server; the
    published estimates equal the one-by-one loop's exactly, a bad site fails alone with its
    one line, and the run says so."""
    import os
    import subprocess
    import sys

    import shapely

    from flows.metering import PROCESS_MIN_SITES, processes_for

    assert processes_for(PROCESS_MIN_SITES - 1) == 0 and processes_for(5, 2) == 2 and processes_for(10_000, 0) == 0
    outside = {"site_id": "nowhere", "name": "off the map", "site_type": "forest", "ecozone": "*",
               "geometry": shapely.box(2400000, 1300000, 2401000, 1301000)}
    cfg = _config(shared, tmp_path, "procs", [outside])
    env = {**os.environ, "CARBON_SINK_BATCH_SITES": "4", "CARBON_SINK_RUNNER": "off", "COLUMNS": "200",
           "PREFECT_LOGGING_LEVEL": "DEBUG"}
    env.pop("PREFECT_API_URL", None)  # the run's own temporary server, shared by its workers
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # an analyst's own, as the CLI would meet it
    cli = str(Path(sys.executable).with_name("carbon-sink"))
    done = subprocess.run([cli, "run", "--config", str(cfg), "--no-reports", "--processes", "2"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]  # one site failed: the run is partial
    said = done.stdout + done.stderr
    assert "1 failed" in said and "site nowhere failed: the site lies outside every raster" in said, said[-4000:]
    assert "Traceback" not in said
    assert said.count("Starting temporary server") == 1  # the workers report to the run's server
    assert "Submitting task meter-sites to process pool executor" in said  # not the threads
    ledger = Ledger(load_config(cfg).ledger_url)
    assert ledger.history("nowhere")["status"].tolist() == ["failed"]
    _meter(_config(shared, tmp_path, "loop", None), batch=1)
    a, b = _published(cfg), _published(tmp_path / "loop" / "c.toml")
    assert len(a["sinks"]["site_id"].unique()) == N_SITES
    for name in TABLES:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


def test_a_site_whose_files_cannot_be_made_fails_alone(shared: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's tables are rendered together; when that fails because of one site's table,
    each site is rendered alone: that site fails, named, with nothing of it on disk or in the
    ledger, and the others are published as in a batch without it."""
    import carbon.io.outputs as outputs

    cfg = _config(shared, tmp_path, "enc", None)
    ctx = loop.start_run(str(cfg))
    ids = list(ctx.site_ids)
    bad = ids[3]
    encode = outputs._encode

    def refuse(frames: list[pd.DataFrame]) -> list[tuple[bytes, bytes]]:
        if any((f["site_id"] == bad).any() for f in frames if "site_id" in f.columns and len(f)):
            raise ValueError("cannot render this table")
        return encode(frames)

    monkeypatch.setattr(outputs, "_encode", refuse)
    outcomes = loop.meter_sites(ctx, ids, loop.SiteParams())
    loop.finish_run(ctx, outcomes)
    status = {o.site_id: o.status for o in outcomes}
    assert status.pop(bad) == "failed" and set(status.values()) == {"succeeded"}
    failed = next(o for o in outcomes if o.site_id == bad)
    assert failed.error is not None and "cannot render this table" in failed.error
    assert not loop.site_dir_of(ctx, bad).exists()
    ledger = Ledger(load_config(cfg).ledger_url)
    assert ledger.history(bad)["status"].tolist() == ["failed"]
    assert bad not in set(ledger.current("sinks")["site_id"])
    monkeypatch.setattr(outputs, "_encode", encode)
    other = _config(shared, tmp_path, "enc_without", None)
    octx = loop.start_run(str(other))
    loop.finish_run(octx, loop.meter_sites(octx, [s for s in ids if s != bad], loop.SiteParams()))
    a, b = _published(cfg), _published(other)
    for name in TABLES:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


@pytest.mark.parametrize("processes", ["2", "0"], ids=["worker-processes", "one-process"])
def test_a_prefect_home_the_server_cannot_open_is_said_in_one_line(shared: Path, tmp_path: Path,
                                                                   processes: str) -> None:
    """The temporary server of a run starts before the flow (in one process as with workers): when it cannot
    (here a Prefect database migrated by a newer Prefect than the installed one), the command
    says so in one line naming the Prefect home, exits 1, and publishes nothing (the server's
    own process logs why, in Prefect's words)."""
    import os
    import sqlite3
    import subprocess
    import sys

    cfg = _config(shared, tmp_path, "nohome", None)
    home = tmp_path / "newer-prefect-home"
    home.mkdir()
    with sqlite3.connect(home / "prefect.db") as db:  # a revision this Prefect does not know
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES ('27d8f4e1a6c9')")
    env = {**os.environ, "CARBON_SINK_RUNNER": "off", "COLUMNS": "200", "PREFECT_HOME": str(home),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "10"}
    env.pop("PREFECT_API_URL", None)
    cli = str(Path(sys.executable).with_name("carbon-sink"))
    done = subprocess.run([cli, "run", "--config", str(cfg), "--no-reports", "--processes", processes], env=env,
                          capture_output=True, text=True, timeout=300)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said[-3000:]
    errors = [line for line in said.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Prefect's temporary server did not start" in errors[0] and str(home) in said
    # no traceback of the command's own (the server process logs its own failure, as Prefect does)
    assert "flows/cli.py" not in said and "flows/metering.py" not in said, said[-3000:]
    ledger = Ledger(load_config(cfg).ledger_url)
    assert ledger.current("sinks").empty


def test_a_batch_returns_its_records_without_inputs_and_the_manifest_reads_them_back(shared: Path, tmp_path: Path
                                                                                      ) -> None:
    """A batch's records leave out each site's inputs (the run's process keeps a few hundred bytes
    a site); the manifest reads them back whole from the sites' runs in the ledger, a site named
    twice is one entry, and writing it again writes the same bytes."""
    cfg = _config(shared, tmp_path, "records")
    ctx = loop.start_run(str(cfg))
    ids = list(ctx.site_ids)[:3]
    outcomes = loop.meter_sites(ctx, ids, loop.SiteParams())
    assert [o.status for o in outcomes] == ["succeeded"] * 3
    want = {o.site_id: o.value["inputs"] for o in outcomes}
    records = loop.batch_records(outcomes)
    assert all("inputs" not in r for r in records)
    back = [loop.outcome_from_record(r) for r in [*records, records[-1]]]  # a site named twice: once
    summary = loop.finish_run(ctx, back)
    first = Path(summary["manifest"]).read_bytes()
    manifest = json.loads(first)
    assert {s: r["inputs"] for s, r in manifest["sites"].items()} == want
    loop.finish_run(ctx, back)  # the flow's finish task may be retried
    assert Path(summary["manifest"]).read_bytes() == first
