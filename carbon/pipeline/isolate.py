"""Sites metered one at a time in worker processes that may die (docs/operations.md, "A worker
process lost").

A process that meters a batch can die without raising anything: killed by the kernel's
out-of-memory killer, by an operator, or by a crash in a native library on a bad file. Its
batch then publishes nothing unless it had committed (a batch is one ledger transaction), and a process pool that lost
a worker fails every batch it had not finished. ``meter_apart`` meters such sites again, each
alone (``loop.meter_sites`` on a batch of one), in fresh worker processes that say which site
they start before they start it. A site whose process dies is tried once more, alone in a
pool of one (the first death may have been another site's memory); if it dies again it fails,
recorded in the ledger with how its process ended, and the others are published as usual.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from typing import Any

from carbon.io.ledger import Ledger
from carbon.io.staging import remove_staging
from carbon.pipeline import loop
from carbon.pipeline.loop import Outcome, RunContext, SiteParams

log = logging.getLogger(__name__)

#: Deaths before a site is started, per worker, after which the pool gives up (a process that
#: cannot start at all: a broken environment, a memory limit reached at import).
EARLY_DEATHS = 3
#: How often an idle worker checks that the process that started it is still there.
ORPHAN_CHECK_S = 5.0


def _serve(ctx: RunContext, params: SiteParams, report_maps: bool, conn: Any) -> None:
    """A worker: meter each site it is given, alone; say ``start`` before and ``done`` after
    (written straight to the pipe: a process killed a moment later has said it). It ends on
    ``None``, or when the process that started it is gone (not left behind idle)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent says it and ends these
    parent = os.getppid()
    try:
        while True:
            if not conn.poll(ORPHAN_CHECK_S):
                if os.getppid() != parent:
                    return
                continue
            site_id = conn.recv()
            if site_id is None:
                return
            conn.send(("start", site_id))
            try:
                (outcome,) = loop.meter_sites(ctx, [site_id], params, report_maps=report_maps)
                (record,) = loop.batch_records([outcome])
            except Exception as exc:  # noqa: BLE001 - meter_sites fails a site alone; anything else is said here
                record = {"site_id": site_id, "status": "failed", "error": loop.failure_message(exc)}
            conn.send(("done", record))
    except (EOFError, OSError):  # the process that started it is gone: nothing to say, nobody to say it to
        return


def how_it_ended(exitcode: int | None) -> str:
    """A dead process's end in words: the signal (with what usually sends it) or the exit code."""
    if exitcode is None:
        return "ended"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        why = {"SIGKILL": ", e.g. the out-of-memory killer", "SIGSEGV": ", a crash in native code"}.get(name, "")
        return f"was killed by {name}{why}"
    return f"exited with code {exitcode}"


@dataclass
class _Worker:
    process: Any
    conn: Any
    site: str | None = None
    started: bool = False


@dataclass
class _Pool:
    """Worker processes fed one site at a time by this process, each over its own pipe."""

    ctx: RunContext
    params: SiteParams
    report_maps: bool
    size: int
    spawn: Any = field(default_factory=lambda: mp.get_context("spawn"))
    workers: list[_Worker] = field(default_factory=list)

    def start(self) -> None:
        here, there = self.spawn.Pipe()
        process = self.spawn.Process(target=_serve, args=(self.ctx, self.params, self.report_maps, there),
                                     daemon=True)
        process.start()
        there.close()
        self.workers.append(_Worker(process, here))

    def kill(self) -> None:
        for w in self.workers:
            if w.process.is_alive():
                w.process.kill()

    def close(self) -> None:
        for w in self.workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self.workers:
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        self.workers.clear()

    def run(self, site_ids: list[str], on_done: Callable[[dict[str, Any]], None],
            on_death: Callable[[str, str], None]) -> None:
        """Every site of ``site_ids`` metered once; ``on_done(record)`` as each ends,
        ``on_death(site_id, how)`` for each whose process died while metering it. Workers that
        die before they start a site (idle, or at their own start) are replaced, a few times."""
        todo = list(reversed(site_ids))
        for _ in range(min(self.size, len(todo))):
            self.start()
        early_deaths = 0
        while todo or any(w.site is not None for w in self.workers):
            for w in list(self.workers):
                if w.site is None and todo:
                    w.site, w.started = todo.pop(), False
                    try:
                        w.conn.send(w.site)
                    except OSError:  # it died idle: its site goes back, below
                        pass
            busy = [w for w in self.workers if w.site is not None]
            ready = mp_connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for w in busy:
                if w.conn in ready or w.process.sentinel in ready:
                    self._hear(w, on_done)
                if w.site is not None and not w.process.is_alive():
                    self._hear(w, on_done)  # what it said before it died
                    if w.site is not None:
                        if w.started:
                            on_death(w.site, how_it_ended(w.process.exitcode))
                        else:  # died before it began this site: the site goes to another worker
                            todo.append(w.site)
                            early_deaths += 1
                    w.conn.close()
                    self.workers.remove(w)
                    if early_deaths > EARLY_DEATHS * self.size:
                        raise RuntimeError(f"worker processes die before they start a site ({early_deaths} times; "
                                           f"the last {how_it_ended(w.process.exitcode)})")
                    if todo and len(self.workers) < self.size:
                        self.start()

    @staticmethod
    def _hear(w: _Worker, on_done: Callable[[dict[str, Any]], None]) -> None:
        while True:
            try:
                if not w.conn.poll():
                    return
                kind, what = w.conn.recv()
            except (EOFError, OSError):
                return
            if kind == "start":
                w.started = True
            elif kind == "done":
                w.site, w.started = None, False
                on_done(what)


