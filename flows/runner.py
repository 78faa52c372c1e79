"""The ``carbon-sink`` entry point, and the local runner that keeps the command line warm.

Most of a command's wall time on a small site is start-up: importing pandas, pandera, xarray,
rasterio, matplotlib and Prefect (about 2 s), and for ``run`` starting Prefect's local server
(10-20 s). The **local runner** is a background process of the same installation that has all
of that loaded and keeps Prefect's server up: the ``carbon-sink`` command hands it its
arguments, working folder and environment over a Unix socket, and prints what comes back. The
command runs *in* the runner exactly as it would run here (the same Typer application, the
same flows, the same ledger; its exit code is the command's), only without paying start-up
again. docs/operations.md, "Start-up", says when it is used and how to stop it.

- ``CARBON_SINK_RUNNER=auto`` (the default): on a terminal (an analyst's session) the first
  command that runs, validates or reads results starts a runner and hands itself over; a
  scheduler, a pipe or a test (no terminal) runs each command in its own process, as before.
  ``on`` always uses it, ``off`` never.
- A runner serves one command at a time: a command that finds it busy runs in its own process.
- A runner belongs to one installation, its code and its environment: editing the code,
  upgrading the package or changing a ``PREFECT_``, ``CARBON_SINK_``, ``AWS_`` or ``GDAL_``
  variable gives a fresh runner (a fingerprint names its socket); the old one leaves when idle.
- It stops itself after ``CARBON_SINK_RUNNER_IDLE`` seconds without a command (default 900);
  ``carbon-sink runner stop`` stops it now, ``runner status`` lists it.

This module is imported on every start: it uses the standard library only and imports the
application (``flows.cli``) only when the command runs here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The commands a runner serves (``serve``, ``runner`` and ``ledger`` always run here).
SERVED = frozenset({"run", "validate", "results", "history", "report", "export", "verify"})
MODE_VAR, DIR_VAR, IDLE_VAR = "CARBON_SINK_RUNNER", "CARBON_SINK_RUNNER_DIR", "CARBON_SINK_RUNNER_IDLE"
#: Environment variables that change what a command does once its modules are loaded: a runner
#: started under other values would answer for another environment, so they name its socket.
ENV_PREFIXES = ("PREFECT_", "CARBON_SINK_", "AWS_", "GDAL_", "CPL_", "PROJ_", "DASK_")
STARTUP_TIMEOUT_S = 120.0


def runner_dir() -> Path:
    """The folder of this user's runners (sockets, keys, logs), private to the user."""
    d = Path(os.environ.get(DIR_VAR) or Path(tempfile.gettempdir()) / f"carbon-sink-runner-{os.getuid()}")
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


def _private(d: Path) -> bool:
    """The runner's folder is the user's own and nobody else's (its key authenticates commands)."""
    st = d.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o077


def _package_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    dirs = [here]
    for name in ("carbon", "schemas"):
        candidate = here.parent / name
        if candidate.is_dir():
            dirs.append(candidate)
    return dirs


