"""Prefect tasks: each wraps one step of carbon/pipeline/loop.py and passes the typed run
context, keys and paths between them (never arrays).

A batch of sites is one task run (``meter_batch``): each site's steps (input key, compute)
run inside it, then the batch's contract check and its one ledger transaction, so that a site
costs a share of one task run's server round trips, not five of its own. The run-level
IO tasks retry on transient errors with Prefect's retry options; inside a site,
``carbon.pipeline.loop.with_retries`` does. Computation never retries, and bad input never
retries.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.tasks import exponential_backoff

from carbon.io.ledger import Ledger
from carbon.pipeline import loop
from carbon.pipeline.loop import Outcome, RunContext, SiteParams
from carbon.report.pool import ReportPool, report_workers
from flows import progress

log = logging.getLogger("carbon.flows")
#: How a failed site's task run state begins (``meter_site``).
FAILED_SITE = "site {} failed: "


class _OneLinePerFailedSite(logging.Filter):
    """Prefect logs a failed task run twice, the first time with a traceback, even when the task
    returned its Failed state itself; a failed site keeps the second, one-line record
    ("Finished in state Failed('site ... failed: ...')")."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg.startswith("Task run failed with state") and "message='site " in msg)


logging.getLogger("prefect.task_runs").addFilter(_OneLinePerFailedSite())


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition of the IO tasks: retry on transient failures only."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - anything else is not worth another try
        return loop.is_transient(exc)
    return False


IO = {"retries": len(loop.IO_RETRY_DELAYS), "retry_delay_seconds": exponential_backoff(backoff_factor=2),
      "retry_condition_fn": _transient}


def _flow_run_id() -> str | None:
    fid = flow_run.get_id()
    return str(fid) if fid else None


@task(name="prepare-run", **IO)
def prepare_run(config_path: str, site_ids: list[str] | None, coefficients: str | None = None,
                output_dir: str | None = None) -> RunContext:
    """Validate the shared inputs, open the ledger and record the run."""
    return loop.start_run(config_path, site_ids, coefficients, flow_run_id=_flow_run_id(), output_dir=output_dir)


@task(name="meter-sites", task_run_name="meter-{label}")
def meter_batch(ctx: RunContext, site_ids: list[str], params: SiteParams, report_maps: bool = False,
                label: str = "") -> list[dict[str, Any]] | State:
    """A batch of sites (``carbon.pipeline.loop.meter_sites``): one task run, one contract check
    of their tables, one ledger transaction. Each site's record, failed ones with their message
    (each also logged, one line); a batch of one failed site fails this task run, with the
    site's message."""
    for site_id in site_ids:
        progress.emit(site_id, "started")
    outcomes = loop.meter_sites(ctx, list(site_ids), params, report_maps=report_maps)
    for o in outcomes:
        if o.status == "failed":
            if o.exception is not None:
                log.debug("site %s failed", o.site_id, exc_info=o.exception)
            if len(outcomes) > 1:
                log.warning("%s%s", FAILED_SITE.format(o.site_id), o.error)
    if len(outcomes) == 1 and outcomes[0].status == "failed":
        return Failed(message=FAILED_SITE.format(outcomes[0].site_id) + (outcomes[0].error or "failed"))
    return loop.batch_records(outcomes)  # each site's inputs: in the ledger, read back for the manifest


def batch_label(site_ids: list[str]) -> str:
    """A batch's task run name: its site, or its first site and how many more."""
    return site_ids[0] if len(site_ids) == 1 else f"{site_ids[0]}+{len(site_ids) - 1}"


def outcomes_of(site_ids: list[str], future: Any) -> list[Outcome]:
    """The outcomes of a batch's sites from its task run (``meter_batch``): each site's record;
    a batch of one failed site, its message; a batch whose worker process died, ``LOST`` for
    each of its sites; a task run that itself failed otherwise, its message for each."""
    try:
        future.wait()
    except Exception as exc:  # noqa: BLE001 - reported as text
        return [Outcome(s, LOST if worker_lost(exc) else "failed", error=str(exc)) for s in site_ids]
    head = FAILED_SITE.format(site_ids[0])
    if len(site_ids) == 1 and future.state.is_failed() and str(future.state.message or "").startswith(head):
        return [Outcome(site_ids[0], "failed", error=str(future.state.message)[len(head):])]
    if future.state.is_completed():
        return [loop.outcome_from_record(rec) for rec in future.result()]
    try:
        future.result(raise_on_failure=True)
        message = future.state.message or "failed"
    except Exception as exc:  # noqa: BLE001 - reported as text
        if worker_lost(exc):
            return [Outcome(s, LOST, error=str(exc)) for s in site_ids]
        message = str(exc)
    return [Outcome(s, "failed", error=message) for s in site_ids]


