"""Prefect tasks: each reads, calls carbon/, writes, and passes paths and keys (never arrays).

A site is one task run (``meter_site``): its steps (input key, compute, publish, record)
are plain functions called inside it, so a site costs one task run's server round trips,
not five. IO steps retry with exponential backoff on transient errors (a ledger or file
system that is briefly unavailable): ``with_retries`` inside ``meter_site``, Prefect's
retry options on the run-level tasks. Computation never retries, and bad input never
retries.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.tasks import exponential_backoff

from carbon.config import Config, load_config
from carbon.engine import compute_site
from carbon.errors import CarbonSinkError
from carbon.ledger import Ledger, LedgerError
from carbon.publish import (
    code_version,
    ensure_output_dir,
    inside,
    read_site_tables,
    site_input_key,
    write_json,
    write_site_tables,
)
from carbon.sites import Site, load_per_version, load_sites, select_sites
from carbon.tables import CatalogEntry, CoefficientSet, load_catalog, load_coefficients, sha256_file
from flows import progress

T = TypeVar("T")

TRANSIENT_ERRNO = {errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.EINTR, errno.EIO, errno.ECONNRESET,
                   errno.ECONNREFUSED}


def is_transient(exc: BaseException) -> bool:
    """Worth another try: a busy or unreachable database, a file system that hiccups; never
    bad input, a missing folder or a broken contract."""
    if isinstance(exc, LedgerError):
        return exc.transient
    if isinstance(exc, OSError):
        return exc.errno in TRANSIENT_ERRNO
    return False


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition of the IO tasks: retry on transient failures only."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - anything else is not worth another try
        return is_transient(exc)
    return False


#: Waits before the retries of an IO step (seconds): 2, 4, 8.
IO_RETRY_DELAYS: tuple[float, ...] = tuple(exponential_backoff(backoff_factor=2)(3))
IO = {"retries": len(IO_RETRY_DELAYS), "retry_delay_seconds": exponential_backoff(backoff_factor=2),
      "retry_condition_fn": _transient}


_sleep = time.sleep  # the wait between tries (a test records it)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError  # noqa: PLC0415
    from prefect.logging import get_run_logger  # noqa: PLC0415

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("carbon_sink.flows")


def with_retries(step: Callable[..., T], *args: Any, delays: tuple[float, ...] | None = None, **kwargs: Any) -> T:
    """``step(*args, **kwargs)``, tried again after each of ``delays`` (default
    ``IO_RETRY_DELAYS``) while it fails with a transient error; any other error, or the
    last transient one, is raised as it is."""
    waits = IO_RETRY_DELAYS if delays is None else delays
    for attempt in range(len(waits) + 1):
        try:
            return step(*args, **kwargs)
        except Exception as exc:
            if attempt == len(waits) or not is_transient(exc):
                raise
            _logger().warning("%s failed with a transient error (%s); retry %d of %d in %g s",
                              getattr(step, "__name__", "step"), exc, attempt + 1, len(waits), waits[attempt])
            _sleep(waits[attempt])
    raise AssertionError("unreachable")  # pragma: no cover


def _config(config_path: str, coefficients: str | None = None) -> Config:
    cfg = load_config(config_path)
    if coefficients:
        from dataclasses import replace  # noqa: PLC0415

        cfg = replace(cfg, coefficients=Path(coefficients).resolve())
    return cfg


def run_config(run: dict[str, Any]) -> Config:
    """The configuration of a run (with its coefficient set, if the run chose another)."""
    return _config(run["config_path"], run["coefficients"])


def _inputs(cfg: Config, site_id: str) -> tuple[Site, list[CatalogEntry], CoefficientSet]:
    """The site, the land-cover catalog and the coefficient set, each file read and validated
    once per process (sites) or thread (catalog, coefficients) and file version."""
    site = select_sites(load_sites(cfg.sites), [site_id])[0]
    return (site, list(load_per_version(load_catalog, cfg.landcover)),
            load_per_version(load_coefficients, cfg.coefficients))


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run  # noqa: PLC0415

    fid = flow_run.get_id()
    return str(fid) if fid else None


@task(name="prepare-run", **IO)
def prepare_run(config_path: str, site_ids: list[str] | None, coefficients: str | None = None) -> dict[str, Any]:
    """Validate the shared inputs, open the ledger and record the run; returns its keys."""
    cfg = _config(config_path, coefficients)
    sites = select_sites(load_sites(cfg.sites), site_ids)
    load_catalog(cfg.landcover)
    load_coefficients(cfg.coefficients)
    ensure_output_dir(cfg.output_dir)
    ledger = Ledger(cfg.ledger_url)
    run_id = str(uuid.uuid4())
    version = code_version()
    ledger.start_run(run_id, config_path=str(cfg.path), code_version=version, flow_run_id=_flow_run_id())
    return {"run_id": run_id, "site_ids": [s.site_id for s in sites], "code_version": version,
            "config_path": str(cfg.path), "coefficients": coefficients}


# --- the steps of one site (plain functions, called inside meter_site) -------------------


def site_key(run: dict[str, Any], site_id: str, years: list[int] | None, start_year: int | None,
             method: str | None = None) -> dict[str, Any]:
    """The content key of everything the site's result depends on, and its last published key."""
    cfg = run_config(run)
    site, catalog, coefficients = _inputs(cfg, site_id)
    ledger = Ledger(cfg.ledger_url)

    def cached_sha256(path: str) -> str:
        st = Path(path).stat()
        known = ledger.cached_hash(path, st.st_size, st.st_mtime_ns)
        if known is None:
            known = sha256_file(path)
            ledger.store_hash(path, st.st_size, st.st_mtime_ns, known)
        return known

    key, inputs = site_input_key(site, catalog, coefficients, cfg.legends,
                                 years=years, start_year=start_year, method=method, hash_file=cached_sha256,
                                 uncertainty={"draws": cfg.monte_carlo_draws, "rule": cfg.conservative_rule},
                                 code=run["code_version"])
    return {"key": key, "inputs": inputs, "last_key": ledger.last_success_key(site_id)}


