"""Reports drawn in worker processes while a run goes on (see ``ReportPool``). The drawing
modules (matplotlib, Jinja2) are imported by the processes that draw, not by every process
that holds a pool (a metering worker imports this module too)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from carbon.io.config import Config

log = logging.getLogger(__name__)


def report_workers() -> int:
    """Processes that draw reports at once: ``CARBON_SINK_REPORT_WORKERS``, else one per core."""
    return max(1, int(os.environ.get("CARBON_SINK_REPORT_WORKERS", "0")) or os.cpu_count() or 1)


def site_reports(cfg: Config, site_ids: list[str], workers: int | None = None,
                 maps: dict[str, str | Path] | None = None) -> dict[str, str]:
    """Every site's report (see ``ReportPool``): site id -> the page's path, or
    ``report failed: ...`` for a report that cannot be drawn. ``maps``: site id -> the
    density maps of its current estimate, when a run wrote them (see ``site_report``)."""
    site_ids = list(dict.fromkeys(site_ids))
    maps = maps or {}
    with ReportPool(cfg, min(workers or report_workers(), len(site_ids))) as pool:
        for s in site_ids:
            pool.submit(s, maps_dir=maps.get(s))
        return pool.pages()


class ReportPool:
    """Reports drawn in ``workers`` processes while the caller goes on (a metering run hands
    each site over as soon as it is published); ``pages()`` waits for them, then writes the
    portfolio page of every site (``carbon/report/portfolio.py``). A report that
    cannot be drawn is noted as ``report failed: ...``, not raised: the estimate is
    published, the report is a view of it.

    Drawing is mostly Python under the GIL, hence processes, started with ``spawn`` (a fresh
    interpreter: the caller, a flow, has threads, which ``fork`` would copy in whatever state
    they are). ``nice`` lowers the workers' priority, so that they draw with the CPU time the
    metering leaves. One worker, or a caller that may not start processes (a daemonic Dask
    worker), draws the reports in ``pages()``, one after another, in this process."""

    def __init__(self, cfg: Config, workers: int | None = None, *, nice: int = 0) -> None:
        self.cfg = cfg
        self.workers = workers or report_workers()
        self.nice = nice
        self._pool: ProcessPoolExecutor | None = None
        self._order: dict[str, str | Path | None] = {}
        self._futures: dict[str, Future[str]] = {}
        self._failed: dict[str, str] = {}
        #: The portfolio page written once the reports are drawn (or ``report failed: ...``).
        self.portfolio: str | None = None

    def __enter__(self) -> ReportPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)

    def submit(self, site_id: str, maps_dir: str | Path | None = None) -> None:
        """Draw ``site_id``'s report (``maps_dir``: see ``site_report``)."""
        if site_id in self._order:
            return
        self._order[site_id] = maps_dir
        if self.workers <= 1 or multiprocessing.current_process().daemon:
            return  # drawn here, in pages()
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_report_worker, initargs=(self.nice,))
        try:
            self._futures[site_id] = self._pool.submit(_report_or_failure, self.cfg, site_id, maps_dir)
        except BrokenExecutor as exc:  # a worker died (and took the pool with it): noted, like any report failure
            self._failed[site_id] = f"report failed: {type(exc).__name__}: {exc}"

    def pages(self) -> dict[str, str]:
        """Site id -> the page's path or ``report failed: ...``, in the order submitted."""
        pages: dict[str, str] = {}
        if any(s not in self._failed and s not in self._futures for s in self._order):
            release_freed_memory()  # drawn here: after the metering, in what it freed
        for s, maps_dir in self._order.items():
            if s in self._failed:
                pages[s] = self._failed[s]
            elif s in self._futures:
                try:
                    pages[s] = self._futures[s].result()
                except Exception as exc:  # noqa: BLE001 - a worker that died (BrokenProcessPool)
                    pages[s] = f"report failed: {type(exc).__name__}: {exc}"
            else:
                pages[s] = _report_or_failure(self.cfg, s, maps_dir)
        if pages:
            self.portfolio = _portfolio_or_failure(self.cfg)
        return pages


def release_freed_memory() -> None:
    """Give the heap that this process freed back to the system (glibc's ``malloc_trim``; a
    no-op elsewhere). A report drawn in the metering process comes after the sites' scans,
    whose threads' freed arenas the drawing thread would not reuse: without this, the report's
    memory adds to all that the metering held at its peak."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return
    if trim is not None:
        trim(0)


def _report_worker(nice: int) -> None:
    if nice:
        os.nice(nice)


def _portfolio_or_failure(cfg: Config) -> str:
    """The portfolio page (``<output_dir>/reports/index.html``), rewritten after the site
    reports; like them, a view of what was published: a failure is logged, not raised."""
    from carbon.report.portfolio import portfolio_report  # noqa: PLC0415 - matplotlib and Jinja2 only where drawn

    try:
        return str(portfolio_report(cfg))
    except Exception as exc:  # noqa: BLE001 - the estimates are published; the page is a view of them
        log.warning("the portfolio page cannot be written: %s: %s", type(exc).__name__, exc)
        return f"report failed: {type(exc).__name__}: {exc}"


def _report_or_failure(cfg: Config, site_id: str, maps_dir: str | Path | None = None) -> str:
    from carbon.report.page import site_report  # noqa: PLC0415 - matplotlib and Jinja2 only where drawn

    try:
        return str(site_report(cfg, site_id, maps_dir=maps_dir))
    except Exception as exc:  # noqa: BLE001 - the estimate is published; the report is a view of it
        return f"report failed: {type(exc).__name__}: {exc}"


