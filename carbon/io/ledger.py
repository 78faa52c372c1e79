"""The published ledger: an append-only record of every run, in SQLite or PostgreSQL.

SQLAlchemy Core; the URL picks the database (``sqlite:///path`` by default,
``postgresql+psycopg://...`` for a production center). Rules (docs/ledger.md):

* Append-only: rows are inserted, never updated or deleted, except the closing fields
  of a ``runs`` row (status, finished time, counts).
* One site's rows (its ``site_runs`` row and every table row) are written in one
  transaction, so a half-written site is never visible.
* The current estimate of a site and period is the row of its latest successful site run.
* Tamper evidence: every published record (a site run with a digest of each row it wrote, a
  run's closing, an export's vintages) is appended to ``ledger_chain`` in the transaction that
  writes it, with ``record_hash = sha256(previous record_hash + canonical JSON of the record)``;
  appends are serialised by the ledger's write lock. ``carbon.pipeline.verify`` checks it.
* The schema is versioned by Alembic revisions (``carbon/io/migrations``): a new ledger is
  created at the head revision; an older one is refused until ``carbon-sink ledger upgrade``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from carbon.errors import CarbonSinkError
from carbon.rules.vocabulary import GAIN_LOSS_POOLS, POOLS, UNCERTAINTY_FIELDS

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(36), primary_key=True),
    sa.Column("flow_run_id", sa.String(36), nullable=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # running | completed | partial | failed
    sa.Column("config_path", sa.Text, nullable=False),
    sa.Column("code_version", sa.String(64), nullable=False),
    sa.Column("n_sites", sa.Integer, nullable=True),
    sa.Column("n_failed", sa.Integer, nullable=True),
    sa.Column("n_skipped", sa.Integer, nullable=True),
    # where the run's process lives and its last sign of life (revision 0002; stale runs)
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
)

site_runs = sa.Table(
    "site_runs",
    metadata,
    sa.Column("site_run_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("flow_run_id", sa.String(36), nullable=True),
    sa.Column("site_id", sa.String(64), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),  # succeeded | failed | skipped
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("input_key", sa.String(64), nullable=True, index=True),
    sa.Column("inputs_json", sa.Text, nullable=True),
    sa.Column("coefficient_set", sa.String(128), nullable=True),
    sa.Column("coefficient_sha256", sa.String(64), nullable=True),
    sa.Column("code_version", sa.String(64), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    # revision 0003: NULL for the official estimate, else the analyst's scenario; its parameters
    sa.Column("scenario", sa.String(200), nullable=True, index=True),
    sa.Column("parameters_json", sa.Text, nullable=True),
)

_float = sa.Float(precision=53)
stocks = sa.Table(
    "stocks",
    metadata,
    sa.Column("site_run_id", sa.Integer, sa.ForeignKey("site_runs.site_run_id"), nullable=False, index=True),
    sa.Column("site_id", sa.String(64), nullable=False),
    sa.Column("year", sa.Integer, nullable=False),
    sa.Column("area_ha", _float, nullable=False),
    sa.Column("nodata_ha", _float, nullable=False),
    *[sa.Column(f"stock_{p}_tc", _float, nullable=False) for p in POOLS],
    sa.Column("stock_tc", _float, nullable=False),
    sa.Column("stock_tc_per_ha", _float, nullable=False),
    sa.Column("legend", sa.String(64), nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    *[sa.Column(f"stock_tc_{f}", _float, nullable=f.startswith("u")) for f in UNCERTAINTY_FIELDS],
    sa.Column("uncertainty_method", sa.Text, nullable=False),
)

sinks = sa.Table(
    "sinks",
    metadata,
    sa.Column("site_run_id", sa.Integer, sa.ForeignKey("site_runs.site_run_id"), nullable=False, index=True),
    sa.Column("site_id", sa.String(64), nullable=False),
    sa.Column("period_start", sa.Integer, nullable=False),
    sa.Column("period_end", sa.Integer, nullable=False),
    sa.Column("period_years", sa.Integer, nullable=False),
    sa.Column("is_full_period", sa.Boolean, nullable=False),
    sa.Column("area_ha", _float, nullable=False),
    sa.Column("nodata_ha", _float, nullable=False),
    sa.Column("stock_start_tc", _float, nullable=False),
    sa.Column("stock_end_tc", _float, nullable=False),
    sa.Column("stock_change_tc", _float, nullable=False),
    *[sa.Column(f"stock_change_{p}_tc", _float, nullable=False) for p in POOLS],
    *[sa.Column(f"{kind}_{p}_tc", _float, nullable=False) for p in GAIN_LOSS_POOLS for kind in ("gain", "loss")],
    sa.Column("sink_tco2e", _float, nullable=False),
    sa.Column("annual_sink_tco2e", _float, nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    *[sa.Column(f"sink_tco2e_{f}", _float, nullable=f.startswith("u")) for f in UNCERTAINTY_FIELDS],
    sa.Column("conservative_sink_tco2e", _float, nullable=False),
    sa.Column("conservative_rule", sa.String(16), nullable=False),
    sa.Column("uncertainty_method", sa.Text, nullable=False),
)

transitions = sa.Table(
    "transitions",
    metadata,
    sa.Column("site_run_id", sa.Integer, sa.ForeignKey("site_runs.site_run_id"), nullable=False, index=True),
    sa.Column("site_id", sa.String(64), nullable=False),
    sa.Column("period_start", sa.Integer, nullable=False),
    sa.Column("period_end", sa.Integer, nullable=False),
    sa.Column("from_class", sa.String(64), nullable=False),
    sa.Column("to_class", sa.String(64), nullable=False),
    sa.Column("area_ha", _float, nullable=False),
)

file_hashes = sa.Table(
    "file_hashes",
    metadata,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("size", sa.BigInteger, primary_key=True),
    sa.Column("mtime_ns", sa.BigInteger, primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
)

exported_vintages = sa.Table(
    "exported_vintages",
    metadata,
    sa.Column("registry", sa.String(16), nullable=False),
    sa.Column("site_id", sa.String(64), nullable=False, index=True),
    sa.Column("vintage_start", sa.String(10), nullable=False),
    sa.Column("vintage_end", sa.String(10), nullable=False),
    sa.Column("site_run_id", sa.Integer, sa.ForeignKey("site_runs.site_run_id"), nullable=False),
    sa.Column("period_start", sa.Integer, nullable=False),
    sa.Column("period_end", sa.Integer, nullable=False),
    sa.Column("issuable_tco2e", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("registry", "site_id", "vintage_start", "vintage_end", "site_run_id", "period_start",
                        "period_end"),
)

class_areas = sa.Table(
    "class_areas",
    metadata,
    sa.Column("site_run_id", sa.Integer, sa.ForeignKey("site_runs.site_run_id"), nullable=False, index=True),
    sa.Column("site_id", sa.String(64), nullable=False),
    sa.Column("year", sa.Integer, nullable=False),
    sa.Column("carbon_class", sa.String(64), nullable=False),
    sa.Column("area_ha", _float, nullable=False),
    sa.Column("area_adjusted_ha", _float, nullable=False),
    sa.Column("area_adjusted_ha_lower95", _float, nullable=False),
    sa.Column("area_adjusted_ha_upper95", _float, nullable=False),
    sa.Column("adjusted", sa.Boolean, nullable=False),
    sa.Column("accuracy_sample", sa.Text, nullable=False),
)

#: The hash chain (revision 0002): one record per published site run, run closing and export,
#: each hashed with the record before it. Appended to, never updated.
ledger_chain = sa.Table(
    "ledger_chain",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # site_run | run | export
    sa.Column("ref", sa.String(64), nullable=False),  # site_run_id, run_id or registry
    sa.Column("run_id", sa.String(36), nullable=True),
    sa.Column("site_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("content", sa.Text, nullable=False),  # canonical JSON of what was published
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("record_hash", sa.String(64), nullable=False, unique=True),
    sa.Index("ix_ledger_chain_kind_ref", "kind", "ref"),
)

#: The tables of a site run. ``class_areas`` came after schema version 4: a version-4 ledger gets
#: the table when opened (a new table, no change to the others), and its older runs have none.
TABLES = {"stocks": stocks, "sinks": sinks, "transitions": transitions, "class_areas": class_areas}


class LedgerError(CarbonSinkError):
    """The ledger database cannot be reached or written. ``transient``: worth another try
    (a lock, a timeout, a dropped connection), as opposed to a wrong URL, folder or schema."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