#: The run's scratch folder of density maps written for the reports (removed by finish-run).
REPORT_MAPS = "report-maps"


def maps_dir(run: dict[str, Any], site_id: str, *, kept: bool) -> Path:
    """Where a site's density maps go: the run's ``maps`` folder (``maps=True``: an output),
    or, written for its report only, a scratch folder the report removes."""
    return inside(run_config(run).output_dir, "runs", run["run_id"], "maps" if kept else REPORT_MAPS, site_id)


def compute_site_tables(run: dict[str, Any], site_id: str, years: list[int] | None, start_year: int | None,
                        maps: bool, method: str | None = None, report_maps: bool = False) -> str:
    """Compute and validate a site's tables and write them (CSV, Parquet, maps) under the run's
    folder; ``report_maps``: also the density maps for the site's report (a scratch folder),
    so that the report does not run the engine again."""
    cfg = run_config(run)
    site, catalog, coefficients = _inputs(cfg, site_id)
    site_dir = inside(cfg.output_dir, "runs", run["run_id"], "sites", site.site_id)
    density = maps_dir(run, site_id, kept=True) if maps else maps_dir(run, site_id, kept=False) if report_maps else None
    result = compute_site(site, catalog, coefficients,
                          legends_dir=cfg.legends, years=years, start_year=start_year, method=method,
                          draws=cfg.monte_carlo_draws, conservative_rule=cfg.conservative_rule, maps_dir=density)
    write_site_tables(result, site_dir)
    return str(site_dir)


