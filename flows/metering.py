"""Flows: wiring only. Reads like the pipeline diagram:

    prepare run -> per batch of sites (one task run each): per site input key -> compute;
                   the batch's tables validated together -> published in one transaction
                -> (each site done: its report, drawn in a process pool meanwhile) -> finish run
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from prefect import Flow, flow
from prefect.futures import as_completed
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from carbon.io.resources import DEMO_CONFIG
from carbon.pipeline.isolate import meter_apart
from carbon.pipeline.loop import Outcome, SiteParams
from carbon.report.pool import ReportPool, report_workers
from flows import progress
from flows.tasks import (
    LOST,
    batch_label,
    finish_run,
    hand_over,
    meter_batch,
    outcomes_of,
    prepare_run,
    site_reports,
)

log = logging.getLogger("carbon.flows")


Recover = Callable[[list[str], Callable[[Outcome], None]], list[Outcome]]


def _collect(futures: list[Any], batches: list[list[str]], on_done: Callable[[Outcome], None] | None = None,
             recover: Recover | None = None) -> list[Outcome]:
    """Every site's outcome, in order. As each batch ends, in whatever order and wherever it
    ran (threads here, Dask workers elsewhere), this process tells the progress listeners (the
    CLI's bar) and ``on_done`` (the reports are drawn while the other sites are metered). The
    sites of batches whose worker process died are then given to ``recover`` (metered again
    apart), or failed with that message without it."""
    batch_of = {id(f): b for b, f in zip(batches, futures, strict=True)}
    done: dict[str, Outcome] = {}
    lost: list[Outcome] = []

    def tell(outcome: Outcome) -> None:
        done[outcome.site_id] = outcome
        progress.emit(outcome.site_id, outcome.status)
        if on_done is not None:
            on_done(outcome)

    for future in as_completed(list(futures)):
        for outcome in outcomes_of(batch_of[id(future)], future):
            if outcome.status == LOST:
                lost.append(outcome)
            else:
                tell(outcome)
    if lost and recover is not None:
        log.warning("a worker process died (%s): the %d sites it left unpublished are metered again, each alone, "
                    "in fresh processes", lost[0].error, len(lost))
        try:
            recover([o.site_id for o in lost], tell)
        except Exception as exc:  # noqa: BLE001 - the sites not metered again fail with the reason, the run ends
            for o in lost:
                if o.site_id not in done:
                    tell(Outcome(o.site_id, "failed", error=f"the worker process metering it died ({o.error}), and "
                                                            f"metering it again failed: {exc}"))
    else:
        for o in lost:
            tell(Outcome(o.site_id, "failed", error=f"the worker process metering it died: {o.error}"))
    return [done[s] for b in batches for s in b]


def _recoverer(ctx: Any, params: SiteParams, workers: int, report_maps: bool) -> Recover:
    def recover(site_ids: list[str], tell: Callable[[Outcome], None]) -> list[Outcome]:
        return meter_apart(ctx, site_ids, params, processes=workers, report_maps=report_maps, on_done=tell)
    return recover


#: Sites per task run (``CARBON_SINK_BATCH_SITES``; default: about four batches per worker, at
#: most ``MAX_BATCH``): a batch is one task run, one contract check and one ledger transaction.
MAX_BATCH = 100


def batches_of(site_ids: list[str] | tuple[str, ...], workers: int) -> list[list[str]]:
    """The sites in batches, in order (docs/operations.md, "Many sites")."""
    ids = list(site_ids)
    size = int(os.environ.get("CARBON_SINK_BATCH_SITES", "0")) or min(MAX_BATCH, -(-len(ids) // (4 * workers)))
    size = max(1, size)
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _meter(ctx: Any, params: SiteParams, workers: int, report_maps: bool) -> tuple[list[Any], list[list[str]]]:
    """One task run per batch. Each is given the run's context with its own sites only: Prefect
    walks every parameter of every task run, item by item, in the flow's process and in the
    worker, and the run's whole list of sites made that O(sites) a batch, O(sites²) a run (two
    thirds of the flow process and a sixth of each worker at 100,000 sites). (``quote`` would
    skip the walk, but Dask's task runner hands the task the quote itself.)"""
    batches = batches_of(ctx.site_ids, workers)
    futures = [meter_batch.submit(replace(ctx, site_ids=tuple(b)), b, params, report_maps=report_maps,
                                  label=batch_label(b)) for b in batches]
    return futures, batches


def _final(summary: dict[str, Any]) -> State:
    if summary["n_failed"]:
        names = ", ".join(summary["failures"])
        return Failed(message=f"{summary['n_failed']} of {summary['n_sites']} sites failed ({names}); the others "
                              "were published", data=summary)
    return Completed(message=f"{summary['n_sites']} sites: {summary['n_sites'] - summary['n_skipped']} published, "
                             f"{summary['n_skipped']} unchanged", data=summary)


#: Sites metered at once (each holds its rasters open and one strip of pixels in memory).
MAX_WORKERS = int(os.environ.get("CARBON_SINK_MAX_WORKERS", "4"))
#: Priority of the report processes below the metering (os.nice): they draw with the CPU
#: time the sites leave, then with all of it once the sites are done.
REPORT_NICE = 10


@flow(name="metering-run", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS))
def metering_run(config: str | None = None, site_ids: list[str] | None = None, force: bool = False,
                 maps: bool = False, method: str | None = None, reports: bool = True,
                 output_dir: str | None = None) -> State:
    """Meter every site of a configuration (or the listed ones); unchanged sites are skipped.
    ``method`` overrides every site's accounting method (stock_difference or gain_loss);
    ``reports`` writes an HTML report of each published site; ``output_dir`` replaces the
    configuration's output folder."""
    ctx = prepare_run(str(config or DEMO_CONFIG), site_ids, output_dir=output_dir)
    params = SiteParams(method=method, maps=maps, force=force)
    workers = _workers()
    futures, batches = _meter(ctx, params, workers, reports)
    recover = _recoverer(ctx, params, workers, reports)
    if not reports:
        return _final(finish_run(ctx, quote(_collect(futures, batches, recover=recover)), None))
    # reports are drawn by child processes of this (the flow's) process while the sites are metered
    with ReportPool(ctx.config, min(report_workers(), len(ctx.site_ids)), nice=REPORT_NICE) as pool:
        outcomes = _collect(futures, batches, lambda o: hand_over(pool, o), recover)
        pages = pool.pages()
    return _final(finish_run(ctx, quote(outcomes), pages))