#: The status ``outcomes_of`` gives the sites of a batch whose worker process died (the flow
#: meters them again apart: carbon/pipeline/isolate.py).
LOST = "lost"
#: What a process pool (concurrent.futures) and Dask raise for a task whose worker died.
_LOST_ERRORS = ("BrokenProcessPool", "KilledWorker")


def worker_lost(exc: BaseException | None) -> bool:
    """The batch's worker process died under it (killed, out of memory, a native crash)."""
    seen = 0
    while exc is not None and seen < 10:
        if type(exc).__name__ in _LOST_ERRORS:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def hand_over(reports: ReportPool, outcome: Outcome) -> None:
    """Give a site that ran (published or failed; not skipped) to the report pool."""
    if outcome.status != "skipped":
        reports.submit(outcome.site_id)


@task(name="site-reports")
def site_reports(ctx: RunContext, outcomes: list[Outcome]) -> dict[str, str]:
    """One HTML report per site that ran (a failed site's page says what failed beside its last
    estimate), drawn in parallel processes; a report that cannot be drawn is noted, not fatal."""
    ran = [o for o in outcomes if o.status != "skipped"]
    with ReportPool(ctx.config, min(report_workers(), max(1, len(ran)))) as pool:
        for o in ran:
            hand_over(pool, o)
        return pool.pages()


#: Rows of a run's Prefect artifacts (its sinks, failures, reports): the UI shows a glance, the
#: ledger and the manifest hold every site.
ARTIFACT_MAX_ROWS = 1000


@task(name="finish-run", **IO)
def finish_run(ctx: RunContext, outcomes: list[Outcome], reports: dict[str, str] | None = None) -> dict[str, Any]:
    """Close the run (``carbon.pipeline.loop.finish_run``) and publish its Prefect artifacts."""
    summary = loop.finish_run(ctx, outcomes, reports)
    sinks = Ledger(ctx.config.ledger_url).current("sinks", columns=[
        "site_id", "period_start", "period_end", "is_full_period", "area_ha", "stock_change_tc", "sink_tco2e",
        "annual_sink_tco2e"])
    sinks = sinks[sinks["is_full_period"] & sinks["site_id"].isin([o.site_id for o in outcomes])]
    table = [
        {"site_id": r.site_id, "period": f"{r.period_start}-{r.period_end}", "area_ha": round(r.area_ha, 2),
         "stock_change_tc": round(r.stock_change_tc, 2), "sink_tco2e": round(r.sink_tco2e, 2),
         "annual_sink_tco2e": round(r.annual_sink_tco2e, 2)}
        for r in sinks.head(ARTIFACT_MAX_ROWS).itertuples()
    ]
    shown = f"the first {ARTIFACT_MAX_ROWS:,} of {len(sinks):,} sites; each site's: carbon-sink results" \
        if len(sinks) > ARTIFACT_MAX_ROWS else "each site"
    create_table_artifact(table=table or [{"site_id": "-", "note": "no published sinks"}],
                          key="site-sinks",
                          description=f"Current official full-period sinks of the sites of run {ctx.run_id} (t CO2e, "
                                      f"removals positive; a scenario run leaves them unchanged): {shown}")
    failed = summary["failures"]
    lines = [f"# Metering run {ctx.run_id}", "", f"Status: **{summary['status']}** - {summary['n_sites']} sites, "
             f"{summary['n_sites'] - summary['n_failed'] - summary['n_skipped']} published, "
             f"{summary['n_skipped']} unchanged (skipped), {summary['n_failed']} failed.", "",
             f"Manifest: `{summary['manifest']}`"]
    if failed:
        lines += ["", "## Failures", ""] + [f"- `{s}`: {e}".replace("\n", "\n  ")
                                            for s, e in list(failed.items())[:ARTIFACT_MAX_ROWS]]
        if len(failed) > ARTIFACT_MAX_ROWS:
            lines.append(f"- and {len(failed) - ARTIFACT_MAX_ROWS:,} more: the manifest names each")
    if reports:
        lines += ["", "## Site reports", ""] + [
            f"- `{site}`: [{page}](file://{page})" if page.endswith(".html") else f"- `{site}`: {page}"
            for site, page in sorted(reports.items())[:ARTIFACT_MAX_ROWS]]
        if len(reports) > ARTIFACT_MAX_ROWS:
            lines.append(f"- and {len(reports) - ARTIFACT_MAX_ROWS:,} more: reports/<site_id>/index.html")
    create_markdown_artifact(markdown="\n".join(lines), key="metering-run-summary",
                             description="Sites published, skipped and failed in this run")
    return summary
