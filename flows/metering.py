"""Flows: wiring only. Reads like the pipeline diagram:

    prepare run -> per site (mapped, one task run): input key -> compute + validate -> publish
                -> (each site done: its report, drawn in a process pool meanwhile) -> finish run
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prefect import flow, unmapped
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from carbon.config import DEMO_CONFIG
from flows.tasks import finish_run, hand_over, meter_site, prepare_run, run_config, site_reports


def _collect(futures: list[Any], site_ids: list[str],
             on_done: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Every site's outcome, in order; ``on_done`` gets each as soon as it is known (the
    reports are drawn while the other sites are metered)."""
    outcomes = []
    for site_id, future in zip(site_ids, futures, strict=True):
        future.wait()
        if future.state.is_completed():
            outcomes.append(future.result())
        else:
            outcomes.append({"site_id": site_id, "status": "failed", "error": _message(future)})
        if on_done is not None:
            on_done(outcomes[-1])
    return outcomes


def _message(future: Any) -> str:
    try:
        future.result(raise_on_failure=True)
    except Exception as exc:  # noqa: BLE001 - the site's own error, reported as text
        return str(exc)
    return future.state.message or "failed"


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
                 maps: bool = False, method: str | None = None, reports: bool = True) -> State:
    """Meter every site of a configuration (or the listed ones); unchanged sites are skipped.
    ``method`` overrides every site's accounting method (stock_difference or gain_loss);
    ``reports`` writes an HTML report of each published site."""
    run = prepare_run(str(config or DEMO_CONFIG), site_ids)
    futures = meter_site.map(unmapped(run), run["site_ids"], force=unmapped(force), maps=unmapped(maps),
                             method=unmapped(method), report_maps=unmapped(reports))
    if not reports:
        return _final(finish_run(run, _collect(futures, run["site_ids"]), None))
    from carbon.report import ReportPool, report_workers  # noqa: PLC0415 - matplotlib only when drawing

    # reports are drawn by child processes of this (the flow's) process while the sites are metered
    with ReportPool(run_config(run), min(report_workers(), len(run["site_ids"])), nice=REPORT_NICE) as pool:
        outcomes = _collect(futures, run["site_ids"], lambda o: hand_over(pool, run, o, maps=maps))
        pages = pool.pages()
    return _final(finish_run(run, outcomes, pages))


def with_dask(address: str | None = None, workers: int = 2):  # noqa: ANN201
    """The metering flow on Dask: a running scheduler (``address``, e.g. tcp://host:8786) or a
    LocalCluster of ``workers`` single-threaded processes (docs/operations.md)."""
    from prefect_dask import DaskTaskRunner  # noqa: PLC0415

    if address:
        runner = DaskTaskRunner(address=address)
    else:
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                                "dashboard_address": None})
    return metering_run.with_options(task_runner=runner)


@flow(name="site-run", log_prints=True)
def site_run(site_id: str, config: str | None = None, years: list[int] | None = None, start_year: int | None = None,
             coefficients: str | None = None, maps: bool = True, method: str | None = None,
             reports: bool = True) -> State:
    """Re-run one site, always recomputed: what an analyst runs with chosen years, period start,
    coefficient set and per-pixel maps on or off."""
    run = prepare_run(str(config or DEMO_CONFIG), [site_id], coefficients)
    future = meter_site.submit(run, site_id, force=True, years=years, start_year=start_year, maps=maps,
                               method=method, report_maps=reports)
    outcomes = _collect([future], [site_id])
    summary = finish_run(run, outcomes, site_reports(run, outcomes, maps) if reports else None)
    return _final(summary)