def publish_site(run: dict[str, Any], site_id: str, site_dir: str, key: dict[str, Any],
                 flow_run_id: str | None = None) -> int:
    """Write the site's tables to the ledger in one transaction (idempotent within a run)."""
    cfg = run_config(run)
    tables = read_site_tables(Path(site_dir))
    inputs = key["inputs"]
    return Ledger(cfg.ledger_url).publish_site(
        run_id=run["run_id"], flow_run_id=flow_run_id, site_id=site_id, tables=tables, input_key=key["key"],
        inputs=inputs, coefficient_set=inputs["coefficient_set"], coefficient_sha256=inputs["coefficient_sha256"],
        code_version=run["code_version"],
    )


def record_site(run: dict[str, Any], site_id: str, status: str, error: str | None = None,
                input_key: str | None = None, flow_run_id: str | None = None) -> None:
    """A skipped or failed site: one ledger row."""
    cfg = run_config(run)
    Ledger(cfg.ledger_url).record_site(run_id=run["run_id"], flow_run_id=flow_run_id, site_id=site_id,
                                       status=status, code_version=run["code_version"], error=error,
                                       input_key=input_key)


@task(name="meter-site", task_run_name="meter-{site_id}")
def meter_site(run: dict[str, Any], site_id: str, force: bool = False, years: list[int] | None = None,
               start_year: int | None = None, maps: bool = False, method: str | None = None,
               report_maps: bool = False) -> dict[str, Any]:
    """One site: inputs key -> (skip if unchanged) -> compute and validate -> publish.

    The key, publish and record steps are IO and retry on transient errors
    (``with_retries``); computing never retries. A bad input fails this site alone: the
    failure is recorded in the ledger with its message, and the task fails with the same
    message. ``report_maps``: write the density maps its report draws (``maps_dir``).
    """
    progress.emit(site_id, "started")
    flow_run_id = _flow_run_id()
    try:
        key = with_retries(site_key, run, site_id, years, start_year, method)
        if not force and not maps and key["last_key"] == key["key"]:  # maps asked for: compute them
            with_retries(record_site, run, site_id, "skipped", input_key=key["key"], flow_run_id=flow_run_id)
            progress.emit(site_id, "skipped")
            return {"site_id": site_id, "status": "skipped", "input_key": key["key"]}
        site_dir = compute_site_tables(run, site_id, years, start_year, maps, method, report_maps)
        site_run_id = with_retries(publish_site, run, site_id, site_dir, key, flow_run_id=flow_run_id)
    except Exception as exc:
        # bad input fails this site alone; an unforeseen error too, recorded with its type
        message = str(exc) if isinstance(exc, CarbonSinkError) else f"unexpected {type(exc).__name__}: {exc}"
        try:
            with_retries(record_site, run, site_id, "failed", error=message, flow_run_id=flow_run_id)
        except Exception as not_recorded:  # noqa: BLE001 - the site's own error is the one to report
            exc.add_note(f"the failure could not be recorded in the ledger: {not_recorded}")
        progress.emit(site_id, "failed")
        raise
    progress.emit(site_id, "succeeded")
    return {"site_id": site_id, "status": "succeeded", "site_run_id": site_run_id, "site_dir": site_dir,
            "input_key": key["key"], "inputs": key["inputs"]}


def hand_over(reports: Any, run: dict[str, Any], outcome: dict[str, Any], *, maps: bool) -> None:
    """Give a site that ran (published or failed; not skipped) to a ``carbon.report.ReportPool``,
    with the density maps its metering wrote (``maps``: kept as outputs, else a scratch
    folder the report removes)."""
    if outcome["status"] == "succeeded":
        reports.submit(outcome["site_id"], maps_dir(run, outcome["site_id"], kept=maps), remove_maps=not maps)
    elif outcome["status"] == "failed":  # its page says what failed, beside its last estimate
        reports.submit(outcome["site_id"])