def fingerprint() -> str:
    """Names the runner of this interpreter, code and environment: the interpreter's path, every
    module file's path, size and time, and the environment variables that steer a command."""
    h = hashlib.sha256(sys.executable.encode())
    for d in _package_dirs():
        for root, subdirs, files in os.walk(d):
            subdirs[:] = sorted(s for s in subdirs if s != "__pycache__")
            for f in sorted(files):
                if f.endswith((".py", ".html", ".j2", ".toml", ".csv")):
                    st = os.stat(os.path.join(root, f))
                    h.update(f"{root}/{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for key in sorted(os.environ):
        if key.startswith(ENV_PREFIXES) and not key.startswith(MODE_VAR):
            h.update(f"{key}={os.environ[key]}\n".encode())
    return h.hexdigest()[:16]


def _paths(fp: str) -> dict[str, Path]:
    d = runner_dir()
    return {k: d / f"{fp}.{k}" for k in ("sock", "key", "pid", "log", "busy", "state", "lock")}


# --- the command's side -----------------------------------------------------------------------

def _command(argv: list[str]) -> str | None:
    """The command word of a command line (after the global options), or None."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--output":
            skip = True
            continue
        if arg.startswith("-"):
            if arg in ("--help", "--version"):
                return None
            continue
        return arg
    return None


def wanted(argv: list[str]) -> bool:
    """Whether this command line goes to a runner (``CARBON_SINK_RUNNER``, above)."""
    mode = os.environ.get(MODE_VAR, "auto").strip().lower()
    if mode in ("off", "0", "false", "no") or _command(argv) not in SERVED or "--help" in argv:
        return False
    if mode in ("on", "1", "true", "yes"):
        return True
    return all(stream is not None and stream.isatty() for stream in (sys.stderr, sys.stdin))


def _alive(pid: int) -> bool:
    """The process runs (a killed runner not yet reaped, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc: the signal's answer
        return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _clean(paths: dict[str, Path], keep_socket: bool = False) -> None:
    for k in ("key", "pid", "busy", "state") if keep_socket else ("sock", "key", "pid", "busy", "state"):
        with contextlib.suppress(FileNotFoundError):
            paths[k].unlink()


def start(fp: str | None = None, wait: bool = True) -> dict[str, Path] | None:
    """Start this environment's runner unless it runs; the paths of a ready runner, or None when
    it could not start (its log says why)."""
    fp = fp or fingerprint()
    paths = _paths(fp)
    import fcntl  # noqa: PLC0415 - POSIX only, like the Unix socket

    with open(paths["lock"], "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid = _read_pid(paths["pid"])
        if pid is None or not _alive(pid):
            _clean(paths)
            with open(paths["log"], "ab") as log:
                proc = subprocess.Popen([sys.executable, "-m", "flows.runner", fp], stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=log, start_new_session=True, close_fds=True,
                                        cwd=str(runner_dir()))
            pid = proc.pid
        if not wait:
            return paths
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (paths["sock"].exists() and paths["key"].exists()):
            if not _alive(pid) or time.monotonic() > deadline:
                return None
            time.sleep(0.02)
    return paths


class _Stopped(Exception):
    """The runner stopped while it ran the command."""


def _exchange(paths: dict[str, Path], argv: list[str]) -> int | None:
    from multiprocessing.connection import Client  # noqa: PLC0415

    conn = Client(str(paths["sock"]), family="AF_UNIX", authkey=paths["key"].read_bytes())
    size = os.get_terminal_size(sys.stderr.fileno()) if sys.stderr.isatty() else None
    if size is not None and (size.columns <= 0 or size.lines <= 0):  # a terminal that gives no size
        size = None
    conn.send({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
               "tty": [sys.stdout.isatty(), sys.stderr.isatty()],
               "size": [size.columns, size.lines] if size else None})
    pid = _read_pid(paths["pid"])
    try:
        while True:
            try:
                kind, payload = conn.recv()
            except EOFError as exc:
                raise _Stopped from exc
            if kind == "busy":
                return None
            if kind == "exit":
                return int(payload)
            stream = sys.stdout if kind == "out" else sys.stderr
            stream.write(payload)
            stream.flush()
    except KeyboardInterrupt:  # the command is interrupted where it runs, as it would be here
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        return 130
    finally:
        conn.close()


def via_runner(argv: list[str]) -> int | None:
    """Run the command in this environment's runner (started if need be); its exit code, or
    None when no runner can take it (then the command runs in this process)."""
    fp = fingerprint()
    if not _private(runner_dir()):
        sys.stderr.write(f"note: the runner's folder {runner_dir()} is not private to this user: no runner\n")
        return None
    for _attempt in range(2):
        paths = _paths(fp)
        if paths["busy"].exists() and _alive(_read_pid(paths["pid"]) or -1):
            return None
        ready = start(fp)
        if ready is None:
            return None
        try:
            return _exchange(ready, argv)
        except (ConnectionRefusedError, FileNotFoundError):  # a runner killed without cleaning up
            _clean(paths)
        except _Stopped:
            sys.stderr.write(f"error: the local runner stopped while running the command; its log: {paths['log']}\n")
            return 1
    return None


def main() -> None:
    """The ``carbon-sink`` command."""
    # numpy's BLAS on one thread per process: the gain-loss method's many small matrix products
    # wake a pool of threads each (half its CPU time, the same numbers); the sites and the
    # chunks of a large site are already run in parallel (docs/operations.md)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    argv = sys.argv[1:]
    if wanted(argv):
        code = via_runner(argv)
        if code is not None:
            sys.exit(code)
    from flows.cli import main as cli_main  # noqa: PLC0415

    cli_main()


def runners() -> list[dict[str, Any]]:
    """This user's runners: fingerprint, pid, alive, busy, and what they recorded."""
    found = []
    for pid_file in sorted(runner_dir().glob("*.pid")):
        fp = pid_file.name.removesuffix(".pid")
        paths = _paths(fp)
        pid = _read_pid(pid_file)
        state: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(paths["state"].read_text())
        found.append({"fingerprint": fp, "pid": pid, "alive": pid is not None and _alive(pid),
                      "busy": paths["busy"].exists(), "current": fp == fingerprint(), **state})
    return found


def stop_all(timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Stop every runner of this user (SIGTERM, then SIGKILL after ``timeout_s``)."""
    stopped = []
    for r in runners():
        pid = r["pid"]
        if r["alive"] and pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _clean(_paths(r["fingerprint"]))
        stopped.append(r)
    return stopped


# --- the runner's side ------------------------------------------------------------------------

class _Relay(io.TextIOBase):
    """The runner's stdout or stderr: what a command writes goes to the command line that sent
    it (Prefect's log handlers, rich's consoles and print all hold this object); between
    commands, to the runner's log."""

    conn: Any = None
    tty: tuple[bool, bool] = (False, False)
    lock = threading.Lock()

    def __init__(self, kind: str, fallback: Any) -> None:
        super().__init__()
        self.kind, self.fallback = kind, fallback

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return _Relay.conn is not None and _Relay.tty[0 if self.kind == "out" else 1]

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def write(self, s: str) -> int:
        with _Relay.lock:
            if _Relay.conn is not None:
                try:
                    _Relay.conn.send((self.kind, s))
                    return len(s)
                except OSError:
                    _Relay.conn = None  # the command line went away: the rest goes to the log
            self.fallback.write(s)
            self.fallback.flush()
        return len(s)


@contextlib.contextmanager
def _as_sent(req: dict[str, Any], conn: Any) -> Iterator[None]:
    """The sender's working folder, environment and terminal, for one command."""
    env, cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(req["env"])
    if req.get("size"):
        os.environ["COLUMNS"], os.environ["LINES"] = (str(v) for v in req["size"])
    os.chdir(req["cwd"])
    _Relay.conn, _Relay.tty = conn, tuple(req["tty"])
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with _Relay.lock:
            _Relay.conn = None
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)


def _execute(req: dict[str, Any], conn: Any) -> int:
    from flows import cli  # noqa: PLC0415

    with _as_sent(req, conn):
        # the application's consoles, made anew for this sender's terminal
        cli.console = cli._Console(stderr=True)
        cli.out = cli._Console()
        try:
            cli.app(args=list(req["argv"]), prog_name="carbon-sink", standalone_mode=True)
            return 0
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            return 130
        except BaseException as exc:  # noqa: BLE001 - the runner outlives a command's crash
            sys.stderr.write(f"error: {exc}\n")
            return 1


def _warm() -> None:
    """Load the modules the commands use, so that the first command finds them loaded.
    (Prefect's local server starts with the first ``run`` and stays up while the runner does.)"""
    try:
        import carbon.report.page  # noqa: F401, PLC0415
        import flows.metering  # noqa: F401, PLC0415
        from carbon.rules import kernels  # noqa: PLC0415

        kernels.warm()  # numba's start and the strip kernel (0.4-0.8 s a process)
    except Exception as exc:  # noqa: BLE001 - a command will meet the same problem and say it
        print(f"runner: warm-up: {exc}", file=sys.__stderr__)


def serve(fp: str) -> None:
    """The runner's loop: one command at a time, until idle for ``CARBON_SINK_RUNNER_IDLE`` s."""
    from multiprocessing.connection import Listener  # noqa: PLC0415

    paths = _paths(fp)
    log = sys.stderr
    sys.stdout, sys.stderr = _Relay("out", log), _Relay("err", log)
    idle_s = float(os.environ.get(IDLE_VAR, "900"))
    key = os.urandom(32)
    started = time.time()
    state: dict[str, Any] = {"started": started, "commands": 0, "last": started}

    def leave(*_: Any) -> None:  # in the main thread: the exit handlers stop Prefect's local server
        _clean(paths, keep_socket=True)  # (the listener removes its socket as it closes)
        state["stopping"] = True
        sys.exit(0)  # (a command running now ends with it, as on Ctrl-C; the loop then leaves)

    signal.signal(signal.SIGTERM, leave)
    from flows import cli  # noqa: PLC0415 - loaded before the socket exists: the first command finds it

    cli._prefect_defaults()  # Prefect's settings as ``run`` sets them, before Prefect is loaded (warm-up)

    listener = Listener(str(paths["sock"]), family="AF_UNIX", authkey=key, backlog=16)
    old = os.umask(0o077)
    try:
        paths["key"].write_bytes(key)
        paths["pid"].write_text(str(os.getpid()))
        paths["state"].write_text(json.dumps(state))
    finally:
        os.umask(old)
    threading.Thread(target=_warm, name="warm-up", daemon=True).start()

    def watchdog() -> None:
        while True:
            time.sleep(min(5.0, idle_s))
            if not paths["busy"].exists() and time.time() - state["last"] > idle_s:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watchdog, name="idle", daemon=True).start()
    while True:
        try:
            conn = listener.accept()
        except Exception:  # noqa: BLE001 - a caller without the key, or one that went away
            continue
        try:
            req = conn.recv()
            paths["busy"].touch()
            code = _execute(req, conn)
            _done(paths, state)  # not busy, counted, before the sender hears the end
            with contextlib.suppress(OSError):
                conn.send(("exit", code))
        except (EOFError, OSError):
            pass
        finally:
            if paths["busy"].exists():  # the command's end not reached (its sender went away)
                _done(paths, state)
            conn.close()
            if state.get("stopping"):
                sys.exit(0)


def _done(paths: dict[str, Path], state: dict[str, Any]) -> None:
    """A command ended: the runner is no longer busy, and its state says so."""
    with contextlib.suppress(FileNotFoundError):
        paths["busy"].unlink()
    state["commands"] += 1
    state["last"] = time.time()
    with contextlib.suppress(OSError):
        paths["state"].write_text(json.dumps(state))

if __name__ == "__main__":
    serve(sys.argv[1])
