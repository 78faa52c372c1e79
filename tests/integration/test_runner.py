"""The local runner (flows/runner.py): a command handed to it prints the same text, exits with
the same code and writes the same ledger rows as the command run in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import publish, write_config

CLI = str(Path(sys.executable).with_name("carbon-sink"))


@pytest.fixture()
def runner_env(tmp_path: Path):
    env = {**os.environ, "CARBON_SINK_RUNNER": "on", "CARBON_SINK_RUNNER_DIR": str(tmp_path / "runners"),
           "CARBON_SINK_RUNNER_IDLE": "120", "PREFECT_HOME": str(tmp_path / "prefect-home")}
    yield env
    subprocess.run([CLI, "runner", "stop"], env=env, capture_output=True, timeout=60)


def _cli(args: list[str], env: dict[str, str], runner: bool) -> subprocess.CompletedProcess[str]:
    env = {**env, "CARBON_SINK_RUNNER": "on" if runner else "off"}
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=600)


def _status(env: dict[str, str]) -> list[str]:
    done = _cli(["runner", "status"], env, runner=False)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("runner ")]


def test_commands_in_the_runner_print_exit_and_publish_as_in_their_own_process(tmp_path: Path, runner_env) -> None:
    cfg = write_config(tmp_path / "c.toml")
    publish(cfg, ["daye-mine-wc"])
    c = str(cfg)
    # reading results: the same text and exit code, in the runner (started by the first command) or not
    for args in (["results", "--config", c, "--format", "csv"], ["history", "--config", c, "--site", "daye-mine-wc",
                                                                  "--format", "json"]):
        own, served = _cli(args, runner_env, runner=False), _cli(args, runner_env, runner=True)
        assert (served.returncode, served.stdout) == (own.returncode, own.stdout) == (0, own.stdout)
        assert "sink_tco2e" in served.stdout
    # bad input: exit 3 and the one line, through the runner too
    own, served = (_cli(["results", "--config", c, "--site", "nope"], runner_env, r) for r in (False, True))
    assert own.returncode == served.returncode == 3
    assert served.stderr.strip().splitlines() == own.stderr.strip().splitlines()
    assert served.stderr.startswith("error: unknown site 'nope'")
    (line,) = _status(runner_env)
    assert " alive" in line and "this environment" in line and "3 command(s) served" in line

    # an analyst's re-run of one site through the runner (its Prefect flow, in the warm process):
    # a new official version, with the same figures as the re-run in its own process
    for runner in (True, False):
        done = _cli(["run", "--config", c, "--site", "daye-mine-wc", "--no-reports"], runner_env, runner)
        assert done.returncode == 0, done.stderr
        assert "run " in done.stderr and ": completed; 1 sites" in done.stderr
    hist = json.loads(_cli(["history", "--config", c, "--site", "daye-mine-wc", "--format", "json"], runner_env,
                           runner=False).stdout)
    runs = [h for h in hist if h["status"] == "succeeded"]
    assert len(runs) == 3
    assert runs[-1]["sink_tco2e"] == runs[-2]["sink_tco2e"]
    assert [runs[-1]["sink_tco2e_lower90"], runs[-1]["sink_tco2e_upper90"]] == \
        [runs[-2]["sink_tco2e_lower90"], runs[-2]["sink_tco2e_upper90"]]

    # another environment (here a setting the commands read) gets its own runner
    other = {**runner_env, "CARBON_SINK_REPORT_WORKERS": "1"}
    assert _cli(["results", "--config", c], other, runner=True).returncode == 0
    assert len(_status(runner_env)) == 2

    pids = [int(p.read_text()) for p in (tmp_path / "runners").glob("*.pid")]
    assert _children(pids), "the first runner keeps Prefect's local server as its child process"
    stopped = _cli(["runner", "stop"], runner_env, runner=False)
    assert stopped.returncode == 0 and "2 runner(s) stopped" in stopped.stderr
    assert _status(runner_env) == []
    assert not list((tmp_path / "runners").glob("*.sock"))
    assert _children(pids) == [], "a stopped runner leaves no process behind"


def _children(pids: list[int]) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) in pids and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_a_runner_killed_without_cleaning_up_is_replaced(tmp_path: Path, runner_env) -> None:
    import signal

    cfg = write_config(tmp_path / "c.toml")
    publish(cfg, ["daye-mine-wc"])
    args = ["results", "--config", str(cfg), "--format", "csv"]
    first = _cli(args, runner_env, runner=True)
    assert first.returncode == 0
    (pid_file,) = (tmp_path / "runners").glob("*.pid")
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # its socket and pid file stay behind
    again = _cli(args, runner_env, runner=True)
    assert (again.returncode, again.stdout) == (0, first.stdout)
    (line,) = _status(runner_env)
    assert " alive" in line and "1 command(s) served" in line


def test_an_idle_runner_leaves(tmp_path: Path, runner_env) -> None:
    import time

    cfg = write_config(tmp_path / "c.toml")
    publish(cfg, ["daye-mine-wc"])
    env = {**runner_env, "CARBON_SINK_RUNNER_IDLE": "2"}
    assert _cli(["results", "--config", str(cfg)], env, runner=True).returncode == 0
    deadline = time.monotonic() + 60
    while _status(env) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _status(env) == []


def test_a_runner_folder_others_can_read_is_not_used(tmp_path: Path, runner_env) -> None:
    cfg = write_config(tmp_path / "c.toml")
    publish(cfg, ["daye-mine-wc"])
    shared = tmp_path / "runners"
    shared.mkdir(mode=0o700)
    shared.chmod(0o777)  # a key kept there would let another user run commands as this one
    done = _cli(["results", "--config", str(cfg), "--format", "csv"], runner_env, runner=True)
    assert done.returncode == 0 and "daye-mine-wc" in done.stdout
    assert f"the runner's folder {shared} is not private to this user: no runner" in done.stderr
    assert not list(shared.glob("*.sock")) and not list(shared.glob("*.pid"))


def _on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """``carbon-sink`` with a pseudo-terminal as stdin, stdout and stderr (which gives no size,
    as some terminals do not): what it printed, and its exit code."""
    master, slave = os.openpty()
    proc = subprocess.Popen([CLI, *args], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_commands_go_to_the_runner_and_print_there(tmp_path: Path, runner_env) -> None:
    cfg = write_config(tmp_path / "c.toml")
    publish(cfg, ["daye-mine-wc"])
    env = {k: v for k, v in runner_env.items() if k not in ("CARBON_SINK_RUNNER", "COLUMNS", "LINES")}  # auto
    own = _cli(["results", "--config", str(cfg), "--format", "csv"], env, runner=False)
    code, text = _on_a_terminal(["results", "--config", str(cfg), "--format", "csv"], env)
    assert code == 0
    assert own.stdout in text.replace("\r\n", "\n")  # (stderr's notes on the same terminal)
    (line,) = _status(runner_env)
    assert "1 command(s) served" in line
    code, text = _on_a_terminal(["results", "--config", str(cfg), "--site", "nope"], env)
    assert code == 3 and "unknown site 'nope'" in text