#: The ledger's schema revision (``carbon/io/migrations/versions``): a new ledger is created at
#: ``HEAD``; one behind it is refused until upgraded (``carbon-sink ledger upgrade``).
HEAD = "0003"
REVISIONS = ("0001", "0002", "0003")
#: A ledger without Alembic's version table, written before the revisions, holds this schema
#: version in ``ledger_meta``: it is revision 0001. The head writes 5 there, so that a
#: carbon-sink from before the revisions refuses an upgraded ledger instead of writing to it
#: around the hash chain.
LEGACY_SCHEMA_VERSION = "4"
SCHEMA_VERSION = 5
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

meta = sa.Table(
    "ledger_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

_ENGINES: dict[str, sa.Engine] = {}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Ledger:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            db = Path(url.removeprefix("sqlite:///"))
            if not db.parent.is_dir():
                raise LedgerError(f"ledger folder does not exist: {db.parent} (ledger {url})")
        if url in _ENGINES:
            self.engine = _ENGINES[url]
            return
        try:
            self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
            if self.engine.dialect.name == "sqlite":
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            self._check_schema()
        except OperationalError as exc:
            raise LedgerError(f"cannot open ledger {self.safe_url}: {exc.orig}", transient=True) from None
        except (SQLAlchemyError, ImportError) as exc:
            raise LedgerError(f"cannot open ledger {self.safe_url}: {exc}") from None
        _ENGINES[url] = self.engine

    def _check_schema(self) -> None:
        with self.engine.connect() as c:
            found = revision(c, self.safe_url)
        if found is None:  # a new ledger: created at the head (another process may be doing the same)
            found = _migrate(self.url, self.safe_url, create_only=True)[1]
        if found != HEAD:
            raise LedgerError(behind_message(self.safe_url, found))

    @property
    def safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise LedgerError(f"ledger {self.safe_url} cannot be written: {exc.orig}", transient=True) from None

    # --- runs ---------------------------------------------------------------------------

    def start_run(self, run_id: str, *, config_path: str, code_version: str, flow_run_id: str | None) -> None:
        """Record a running run, with the host and process that run it (to tell a dead run later)."""
        with self._tx() as c:
            started = now()
            c.execute(runs.insert().values(run_id=run_id, flow_run_id=flow_run_id, started_at=started, status="running",
                                           config_path=config_path, code_version=code_version,
                                           host=socket.gethostname(), pid=os.getpid(), heartbeat_at=started))

    def finish_run(self, run_id: str, *, status: str, n_sites: int, n_failed: int, n_skipped: int) -> None:
        with self._tx() as c:
            _lock(c)
            c.execute(runs.update().where(runs.c.run_id == run_id).values(
                status=status, finished_at=now(), n_sites=n_sites, n_failed=n_failed, n_skipped=n_skipped))
            _chain_run(c, run_id)

    def mark_stale_runs(self, max_age: dt.timedelta | None = None) -> list[dict[str, Any]]:
        """Mark ``stale`` every run still ``running`` whose process is provably gone: recorded on
        this host with a process id that is no longer alive (or now belongs to a process started
        after the run), or without a sign of life (start, site publication) for longer than
        ``max_age`` (default ``stale_after()``). Start times are kept; each marking is chained.
        Returns the runs marked, each with ``reason``. Runs of live processes are left alone:
        several runs may write to one ledger at once."""
        limit = stale_after() if max_age is None else max_age
        host, moment = socket.gethostname(), now()
        marked = []
        with self._tx() as c:
            _lock(c)
            for r in c.execute(sa.select(runs).where(runs.c.status == "running").order_by(runs.c.started_at)).mappings():
                reason = _stale_reason(r, host, moment, limit)
                if reason is None:
                    continue
                c.execute(runs.update().where(runs.c.run_id == r["run_id"], runs.c.status == "running")
                          .values(status="stale"))
                _chain_run(c, r["run_id"])
                marked.append({"run_id": r["run_id"], "started_at": _utc(r["started_at"]), "host": r["host"],
                               "pid": r["pid"], "reason": reason})
        return marked

    # --- sites --------------------------------------------------------------------------

    def publish_site(self, *, run_id: str, flow_run_id: str | None, site_id: str, tables: dict[str, pd.DataFrame],
                     input_key: str, inputs: dict[str, Any], coefficient_set: str, coefficient_sha256: str,
                     code_version: str, scenario: str | None = None,
                     parameters: dict[str, Any] | None = None) -> int:
        """Write one site's results in one transaction; returns its site_run_id. ``scenario``:
        an analyst's scenario (never the official estimate), with its ``parameters``.

        Idempotent within a run: publishing the same site and inputs again for the same run
        (a task re-run after a worker died past the commit) returns the row already written."""
        return self.publish_sites([dict(
            run_id=run_id, flow_run_id=flow_run_id, site_id=site_id, tables=tables, input_key=input_key,
            inputs=inputs, coefficient_set=coefficient_set, coefficient_sha256=coefficient_sha256,
            code_version=code_version, scenario=scenario, parameters=parameters)])[0]

    def publish_sites(self, sites: list[dict[str, Any]]) -> list[int]:
        """Several sites' results (each a dict of ``publish_site``'s arguments) in one
        transaction: all are published or none; their site_run_ids, in order."""
        with self._tx() as c:
            _lock(c)
            ids = _publish_many(c, sites)
            for run_id in dict.fromkeys(site["run_id"] for site in sites):
                _heartbeat(c, run_id)
        return ids

    def record_site(self, *, run_id: str, flow_run_id: str | None, site_id: str, status: str, code_version: str,
                    error: str | None = None, input_key: str | None = None, scenario: str | None = None,
                    parameters: dict[str, Any] | None = None) -> None:
        """A failed or skipped site: one row, no results."""
        self.record_sites([dict(run_id=run_id, flow_run_id=flow_run_id, site_id=site_id, status=status,
                                code_version=code_version, error=error, input_key=input_key, scenario=scenario,
                                parameters=parameters)])

    def record_sites(self, sites: list[dict[str, Any]]) -> None:
        """Several failed or skipped sites (each a dict of ``record_site``'s arguments), one
        transaction."""
        if not sites:
            return
        with self._tx() as c:
            _lock(c)
            new = []
            for site in sites:
                parameters = site.get("parameters")
                new.append(int(c.execute(site_runs.insert().values(
                    run_id=site["run_id"], flow_run_id=site["flow_run_id"], site_id=site["site_id"],
                    status=site["status"], created_at=now(), code_version=site["code_version"],
                    error=site.get("error"), input_key=site.get("input_key"), scenario=site.get("scenario"),
                    parameters_json=None if parameters is None else json.dumps(parameters, sort_keys=True,
                                                                              default=str),
                )).inserted_primary_key[0]))  # type: ignore[index]
            _chain_site_runs(c, new)
            for run_id in dict.fromkeys(site["run_id"] for site in sites):
                _heartbeat(c, run_id)

    def last_success_key(self, site_id: str) -> str | None:
        """The input key of the site's current official estimate (scenarios never count)."""
        q = (sa.select(site_runs.c.input_key).where(site_runs.c.site_id == site_id, site_runs.c.status == "succeeded",
                                                    site_runs.c.scenario.is_(None))
             .order_by(site_runs.c.site_run_id.desc()).limit(1))
        with self.engine.connect() as c:
            return c.execute(q).scalar_one_or_none()

    # --- reading ------------------------------------------------------------------------

    def current(self, name: str, site_id: str | None = None, scenario: str | None = None,
                columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Current official estimates: every row of each site's latest successful official site
        run (a scenario is never official). An older run's periods or years that the latest run
        no longer has are not current (a re-run with other years replaces the site's estimate as
        a whole). With ``scenario``: the latest site run of that scenario instead. ``columns``:
        only those (of the table or of its site run), for a summary of many sites."""
        table = TABLES[name]
        latest = (sa.select(site_runs.c.site_id, sa.func.max(site_runs.c.site_run_id).label("latest"))
                  .where(site_runs.c.status == "succeeded", _same_scenario(scenario))
                  .group_by(site_runs.c.site_id).subquery())
        keys = {"stocks": ["site_id", "year"], "class_areas": ["site_id", "year", "carbon_class"]}.get(
            name, ["site_id", "period_start", "period_end"])
        chosen = ([table, site_runs.c.run_id, site_runs.c.created_at, site_runs.c.coefficient_set,
                   site_runs.c.coefficient_sha256, site_runs.c.code_version, site_runs.c.scenario] if columns is None
                  else [table.c[c] if c in table.c else site_runs.c[c] for c in columns])
        q = (sa.select(*chosen)
             .select_from(table)
             .join(latest, table.c.site_run_id == latest.c.latest)
             .join(site_runs, site_runs.c.site_run_id == table.c.site_run_id))
        if site_id:
            q = q.where(table.c.site_id == site_id)
        q = q.order_by(*[table.c[k] for k in keys])
        if name == "transitions":
            q = q.order_by(table.c.from_class, table.c.to_class)
        with self.engine.connect() as c:
            return pd.read_sql(q, c)

    def history(self, site_id: str) -> pd.DataFrame:
        """Every site run of a site, oldest first, with its scenario (None: official), its
        parameters and inputs (JSON) and its full-period sink (None if it published none)."""
        full = (sa.select(sinks.c.site_run_id, sinks.c.period_start, sinks.c.period_end, sinks.c.sink_tco2e,
                          sinks.c.sink_tco2e_lower90, sinks.c.sink_tco2e_upper90, sinks.c.conservative_sink_tco2e)
                .where(sinks.c.is_full_period.is_(True)).subquery())
        q = (sa.select(site_runs.c.site_run_id, site_runs.c.run_id, site_runs.c.flow_run_id, site_runs.c.status,
                       site_runs.c.created_at, site_runs.c.input_key, site_runs.c.coefficient_set,
                       site_runs.c.coefficient_sha256, site_runs.c.code_version, site_runs.c.error,
                       site_runs.c.scenario, site_runs.c.parameters_json, site_runs.c.inputs_json,
                       full.c.period_start, full.c.period_end, full.c.sink_tco2e, full.c.sink_tco2e_lower90,
                       full.c.sink_tco2e_upper90, full.c.conservative_sink_tco2e)
             .outerjoin(full, full.c.site_run_id == site_runs.c.site_run_id)
             .where(site_runs.c.site_id == site_id).order_by(site_runs.c.site_run_id))
        with self.engine.connect() as c:
            return pd.read_sql(q, c)

    def scenarios(self) -> list[str]:
        """The names of the scenarios in the ledger."""
        q = sa.select(site_runs.c.scenario).where(site_runs.c.scenario.is_not(None)).distinct()
        with self.engine.connect() as c:
            return sorted(str(s) for s in c.execute(q).scalars())

    def exported(self, registry: str, site_ids: list[str]) -> pd.DataFrame:
        """Vintages already exported for a registry (to refuse issuing a year twice)."""
        with self.engine.connect() as c:
            return self._exported(c, registry, site_ids)

    def exported_sites(self, registry: str) -> list[str]:
        """The sites with vintages exported to a registry."""
        q = sa.select(exported_vintages.c.site_id).where(exported_vintages.c.registry == registry).distinct()
        with self.engine.connect() as c:
            return [str(r[0]) for r in c.execute(q)]

    @staticmethod
    def _exported(c: sa.Connection, registry: str, site_ids: list[str]) -> pd.DataFrame:
        q = sa.select(exported_vintages).where(exported_vintages.c.registry == registry,
                                               exported_vintages.c.site_id.in_(site_ids))
        return pd.read_sql(q, c)

    def record_export(self, registry: str, rows: list[dict[str, Any]],
                      check: Callable[[pd.DataFrame], None] | None = None,
                      publish: Callable[[], None] | None = None) -> None:
        """Remember exported vintages, all in one transaction that first takes the ledger's write
        lock (so two exports cannot both pass ``check``): ``check(vintages exported before)``
        may refuse; then the rows are recorded (the same records again add nothing) and
        ``publish()`` puts the export's files in place. If anything fails, nothing is recorded."""
        added: list[dict[str, Any]] = []
        with self._tx() as c:
            if c.dialect.name == "postgresql":
                c.execute(sa.text("LOCK TABLE exported_vintages IN SHARE ROW EXCLUSIVE MODE"))
            _lock(c)
            if check is not None:
                check(self._exported(c, registry, sorted({r["site_id"] for r in rows})))
            for r in rows:
                key = {"registry": registry, "site_id": r["site_id"], "vintage_start": r["vintage_start"],
                       "vintage_end": r["vintage_end"], "site_run_id": r["ledger_site_run_id"],
                       "period_start": r["period_start_year"], "period_end": r["period_end_year"]}
                found = c.execute(sa.select(sa.func.count()).select_from(exported_vintages).where(
                    *[exported_vintages.c[k] == v for k, v in key.items()])).scalar_one()
                if not found:
                    c.execute(exported_vintages.insert().values(**key, issuable_tco2e=int(r["issuable_tco2e"])))
                    added.append({**key, "issuable_tco2e": int(r["issuable_tco2e"])})
            if added:
                _append(c, export_content(registry, added), run_id=None, site_id=None)
            if publish is not None:
                publish()

    def site_run_inputs(self, site_run_id: int) -> str | None:
        """The input hashes (JSON) a site run was computed from."""
        q = sa.select(site_runs.c.inputs_json).where(site_runs.c.site_run_id == site_run_id)
        with self.engine.connect() as c:
            return c.execute(q).scalar_one_or_none()

    def site_runs_inputs(self, site_run_ids: Sequence[int]) -> dict[int, str | None]:
        """``site_run_inputs`` of several site runs, in one query."""
        q = sa.select(site_runs.c.site_run_id, site_runs.c.inputs_json).where(
            site_runs.c.site_run_id.in_(list(site_run_ids)))
        with self.engine.connect() as c:
            return {int(r.site_run_id): r.inputs_json for r in c.execute(q)}

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return dict(row) if row else None

    def latest_finished_run(self) -> dict[str, Any] | None:
        """The run that finished last (completed, partial or failed)."""
        q = (sa.select(runs).where(runs.c.finished_at.is_not(None), runs.c.status != "stale")
             .order_by(runs.c.finished_at.desc()).limit(1))
        with self.engine.connect() as c:
            row = c.execute(q).mappings().first()
        return dict(row) if row else None

    def run_site_runs(self, run_id: str) -> list[dict[str, Any]]:
        """The site runs of a run, in order."""
        q = sa.select(site_runs).where(site_runs.c.run_id == run_id).order_by(site_runs.c.site_run_id)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def site_run_tables(self, site_run_id: int) -> dict[str, pd.DataFrame]:
        """The rows a site run published, by table, as the ledger holds them now."""
        with self.engine.connect() as c:
            return {name: pd.read_sql(sa.select(t).where(t.c.site_run_id == site_run_id), c)
                    for name, t in TABLES.items()}

    # --- the hash chain, as verify reads it -----------------------------------------------

    def audit(self) -> Audit:
        """The chain and, in the same form as its records, what the tables hold now: read in
        one transaction (on PostgreSQL a repeatable-read snapshot)."""
        with self.engine.connect() as c:
            if c.dialect.name == "postgresql":
                c.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            chain = [dict(r) for r in c.execute(sa.select(ledger_chain).order_by(ledger_chain.c.seq)).mappings()]
            return Audit(chain=chain, site_runs=site_contents(c), runs={r: run_content(c, r) for r in _run_ids(c)},
                         exported=[_exported_key(r) for r in c.execute(sa.select(exported_vintages)).mappings()])

    # --- file hash cache ----------------------------------------------------------------

    def cached_hash(self, path: str, size: int, mtime_ns: int) -> str | None:
        q = sa.select(file_hashes.c.sha256).where(file_hashes.c.path == path, file_hashes.c.size == size,
                                                  file_hashes.c.mtime_ns == mtime_ns)
        with self.engine.connect() as c:
            return c.execute(q).scalar_one_or_none()

    def store_hash(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        try:
            with self.engine.begin() as c:
                c.execute(file_hashes.insert().values(path=path, size=size, mtime_ns=mtime_ns, sha256=sha256))
        except sa.exc.IntegrityError:
            pass  # another run stored the same hash first


# --- schema revisions -----------------------------------------------------------------------

_REVISION_1_TABLES = {"runs", "site_runs", "stocks", "sinks", "transitions", "file_hashes", "exported_vintages",
                      "class_areas"}


def _same_scenario(scenario: str | None) -> sa.ColumnElement[bool]:
    """Site runs of the official estimate (None) or of one scenario."""
    return site_runs.c.scenario.is_(None) if scenario is None else site_runs.c.scenario == scenario


def revision(c: sa.Connection, safe_url: str) -> str | None:
    """The ledger's schema revision: Alembic's version table, else ``0001`` for a ledger written
    before the revisions (schema version 4 in ``ledger_meta``); None for an empty database.
    A ledger from before schema version 4 is refused (it cannot be upgraded)."""
    names = set(sa.inspect(c).get_table_names())
    if "alembic_version" in names:
        found = c.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        if found:
            return str(found[0])
    if not names & (_REVISION_1_TABLES | {"ledger_meta"}):
        return None
    if "ledger_meta" not in names:
        raise LedgerError(f"ledger {safe_url} was written by an older carbon-sink (no schema version): "
                          "keep it for its history and point `ledger` at a new database")
    version = c.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one_or_none()
    if version == LEGACY_SCHEMA_VERSION:
        return REVISIONS[0]
    raise LedgerError(f"ledger {safe_url} has schema version {version}, which this carbon-sink cannot read or "
                      "upgrade: point `ledger` at a new database")


def behind_message(safe_url: str, found: str | None) -> str:
    if found in REVISIONS:
        return (f"ledger {safe_url} is at schema revision {found}; this carbon-sink writes revision {HEAD}: "
                "run `carbon-sink ledger upgrade` (with the same --config) to upgrade it in place")
    return (f"ledger {safe_url} is at schema revision {found}, which this carbon-sink does not know (written by a "
            "newer carbon-sink?): use that version, or point `ledger` at a new database")


def _migration_engine(url: str) -> sa.Engine:
    """An engine whose transactions hold DDL: on SQLite ``BEGIN IMMEDIATE`` takes the write
    lock first (another process creating or upgrading the same ledger waits)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    if engine.dialect.name == "sqlite":
        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # the driver opens no transaction of its own
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        def on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        sa.event.listen(engine, "connect", on_connect)
        sa.event.listen(engine, "begin", on_begin)
    return engine


def _migrate(url: str, safe_url: str, *, create_only: bool = False) -> tuple[str | None, str | None]:
    """Run the migrations to the head in one transaction that holds the ledger's migration lock;
    returns the revisions before and after. ``create_only``: only if the database is empty."""
    engine = _migration_engine(url)
    try:
        with engine.begin() as c:
            if c.dialect.name == "postgresql":  # one migrator at a time
                c.execute(sa.text("SELECT pg_advisory_xact_lock(4247110001)"))
            before = revision(c, safe_url)
            if before == HEAD or (create_only and before is not None):
                return before, before
            if before is not None and before not in REVISIONS:
                raise LedgerError(behind_message(safe_url, before))
            cfg = AlembicConfig()
            cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
            cfg.attributes["connection"] = c
            command.upgrade(cfg, HEAD)
            return before, HEAD
    except OperationalError as exc:
        raise LedgerError(f"cannot upgrade ledger {safe_url}: {exc.orig}", transient=True) from None
    except SQLAlchemyError as exc:
        raise LedgerError(f"cannot upgrade ledger {safe_url}: {exc}") from None
    finally:
        engine.dispose()


def upgrade(url: str) -> tuple[str | None, str]:
    """Upgrade a ledger in place to the head revision (all in one transaction: on failure it is
    left as it was); returns (revision before, revision after). An empty database is created."""
    safe = sa.engine.make_url(url).render_as_string(hide_password=True)
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        if not db.is_file():
            raise LedgerError(f"no ledger at {db}: nothing to upgrade (a run creates a new ledger at the head revision)")
    before, _ = _migrate(url, safe)
    _ENGINES.pop(url, None)
    return before, HEAD


# --- the hash chain ------------------------------------------------------------------------

GENESIS = "0" * 64

#: The fields of a run that its chained closing covers (not its host, process or heartbeat).
RUN_FIELDS = ("run_id", "flow_run_id", "started_at", "finished_at", "status", "config_path", "code_version",
              "n_sites", "n_failed", "n_skipped")
#: How a row of a site run's table is named in its record (unique within a site run).
ROW_KEYS = {"stocks": ("year",), "sinks": ("period_start", "period_end"),
            "transitions": ("period_start", "period_end", "from_class", "to_class"),
            "class_areas": ("year", "carbon_class")}
EXPORT_FIELDS = ("registry", "site_id", "vintage_start", "vintage_end", "site_run_id", "period_start", "period_end",
                 "issuable_tco2e")


class Audit:
    """What ``Ledger.audit`` reads: the chain's records and the tables' content in their form."""

    def __init__(self, chain: list[dict[str, Any]], site_runs: dict[int, dict[str, Any]],
                 runs: dict[str, dict[str, Any] | None], exported: list[dict[str, Any]]) -> None:
        self.chain = chain
        self.site_runs = site_runs
        self.runs = runs
        self.exported = exported


def _norm(v: Any) -> Any:
    """A value as the chain hashes it: datetimes in UTC, floats exactly (-0.0 as 0.0, NaN named)."""
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, dict):
        return {str(k): _norm(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_norm(x) for x in v]
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return float(v) + 0.0
    if isinstance(v, dt.datetime):
        return _utc(v).isoformat(timespec="microseconds")
    if hasattr(v, "item"):  # numpy scalars
        return _norm(v.item())
    return str(v)


def canonical(obj: Any) -> str:
    """Canonical JSON: keys sorted, no spaces, values normalised (``_norm``)."""
    return json.dumps(_norm(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def chain_hash(prev_hash: str, content: str) -> str:
    """A record's hash: sha256 over the previous record's hash and the record's canonical JSON."""
    return sha256_text(prev_hash + content)


def row_key(name: str, row: Any) -> str:
    return " ".join(f"{k}={_norm(row[k])}" for k in ROW_KEYS[name])


def _site_record(row: Any, tables: dict[str, list[list[str]]]) -> dict[str, Any]:
    # the scenario fields (revision 0003) are left out while NULL: official site runs chained
    # before them keep their records
    rec = {k: row[k] for k in row.keys()
           if k != "inputs_json" and not (k in ("scenario", "parameters_json") and row[k] is None)}
    inputs = row["inputs_json"]
    rec["inputs_sha256"] = None if inputs is None else sha256_text(inputs)
    return {"kind": "site_run", "ref": str(row["site_run_id"]), "site_run": rec,
            "rows": {name: sorted(rows) for name, rows in sorted(tables.items())}}


def site_contents(c: sa.Connection, site_run_id: int | list[int] | None = None) -> dict[int, dict[str, Any]]:
    """Each site run's record as the tables hold it now (all, one, or those listed): its
    ``site_runs`` row (inputs by their SHA-256) and, per table, each row's key and the SHA-256
    of the row."""
    wanted = None if site_run_id is None else [site_run_id] if isinstance(site_run_id, int) else site_run_id
    where = [] if wanted is None else [site_runs.c.site_run_id.in_(wanted)]
    columns = _site_run_columns(c)
    heads = {int(r["site_run_id"]): r for r in c.execute(sa.select(*columns).where(*where)).mappings()}
    rows: dict[int, dict[str, list[list[str]]]] = {k: {} for k in heads}
    for name, table in TABLES.items():
        tw = [] if wanted is None else [table.c.site_run_id.in_(wanted)]
        for r in c.execute(sa.select(table).where(*tw)).mappings():
            owner = rows.setdefault(int(r["site_run_id"]), {})
            owner.setdefault(name, []).append([row_key(name, r), sha256_text(canonical(dict(r)))])
    out = {k: _site_record(heads[k], rows[k]) for k in heads}
    for orphan in set(rows) - set(heads):  # rows whose site run is gone
        out[orphan] = {"kind": "site_run", "ref": str(orphan), "site_run": None,
                       "rows": {name: sorted(v) for name, v in sorted(rows[orphan].items())}}
    return out


def run_content(c: sa.Connection, run_id: str) -> dict[str, Any] | None:
    row = c.execute(sa.select(*[runs.c[f] for f in RUN_FIELDS]).where(runs.c.run_id == run_id)).mappings().first()
    return None if row is None else {"kind": "run", "ref": run_id, "run": dict(row)}


def _run_ids(c: sa.Connection) -> list[str]:
    return [str(r) for r in c.execute(sa.select(runs.c.run_id)).scalars()]


def _exported_key(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in EXPORT_FIELDS}


def export_content(registry: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    vintages = sorted((_norm(_exported_key(r)) for r in rows), key=canonical)
    return {"kind": "export", "ref": registry, "vintages": vintages}


def _lock(c: sa.Connection) -> None:
    """The ledger's write lock, until the commit: chained records are appended one at a time."""
    if c.dialect.name == "postgresql":
        c.execute(sa.text("LOCK TABLE ledger_chain IN SHARE ROW EXCLUSIVE MODE"))
    else:  # SQLite: a write takes the database's write lock until the commit
        c.execute(meta.update().where(meta.c.key == "schema_version").values(value=meta.c.value))


def _append(c: sa.Connection, content: dict[str, Any], *, run_id: str | None, site_id: str | None) -> str:
    """Append one record to the chain (the caller holds ``_lock``); returns its hash."""
    return _append_many(c, [(content, run_id, site_id)])[-1]


def _append_many(c: sa.Connection, records: list[tuple[dict[str, Any], str | None, str | None]]) -> list[str]:
    """Append records (content, run_id, site_id) to the chain in order, each hashed with the one
    before it, in one statement (the caller holds ``_lock``); returns their hashes."""
    if not records:
        return []
    prev = c.execute(sa.select(ledger_chain.c.record_hash).order_by(ledger_chain.c.seq.desc()).limit(1)
                     ).scalar_one_or_none() or GENESIS
    rows, hashes = [], []
    for content, run_id, site_id in records:
        text = canonical(content)
        record_hash = chain_hash(prev, text)
        rows.append(dict(kind=content["kind"], ref=content["ref"], run_id=run_id, site_id=site_id, created_at=now(),
                         content=text, prev_hash=prev, record_hash=record_hash))
        hashes.append(record_hash)
        prev = record_hash
    c.execute(ledger_chain.insert(), rows)
    return hashes


#: Ids in one ``IN`` list of a batch's queries (two such lists stay below SQLite's oldest limit of
#: 999 parameters).
IN_CHUNK = 400


def _site_run_columns(c: sa.Connection) -> list[sa.Column[Any]]:
    """The ``site_runs`` columns the database has (a migration may chain records before a
    revision adds its columns)."""
    present = {col["name"] for col in sa.inspect(c).get_columns("site_runs")}
    return [col for col in site_runs.c if col.name in present]


def _publish_many(c: sa.Connection, sites: list[dict[str, Any]]) -> list[int]:
    """Several sites' rows inside the caller's transaction (``Ledger.publish_sites``): a
    ``site_runs`` row each, each table's rows of all of them in one statement, and their chain
    records, in order; the same records as the sites published one by one. A site already
    published by this run with the same inputs (a task re-run after a worker died past the
    commit) keeps the row written then."""
    ids: list[int] = []
    new: list[int] = []
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    earlier = _published(c, sites)
    for site in sites:
        same = (site["run_id"], site["site_id"], site["input_key"], site.get("scenario"))
        done = earlier.get(same)
        if done is not None:  # published before, or earlier in this batch (a site listed twice)
            ids.append(done)
            continue
        site_run_id = _site_run_row(c, **site)
        earlier[same] = site_run_id
        ids.append(site_run_id)
        new.append(site_run_id)
        for name, table in TABLES.items():
            df = site["tables"][name]
            if df.empty:
                continue
            cols = [col.name for col in table.columns if col.name != "site_run_id"]
            columns = [_python(df[col]) for col in cols]  # Python values, column by column
            rows[name] += [{"site_run_id": site_run_id, **dict(zip(cols, values, strict=True))}
                           for values in zip(*columns, strict=True)]
    for name, table in TABLES.items():
        if rows[name]:
            c.execute(table.insert(), rows[name])
    _chain_site_runs(c, new)
    return ids


def _published(c: sa.Connection, sites: list[dict[str, Any]]) -> dict[tuple[Any, ...], int]:
    """The site runs of these sites that their runs already published, by (run, site, input key,
    scenario)."""
    found: dict[tuple[Any, ...], int] = {}
    for at in range(0, len(sites), IN_CHUNK):
        part = sites[at:at + IN_CHUNK]
        q = sa.select(site_runs.c.site_run_id, site_runs.c.run_id, site_runs.c.site_id, site_runs.c.input_key,
                      site_runs.c.scenario).where(
            site_runs.c.run_id.in_(list(dict.fromkeys(s["run_id"] for s in part))),
            site_runs.c.site_id.in_(list(dict.fromkeys(s["site_id"] for s in part))),
            site_runs.c.status == "succeeded")
        found.update({(r.run_id, r.site_id, r.input_key, r.scenario): int(r.site_run_id) for r in c.execute(q)})
    return found


def _site_run_row(c: sa.Connection, *, run_id: str, flow_run_id: str | None, site_id: str,
                  tables: dict[str, pd.DataFrame], input_key: str, inputs: dict[str, Any], coefficient_set: str,
                  coefficient_sha256: str, code_version: str, scenario: str | None = None,
                  parameters: dict[str, Any] | None = None) -> int:
    """A published site's ``site_runs`` row; returns its id."""
    del tables  # written by the caller, with the batch's
    return int(c.execute(site_runs.insert().values(
        run_id=run_id, flow_run_id=flow_run_id, site_id=site_id, status="succeeded", created_at=now(),
        input_key=input_key, inputs_json=json.dumps(inputs, sort_keys=True, default=str),
        coefficient_set=coefficient_set, coefficient_sha256=coefficient_sha256, code_version=code_version,
        scenario=scenario,
        parameters_json=None if parameters is None else json.dumps(parameters, sort_keys=True, default=str),
    )).inserted_primary_key[0])  # type: ignore[index]


def _chain_site_run(c: sa.Connection, site_run_id: int) -> None:
    _chain_site_runs(c, [site_run_id])


def _chain_site_runs(c: sa.Connection, site_run_ids: list[int]) -> None:
    """Chain these site runs' records, in order, as the tables hold them now."""
    contents: dict[int, dict[str, Any]] = {}
    for at in range(0, len(site_run_ids), IN_CHUNK):
        contents.update(site_contents(c, site_run_ids[at:at + IN_CHUNK]))
    _append_many(c, [(contents[i], contents[i]["site_run"]["run_id"], contents[i]["site_run"]["site_id"])
                     for i in site_run_ids])


def _chain_run(c: sa.Connection, run_id: str) -> None:
    content = run_content(c, run_id)
    if content is not None:
        _append(c, content, run_id=run_id, site_id=None)


def rebuild_chain(c: sa.Connection) -> int:
    """Chain the records of a ledger that had none (the upgrade to revision 0002): every site
    run in order, every closed run, then each registry's exported vintages; returns the count."""
    n = 0
    for site_run_id in c.execute(sa.select(site_runs.c.site_run_id).order_by(site_runs.c.site_run_id)).scalars():
        _chain_site_run(c, int(site_run_id))
        n += 1
    closed = sa.select(runs.c.run_id).where(runs.c.status != "running").order_by(runs.c.finished_at, runs.c.run_id)
    for run_id in c.execute(closed).scalars():
        _chain_run(c, str(run_id))
        n += 1
    by_registry: dict[str, list[dict[str, Any]]] = {}
    for r in c.execute(sa.select(exported_vintages)).mappings():
        by_registry.setdefault(str(r["registry"]), []).append(dict(r))
    for registry, rows in sorted(by_registry.items()):
        _append(c, export_content(registry, rows), run_id=None, site_id=None)
        n += 1
    return n


def _heartbeat(c: sa.Connection, run_id: str) -> None:
    c.execute(runs.update().where(runs.c.run_id == run_id, runs.c.status == "running").values(heartbeat_at=now()))


# --- stale runs ------------------------------------------------------------------------------

#: A running run without a sign of life for this long is stale (``CARBON_SINK_STALE_HOURS``).
STALE_HOURS = 24.0


def stale_after() -> dt.timedelta:
    """How long a running run may go without a sign of life: ``CARBON_SINK_STALE_HOURS``
    (default 24)."""
    raw = os.environ.get("CARBON_SINK_STALE_HOURS", "")
    if not raw.strip():
        return dt.timedelta(hours=STALE_HOURS)
    try:
        hours = float(raw)
        if not math.isfinite(hours) or hours <= 0:
            raise ValueError(raw)
    except ValueError:
        raise LedgerError(f"CARBON_SINK_STALE_HOURS must be a number of hours above 0, not {raw!r}") from None
    return dt.timedelta(hours=hours)


def _utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _stale_reason(r: Any, host: str, moment: dt.datetime, limit: dt.timedelta) -> str | None:
    if r["host"] == host and r["pid"] is not None and not _alive(int(r["pid"]), _utc(r["started_at"])):
        return f"its process {r['pid']} on {host} has ended"
    last = _utc(r["heartbeat_at"] or r["started_at"])
    if moment - last > limit:
        return (f"no sign of life since {last:%Y-%m-%d %H:%M:%S} UTC (more than {limit.total_seconds() / 3600:g} h; "
                "CARBON_SINK_STALE_HOURS)")
    return None


def _alive(pid: int, started_at: dt.datetime) -> bool:
    """Whether the process that started a run still runs: the pid exists, is no zombie and (on
    Linux) was not started after the run (a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, another user's: alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] in ("Z", "X"):
            return False
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        began = dt.datetime.fromtimestamp(boot + int(fields[19]) / os.sysconf("SC_CLK_TCK"), dt.UTC)
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # no /proc: the pid is taken as the run's
    return began <= started_at + dt.timedelta(seconds=2)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never see a half-written transaction
    cur.execute("PRAGMA busy_timeout=30000")  # two runs at once wait for each other's commits
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _python(column: pd.Series) -> list[Any]:
    """A column's values as Python objects (numpy scalars in an object column unboxed)."""
    values = column.tolist()
    if column.dtype == object:
        values = [v.item() if hasattr(v, "item") else v for v in values]
    return values
