"""A worker process that dies mid-run (killed by the out-of-memory killer, an operator, a native
crash) fails only the site it was metering: the run's other sites are metered again apart and
published, with the numbers of a run where nothing died; the dead site is recorded as failed in
the ledger with how its process ended, in one line, and the run is partial. Real municipalities
of the Swiss Arealstatistik (../shared/datasets), as tests/integration/test_batches.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from carbon.io.config import load_config
from carbon.io.ledger import Ledger
from carbon.pipeline import isolate
from tests.integration.test_batches import N_SITES, TABLES, _config, _meter, _published

#: Loaded by every Python process the run starts (PYTHONPATH): in a worker process (a child of
#: multiprocessing), the site named in KILL_SITE gets its process killed as the kernel's
#: out-of-memory killer would (SIGKILL: nothing is raised, nothing is cleaned up); the batch
#: holding KILL_AFTER_PUBLISH is killed right after its ledger commit; SLOW_SITE takes SLOW_S
#: seconds longer and touches SLOW_MARK when it starts.
SITECUSTOMIZE = '''
import os
if os.environ.get("KILL_SITE") or os.environ.get("KILL_AFTER_PUBLISH") or os.environ.get("SLOW_SITE"):
    import multiprocessing, signal, time
    from pathlib import Path
    from carbon.io import ledger
    from carbon.pipeline import loop
    _compute = loop.compute_site_result
    _publish = ledger.Ledger.publish_sites
    def compute_site_result(ctx, site_id, *args, **kwargs):
        worker = multiprocessing.parent_process() is not None
        if worker and site_id == os.environ.get("KILL_SITE"):
            os.kill(os.getpid(), signal.SIGKILL)
        if (worker or os.environ.get("SLOW_ANY_PROCESS")) and site_id == os.environ.get("SLOW_SITE"):
            Path(os.environ["SLOW_MARK"]).touch()
            time.sleep(float(os.environ["SLOW_S"]))
        return _compute(ctx, site_id, *args, **kwargs)
    def publish_sites(self, sites):
        ids = _publish(self, sites)
        if (multiprocessing.parent_process() is not None
                and any(s["site_id"] == os.environ.get("KILL_AFTER_PUBLISH") for s in sites)):
            os.kill(os.getpid(), signal.SIGKILL)  # committed, then killed before it could say so
        return ids
    loop.compute_site_result = compute_site_result
    ledger.Ledger.publish_sites = publish_sites
'''


def test_a_worker_killed_mid_run_fails_its_site_alone(shared: Path, tmp_path: Path) -> None:
    cfg = _config(shared, tmp_path, "killed", None)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    ctx_ids = gpd.read_file(cfg.parent / "sites.gpkg")["site_id"].tolist()
    victim = ctx_ids[5]
    env = {**os.environ, "CARBON_SINK_BATCH_SITES": "4", "CARBON_SINK_RUNNER": "off", "COLUMNS": "200",
           "KILL_SITE": victim, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    cli = str(Path(sys.executable).with_name("carbon-sink"))
    done = subprocess.run([cli, "run", "--config", str(cfg), "--no-reports", "--processes", "2"], env=env,
                          capture_output=True, text=True, timeout=900)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said[-4000:]  # one site failed: the run is partial
    assert "Traceback" not in said, said[-4000:]
    assert f"partial; {N_SITES} sites, 0 unchanged, 1 failed" in said, said[-4000:]
    line = next(x for x in said.splitlines() if x.startswith(f"site {victim} failed"))
    assert "killed by SIGKILL" in line and "twice (once alone)" in line, line
    # it died in the recovery's pool, then once more alone
    assert said.count(f"site {victim}: the process metering it was killed by SIGKILL") == 2, said[-4000:]
    ledger = Ledger(load_config(cfg).ledger_url)
    history = ledger.history(victim)
    assert history["status"].tolist() == ["failed"]
    assert "killed by SIGKILL" in history["error"].iloc[0]
    runs = ledger.run(ledger.run_site_runs(history["run_id"].iloc[0])[0]["run_id"])
    assert runs is not None and runs["status"] == "partial" and runs["n_failed"] == 1
    # every other site published once, with the numbers of a run where no process died
    assert sorted(ledger.current("sinks")["site_id"].unique()) == sorted(s for s in ctx_ids if s != victim)
    site_runs = pd.DataFrame(ledger.run_site_runs(runs["run_id"]))
    assert (site_runs[site_runs["status"] == "succeeded"]["site_id"].value_counts() == 1).all()
    _meter(_config(shared, tmp_path, "calm", None), batch=4)
    a, b = _published(cfg), _published(tmp_path / "calm" / "c.toml")
    for name in TABLES:
        theirs = b[name][b[name]["site_id"] != victim].reset_index(drop=True)
        pd.testing.assert_frame_equal(a[name], theirs, check_exact=True, obj=name)


def _hooked_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "CARBON_SINK_BATCH_SITES": "4", "CARBON_SINK_RUNNER": "off", "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
           "PREFECT_HOME": str(tmp_path / "prefect-home"), **extra}
    env.pop("PREFECT_API_URL", None)
    return env


def test_a_batch_killed_after_its_commit_is_not_metered_again(shared: Path, tmp_path: Path) -> None:
    """A worker killed right after its batch's ledger commit, before it could say so: the run
    keeps what the batch published (each site once, succeeded, no second record) and meters the
    broken pool's other sites again; the run completes."""
    cfg = _config(shared, tmp_path, "committed", None)
    ids = gpd.read_file(cfg.parent / "sites.gpkg")["site_id"].tolist()
    cli = str(Path(sys.executable).with_name("carbon-sink"))
    done = subprocess.run([cli, "run", "--config", str(cfg), "--no-reports", "--processes", "2"],
                          env=_hooked_env(tmp_path, KILL_AFTER_PUBLISH=ids[5]), capture_output=True, text=True,
                          timeout=900)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-4000:]
    assert "Traceback" not in said and "a worker process died" in said, said[-4000:]
    assert f"completed; {N_SITES} sites, 0 unchanged, 0 failed" in said, said[-4000:]
    ledger = Ledger(load_config(cfg).ledger_url)
    run_id = ledger.latest_finished_run()["run_id"]
    rows = pd.DataFrame(ledger.run_site_runs(run_id))
    assert sorted(rows["site_id"]) == sorted(ids) and set(rows["status"]) == {"succeeded"}  # one row a site
    # the manifest names every site's inputs, those of the batch committed by the killed worker too
    run_dir = load_config(cfg).output_dir / "runs" / run_id
    sites = json.loads((run_dir / "manifest.json").read_text())["sites"]
    assert sorted(sites) == sorted(ids)
    for rec in sites.values():
        assert hashlib.sha256(json.dumps(rec["inputs"], sort_keys=True).encode()).hexdigest() == rec["input_key"]
    _meter(_config(shared, tmp_path, "calm", None), batch=4)
    a, b = _published(cfg), _published(tmp_path / "calm" / "c.toml")
    for name in TABLES:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