def _workers() -> int:
    """Workers of the flow's task runner (threads, Dask processes): batches are sized for them."""
    from prefect.context import FlowRunContext  # noqa: PLC0415

    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None) if ctx else None
    n = getattr(runner, "_max_workers", None) or getattr(runner, "max_workers", None)
    if not n and runner is not None and getattr(runner, "cluster_kwargs", None):
        n = runner.cluster_kwargs.get("n_workers")
    return int(n or MAX_WORKERS)


#: A run with at least this many sites meters them in a process per core (``processes_for``).
PROCESS_MIN_SITES = 200


def processes_for(n_sites: int, asked: int | None = None) -> int:
    """How many processes meter a run's sites: ``asked`` (0: threads of the flow's process),
    else one per core (at most ``CARBON_SINK_MAX_WORKERS``) for a run of ``PROCESS_MIN_SITES``
    sites or more on two cores or more (their start, about 4 s, pays for itself there), else 0
    (docs/operations.md, "Many sites: a process per core")."""
    if asked is not None:
        return max(0, asked)
    cores = min(_cores(), MAX_WORKERS)
    return cores if n_sites >= PROCESS_MIN_SITES and cores > 1 else 0


def _cores() -> int:
    """The cores this process may use: its CPU affinity, within a container's CPU quota
    (cgroup v2 ``cpu.max``) when one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]  # noqa: SIM115, PTH123
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cores


def with_processes(processes: int) -> Flow[..., State]:
    """The metering flow with its batches in ``processes`` worker processes of this machine
    (Prefect's process pool; each worker reads the shared inputs once and keeps them)."""
    from prefect.task_runners import ProcessPoolTaskRunner  # noqa: PLC0415

    return metering_run.with_options(task_runner=ProcessPoolTaskRunner(max_workers=processes))


@contextmanager
def one_api(share: bool = True) -> Iterator[None]:
    """Inside: a Prefect API address every process of the run uses. Without one configured, the
    temporary server this process would start is started now (a server that cannot start is
    said in one line, ``ServerStartError``), in a session of its own: a stop sent to the
    command's whole process group (Ctrl-C in a terminal, ``timeout``, a systemd unit's stop)
    reaches the command and its workers, not the server, which the flow still needs to record
    how the run ended; the command stops it on its way out. With ``share`` (a run with worker
    processes or on Dask) its address is named in this process's settings, so that the workers
    report to it instead of each starting a server of its own; without, this process's Prefect
    clients find it as Prefect's own (one server a port) and its settings are left as they are
    (in the local runner, a re-run then keeps the Prefect clients of the one before)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer  # noqa: PLC0415

    class OwnSessionServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            popen = subprocess.Popen
            subprocess.Popen = functools.partial(popen, start_new_session=True)  # type: ignore[misc]
            try:
                return super()._run_uvicorn_command()
            finally:
                subprocess.Popen = popen  # type: ignore[misc]

    # the one Prefect's client would start itself (one per port: its clients find this one; stopped at exit)
    server = OwnSessionServer()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - said in one line by the CLI
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ServerStartError(f"Prefect's temporary server did not start (PREFECT_HOME "
                               f"{os.environ.get('PREFECT_HOME', '~/.prefect')}): {first}") from None
    if not share:
        yield
        return
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


class ServerStartError(RuntimeError):
    """The run's temporary Prefect server could not be started (``one_api``)."""


def with_dask(address: str | None = None, workers: int = 2) -> Flow[..., State]:
    """The metering flow on Dask: a running scheduler (``address``, e.g. tcp://host:8786) or a
    LocalCluster of ``workers`` single-threaded processes (docs/operations.md)."""
    from prefect_dask import DaskTaskRunner  # noqa: PLC0415 - Dask's distributed only for a run on Dask (18 MiB)

    if address:
        runner = DaskTaskRunner(address=address)
    else:
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                                "dashboard_address": None})
    return metering_run.with_options(task_runner=runner)


@flow(name="site-run", log_prints=True)
def site_run(site_id: str, config: str | None = None, years: list[int] | None = None, start_year: int | None = None,
             coefficients: str | None = None, maps: bool = True, method: str | None = None,
             reports: bool = True, output_dir: str | None = None, scenario: str | None = None) -> State:
    """Re-run one site, always recomputed: what an analyst runs with chosen years, period start,
    coefficient set and per-pixel maps on or off. Parameters other than those the configuration
    gives the site (or a ``scenario`` name) make it a scenario, recorded beside the official
    estimate and never replacing it."""
    ctx = prepare_run(str(config or DEMO_CONFIG), [site_id], coefficients, output_dir)
    params = SiteParams(years=tuple(years) if years else None, start_year=start_year, method=method, maps=maps,
                        force=True, scenario=scenario)
    future = meter_batch.submit(ctx, [site_id], params, report_maps=reports, label=site_id)
    outcomes = _collect([future], [[site_id]])
    summary = finish_run(ctx, outcomes, site_reports(ctx, outcomes) if reports else None)
    return _final(summary)