def meter_apart(ctx: RunContext, site_ids: list[str], params: SiteParams, *, processes: int = 1,
                report_maps: bool = False, on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """``site_ids`` metered again, each alone, in ``processes`` fresh worker processes; a site
    whose process dies is tried once more alone, then fails with how its process ended (recorded
    in the ledger). Every site's outcome, in order; ``on_done`` as each ends.

    Called once every batch of the run has ended (the flow gathers them all first): a site that
    this run already published or recorded (a batch that died after its commit) keeps that
    record and is not metered again, and at the end the hidden folders the dead processes left are
    removed."""
    outcomes: dict[str, Outcome] = {}
    died: dict[str, str] = {}

    def done(record: dict[str, Any]) -> None:
        outcome = loop.outcome_from_record(record)
        outcomes[outcome.site_id] = outcome
        died.pop(outcome.site_id, None)
        if on_done is not None:
            on_done(outcome)

    def death(site_id: str, how: str) -> None:
        log.warning("site %s: the process metering it %s", site_id, how)
        died[site_id] = how

    def settle(ids: list[str]) -> None:  # the sites this run has a record of keep it
        for outcome in (_recorded(ctx, ids) if ids else {}).values():
            outcomes[outcome.site_id] = outcome
            died.pop(outcome.site_id, None)
            if on_done is not None:
                on_done(outcome)

    settle(site_ids)
    todo = [s for s in site_ids if s not in outcomes]
    for size, ids in ((max(1, processes), todo), (1, None)):
        if ids is None:  # the second try: each site whose process died, alone among these processes
            settle(list(died))  # (a process that died after its commit)
            ids = [s for s in todo if s in died]
        if not ids:
            continue
        pool = _Pool(ctx, params, report_maps, size)
        try:
            pool.run(ids, done, death)
        except BaseException:  # stopped (SIGTERM, Ctrl-C) or given up: the workers go now, not after their site
            pool.kill()
            raise
        finally:
            pool.close()
    if died:  # died twice: failed, unless the process died after its commit, before it could say so
        settle(list(died))
        failures = {site_id: f"the process metering this site {how}, twice (once alone); the run's other sites "
                             "were metered" for site_id, how in died.items()}
        for site_id, error in failures.items():
            outcomes[site_id] = Outcome(site_id, "failed", error=error)
            if on_done is not None:
                on_done(outcomes[site_id])
        loop.record_failures(ctx, failures)
    remove_staging(ctx.config.output_dir, ctx.run_id)  # what the dead processes left half-written
    return [outcomes[s] for s in site_ids]


def _recorded(ctx: RunContext, site_ids: list[str]) -> dict[str, Outcome]:
    """The sites of ``site_ids`` that this run has already published or recorded, as their
    latest record says."""
    wanted = set(site_ids)
    latest: dict[str, dict[str, Any]] = {}
    for row in Ledger(ctx.config.ledger_url).run_site_runs(ctx.run_id):  # in order: the last one stays
        if row["site_id"] in wanted:
            latest[row["site_id"]] = row
    found = {}
    for site_id, row in latest.items():
        if row["status"] == "succeeded":
            found[site_id] = Outcome(site_id, "succeeded", value={
                "site_run_id": row["site_run_id"], "site_dir": str(loop.site_dir_of(ctx, site_id)),
                "input_key": row["input_key"], "scenario": row["scenario"]})
        elif row["status"] == "skipped":
            found[site_id] = Outcome(site_id, "skipped", value={"input_key": row["input_key"]})
        else:
            found[site_id] = Outcome(site_id, "failed", error=row["error"] or "failed")
    return found
