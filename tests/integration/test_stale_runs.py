"""Stale runs: a run killed mid-way (SIGKILL while writing a site's tables) is marked ``stale``
by the next run, which removes its temporary folder; runs whose process lives, here or on
another host with a recent sign of life, are left running (two runs may share a ledger)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from carbon.io.config import load_config
from carbon.io.ledger import Ledger, LedgerError, runs
from carbon.pipeline.loop import start_run
from carbon.pipeline.verify import verify_chain
from tests.conftest import REPO, write_config

SITE = "wuhan-quarry-reclaim"


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = write_config(tmp_path / "c.toml", output_dir=tmp_path / "out")
    with path.open("a", encoding="utf-8") as f:
        f.write("monte_carlo_draws = 200\n")
    return path


def killed_run(cfg: Path) -> tuple[str, int]:
    """A run whose process is killed (SIGKILL) while it writes the site's tables; its id and pid."""
    child = textwrap.dedent(f"""
        import os, signal
        import carbon.io.outputs as outputs
        from carbon.pipeline.loop import SiteParams, meter_site, start_run

        write = outputs._write_file

        def die(path, data):  # the first Parquet file is half-written: the process is killed
            if not path.name.endswith(".parquet"):
                return write(path, data)
            path.write_bytes(data[:4])
            print(ctx.run_id, os.getpid(), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        outputs._write_file = die
        ctx = start_run({str(cfg)!r}, [{SITE!r}])
        meter_site(ctx, {SITE!r}, SiteParams())
    """)
    proc = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    run_id, pid = proc.stdout.split()
    return run_id, int(pid)


def test_a_killed_run_is_marked_stale_and_its_temporary_folder_removed(cfg: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="carbon.pipeline.loop")
    run_id, pid = killed_run(cfg)
    config = load_config(cfg)
    sites = config.output_dir / "runs" / run_id / "sites"
    left = [p for p in sites.iterdir() if p.name.startswith(f".{SITE}-")]
    assert len(left) == 1 and (left[0] / "stocks.csv").is_file()  # what the killed run left behind
    ledger = Ledger(config.ledger_url)
    before = ledger.run(run_id)
    assert before["status"] == "running" and before["pid"] == pid

    live = start_run(cfg, [SITE])  # a run of this (live) process: stays running
    assert ledger.run(run_id)["status"] == "stale"
    assert ledger.run(live.run_id)["status"] == "running"

    later = start_run(cfg, [SITE])
    assert ledger.run(live.run_id)["status"] == "running" and ledger.run(later.run_id)["status"] == "running"
    after = ledger.run(run_id)
    assert after["started_at"] == before["started_at"] and after["finished_at"] is None
    assert not [p for p in sites.iterdir() if p.name.startswith(".")]
    assert len([r for r in caplog.records if run_id in r.getMessage()]) == 1  # marked once, not at each start


def test_the_log_names_the_stale_run_and_its_start(cfg: Path, caplog) -> None:
    run_id, pid = killed_run(cfg)
    started = Ledger(load_config(cfg).ledger_url).run(run_id)["started_at"]
    with caplog.at_level(logging.WARNING, logger="carbon.pipeline.loop"):
        start_run(cfg, [SITE])
    (message,) = [r.getMessage() for r in caplog.records if run_id in r.getMessage()]
    assert message.startswith(f"run {run_id} (started {started:%Y-%m-%d %H:%M:%S} UTC) marked stale: its process "
                              f"{pid} on ")
    assert message.endswith("has ended; 1 temporary folder(s) removed")
    check = verify_chain(load_config(cfg).ledger_url)  # the marking is chained
    assert check.problems == [] and check.n_records == 1


def test_other_hosts_runs_are_stale_only_after_a_long_silence(cfg: Path, monkeypatch) -> None:
    load_config(cfg).output_dir.mkdir(parents=True)
    ledger = Ledger(load_config(cfg).ledger_url)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=30)
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    with ledger.engine.begin() as c:
        c.execute(runs.insert(), [
            {"run_id": "silent", "started_at": old, "status": "running", "config_path": "c", "code_version": "t",
             "host": "elsewhere", "pid": 1, "heartbeat_at": old},
            {"run_id": "busy", "started_at": old, "status": "running", "config_path": "c", "code_version": "t",
             "host": "elsewhere", "pid": 1, "heartbeat_at": recent},
            {"run_id": "gone-here", "started_at": recent, "status": "running", "config_path": "c", "code_version": "t",
             "host": os.uname().nodename, "pid": 2**22 + 17, "heartbeat_at": recent},
        ])
    start_run(cfg, [SITE])  # default: 24 hours of silence
    status = {r: ledger.run(r)["status"] for r in ("silent", "busy", "gone-here")}
    assert status == {"silent": "stale", "busy": "running", "gone-here": "stale"}
    monkeypatch.setenv("CARBON_SINK_STALE_HOURS", "1")
    start_run(cfg, [SITE])
    assert ledger.run("busy")["status"] == "stale"
    with ledger.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(runs).where(runs.c.status == "running")).scalar_one() == 2
    monkeypatch.setenv("CARBON_SINK_STALE_HOURS", "soon")
    with pytest.raises(LedgerError, match="CARBON_SINK_STALE_HOURS must be a number of hours above 0, not 'soon'"):
        start_run(cfg, [SITE])