@task(name="site-reports")
def site_reports(run: dict[str, Any], outcomes: list[dict[str, Any]], maps: bool = False) -> dict[str, str]:
    """One HTML report per site that ran (a failed site's page says what failed beside its last
    estimate), drawn in parallel processes (``CARBON_SINK_REPORT_WORKERS``, default one per
    core); a report that cannot be drawn is noted, not fatal."""
    from carbon.report import ReportPool, report_workers  # noqa: PLC0415

    ran = [o for o in outcomes if o["status"] != "skipped"]
    with ReportPool(run_config(run), min(report_workers(), max(1, len(ran)))) as pool:
        for o in ran:
            hand_over(pool, run, o, maps=maps)
        return pool.pages()


@task(name="finish-run", **IO)
def finish_run(run: dict[str, Any], outcomes: list[dict[str, Any]], reports: dict[str, str] | None = None,
               ) -> dict[str, Any]:
    """Close the run: ledger status, run manifest (JSON) and Prefect artifacts."""
    cfg = run_config(run)
    ledger = Ledger(cfg.ledger_url)
    failed = [o for o in outcomes if o["status"] == "failed"]
    skipped = [o for o in outcomes if o["status"] == "skipped"]
    status = "completed" if not failed else ("failed" if len(failed) == len(outcomes) else "partial")
    run_dir = inside(cfg.output_dir, "runs", run["run_id"])
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "run_id": run["run_id"],
        "flow_run_id": _flow_run_id(),
        "config": str(cfg.path),
        "config_sha256": sha256_file(cfg.path),
        "ledger": Ledger(cfg.ledger_url).safe_url,
        "code_version": run["code_version"],
        "status": status,
        "sites": {o["site_id"]: {k: v for k, v in o.items() if k != "site_id"} for o in outcomes},
        "reports": reports or {},
    }
    write_json(run_dir / "manifest.json", manifest)
    shutil.rmtree(run_dir / REPORT_MAPS, ignore_errors=True)  # maps of reports that were not drawn
    ledger.finish_run(run["run_id"], status=status, n_sites=len(outcomes), n_failed=len(failed),
                      n_skipped=len(skipped))
    sinks = ledger.current("sinks")
    sinks = sinks[sinks["is_full_period"] & sinks["site_id"].isin([o["site_id"] for o in outcomes])]
    table = [
        {"site_id": r.site_id, "period": f"{r.period_start}-{r.period_end}", "area_ha": round(r.area_ha, 2),
         "stock_change_tc": round(r.stock_change_tc, 2), "sink_tco2e": round(r.sink_tco2e, 2),
         "annual_sink_tco2e": round(r.annual_sink_tco2e, 2)}
        for r in sinks.itertuples()
    ]
    create_table_artifact(table=table or [{"site_id": "-", "note": "no published sinks"}], key="site-sinks",
                          description=f"Current full-period sinks (t CO2e, removals positive), run {run['run_id']}")
    lines = [f"# Metering run {run['run_id']}", "", f"Status: **{status}** - {len(outcomes)} sites, "
             f"{len(outcomes) - len(failed) - len(skipped)} published, {len(skipped)} unchanged (skipped), "
             f"{len(failed)} failed.", "", f"Manifest: `{run_dir / 'manifest.json'}`"]
    if failed:
        lines += ["", "## Failures", ""] + [f"- `{o['site_id']}`: {o['error']}".replace("\n", "\n  ") for o in failed]
    if reports:
        lines += ["", "## Site reports", ""] + [
            f"- `{site}`: [{page}](file://{page})" if page.endswith(".html") else f"- `{site}`: {page}"
            for site, page in sorted(reports.items())]
    create_markdown_artifact(markdown="\n".join(lines), key="metering-run-summary",
                             description="Sites published, skipped and failed in this run")
    return {"run_id": run["run_id"], "status": status, "n_sites": len(outcomes), "n_failed": len(failed),
            "reports": reports or {},
            "n_skipped": len(skipped), "manifest": str(run_dir / "manifest.json"), "failures":
            {o["site_id"]: o["error"] for o in failed}}