def test_how_a_dead_process_ended_is_said_in_words() -> None:
    assert isolate.how_it_ended(-9) == "was killed by SIGKILL, e.g. the out-of-memory killer"
    assert isolate.how_it_ended(-11) == "was killed by SIGSEGV, a crash in native code"
    assert isolate.how_it_ended(-15) == "was killed by SIGTERM"
    assert isolate.how_it_ended(3) == "exited with code 3"


def _descendants(pid: int) -> set[int]:
    """The process ids under ``pid`` (Linux /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                kids = {int(c) for c in task.read_text().split()}
            except OSError:
                continue
            todo += list(kids - found)
            found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(("to_group", "processes"), [(False, "2"), (True, "2"), (True, "0")],
                         ids=["to-the-command", "to-its-process-group", "to-the-group-of-a-one-process-run"])
def test_sigterm_stops_the_run_with_its_server_and_workers(shared: Path, tmp_path: Path, to_group: bool,
                                                          processes: str) -> None:
    """A scheduler's stop (SIGTERM) mid-run, while a worker is metering a site: the command exits
    143 with one line, and the run's temporary Prefect server and worker processes stop with it
    (before, the server was left running, orphaned). Sent to the whole process group, as
    ``timeout`` and a systemd unit's stop send it (Ctrl-C in a terminal likewise): before, the
    server died with the others, the flow retried it for a minute and the command ended with a
    ConnectError traceback, exit 1. A run in one process starts its server when the flow first
    needs it (flows/metering.py ``one_api``), in a session of its own all the same."""
    import signal
    import time

    cfg = _config(shared, tmp_path, "stopped", None)
    first = gpd.read_file(cfg.parent / "sites.gpkg")["site_id"].tolist()[0]
    mark = tmp_path / "slow-site-started"
    env = _hooked_env(tmp_path, CARBON_SINK_BATCH_SITES="2", SLOW_SITE=first, SLOW_MARK=str(mark), SLOW_S="15",
                      **({"SLOW_ANY_PROCESS": "1"} if processes == "0" else {}))
    cli = str(Path(sys.executable).with_name("carbon-sink"))
    log = tmp_path / "said.txt"
    with log.open("w") as said:
        run = subprocess.Popen([cli, "run", "--config", str(cfg), "--no-reports", "--processes", processes], env=env,
                               stdout=said, stderr=subprocess.STDOUT, text=True, start_new_session=to_group)
        seen: set[int] = set()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None and not mark.exists():
            seen |= _descendants(run.pid)
            time.sleep(0.2)
        assert mark.exists() and run.poll() is None, log.read_text()[-3000:]  # mid-run: a worker on the slow site
        seen |= _descendants(run.pid)
        assert any("uvicorn" in Path(f"/proc/{p}/cmdline").read_text() for p in seen if _alive(p))
        stop = time.monotonic()
        if to_group:
            os.killpg(run.pid, signal.SIGTERM)
        else:
            run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=180)
        took = time.monotonic() - stop
    text = log.read_text()
    assert code == 143, text[-3000:]
    # promptly: not after a minute of retrying a server the stop killed (a one-process run's server
    # killed with the group made it exit 143 all the same, 60 s late)
    assert took < 40, (took, text[-3000:])
    assert "stopped by SIGTERM: the sites published so far stay published" in text, text[-3000:]
    assert "Traceback" not in text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in seen):
        time.sleep(0.5)
    left = [Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")[:120] for p in seen if _alive(p)]
    assert not left, left


def test_workers_that_die_before_any_site_make_the_recovery_give_up(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Recovery workers that cannot even start (here every spawned process exits with code 3 at
    start-up, as in a broken environment) are replaced a few times, then the recovery gives up
    with the reason instead of starting processes without end; no site is published or
    recorded by it."""
    from carbon.pipeline import loop
    from tests.conftest import write_config

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, sys\nif os.environ.get('EXIT_AT_START') and '--multiprocessing-fork' in sys.argv:\n"
        "    os._exit(3)\n")
    monkeypatch.setenv("EXIT_AT_START", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    cfg = write_config(tmp_path / "c.toml")
    ctx = loop.start_run(str(cfg))
    ids = list(ctx.site_ids)[:2]
    with pytest.raises(RuntimeError, match=r"die before they start a site \(4 times; the last exited with code 3\)"):
        isolate.meter_apart(ctx, ids, loop.SiteParams(), processes=1)
    assert Ledger(load_config(cfg).ledger_url).run_site_runs(ctx.run_id) == []
