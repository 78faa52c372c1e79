"""The published ledger: an append-only record of every run, in SQLite or PostgreSQL.

SQLAlchemy Core; the URL picks the database (``sqlite:///path`` by default,
``postgresql+psycopg://...`` for a production center). Rules (docs/ledger.md):

* Append-only: rows are inserted, never updated or deleted, except the closing fields
  of a ``runs`` row (status, finished time, counts).
* One site's rows (its ``site_runs`` row and every table row) are written in one
  transaction, so a half-written site is never visible.
* The current estimate of a site and period is the row of its latest successful site run.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
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

#: The tables of a site run. ``class_areas`` came after schema version 4: a version-4 ledger gets
#: the table when opened (a new table, no change to the others), and its older runs have none.
TABLES = {"stocks": stocks, "sinks": sinks, "transitions": transitions, "class_areas": class_areas}


class LedgerError(CarbonSinkError):
    """The ledger database cannot be reached or written. ``transient``: worth another try
    (a lock, a timeout, a dropped connection), as opposed to a wrong URL, folder or schema."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


#: Version of the ledger's tables; a ledger written by another version is refused, not mixed.
SCHEMA_VERSION = 4

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
        inspector = sa.inspect(self.engine)
        existing = set(inspector.get_table_names())
        if existing & {t for t in metadata.tables if t != "ledger_meta"} and "ledger_meta" not in existing:
            raise LedgerError(f"ledger {self.safe_url} was written by an older carbon-sink (no schema version): "
                              "keep it for its history and point `ledger` at a new database")
        metadata.create_all(self.engine)
        with self.engine.begin() as c:
            found = c.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one_or_none()
            if found is None:
                c.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(found) != SCHEMA_VERSION:
                raise LedgerError(f"ledger {self.safe_url} has schema version {found}; this carbon-sink writes "
                                  f"version {SCHEMA_VERSION}: point `ledger` at a new database")

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
        with self._tx() as c:
            c.execute(runs.insert().values(run_id=run_id, flow_run_id=flow_run_id, started_at=now(), status="running",
                                           config_path=config_path, code_version=code_version))

    def finish_run(self, run_id: str, *, status: str, n_sites: int, n_failed: int, n_skipped: int) -> None:
        with self._tx() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).values(
                status=status, finished_at=now(), n_sites=n_sites, n_failed=n_failed, n_skipped=n_skipped))

    # --- sites --------------------------------------------------------------------------

    def publish_site(self, *, run_id: str, flow_run_id: str | None, site_id: str, tables: dict[str, pd.DataFrame],
                     input_key: str, inputs: dict[str, Any], coefficient_set: str, coefficient_sha256: str,
                     code_version: str) -> int:
        """Write one site's results in one transaction; returns its site_run_id.

        Idempotent within a run: publishing the same site and inputs again for the same run
        (a task re-run after a worker died past the commit) returns the row already written."""
        with self._tx() as c:
            done = c.execute(sa.select(site_runs.c.site_run_id).where(
                site_runs.c.run_id == run_id, site_runs.c.site_id == site_id, site_runs.c.status == "succeeded",
                site_runs.c.input_key == input_key)).scalar_one_or_none()
            if done is not None:
                return int(done)
            site_run_id = c.execute(site_runs.insert().values(
                run_id=run_id, flow_run_id=flow_run_id, site_id=site_id, status="succeeded", created_at=now(),
                input_key=input_key, inputs_json=json.dumps(inputs, sort_keys=True, default=str),
                coefficient_set=coefficient_set, coefficient_sha256=coefficient_sha256, code_version=code_version,
            )).inserted_primary_key[0]  # type: ignore[index]
            for name, table in TABLES.items():
                df = tables[name]
                if df.empty:
                    continue
                cols = [col.name for col in table.columns if col.name != "site_run_id"]
                records = df[cols].to_dict("records")
                for rec in records:
                    rec["site_run_id"] = site_run_id
                c.execute(table.insert(), [_plain(r) for r in records])
        return int(site_run_id)

    def record_site(self, *, run_id: str, flow_run_id: str | None, site_id: str, status: str, code_version: str,
                    error: str | None = None, input_key: str | None = None) -> None:
        """A failed or skipped site: one row, no results."""
        with self._tx() as c:
            c.execute(site_runs.insert().values(run_id=run_id, flow_run_id=flow_run_id, site_id=site_id, status=status,
                                                created_at=now(), code_version=code_version, error=error,
                                                input_key=input_key))

    def last_success_key(self, site_id: str) -> str | None:
        q = (sa.select(site_runs.c.input_key).where(site_runs.c.site_id == site_id, site_runs.c.status == "succeeded")
             .order_by(site_runs.c.site_run_id.desc()).limit(1))
        with self.engine.connect() as c:
            return c.execute(q).scalar_one_or_none()

    # --- reading ------------------------------------------------------------------------

    def current(self, name: str, site_id: str | None = None) -> pd.DataFrame:
        """Current estimates: every row of each site's latest successful site run. An older
        run's periods or years that the latest run no longer has are not current (a re-run
        with other years replaces the site's estimate as a whole)."""
        table = TABLES[name]
        latest = (sa.select(site_runs.c.site_id, sa.func.max(site_runs.c.site_run_id).label("latest"))
                  .where(site_runs.c.status == "succeeded").group_by(site_runs.c.site_id).subquery())
        keys = {"stocks": ["site_id", "year"], "class_areas": ["site_id", "year", "carbon_class"]}.get(
            name, ["site_id", "period_start", "period_end"])
        q = (sa.select(table, site_runs.c.run_id, site_runs.c.created_at, site_runs.c.coefficient_set,
                       site_runs.c.coefficient_sha256, site_runs.c.code_version)
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
        q = (sa.select(site_runs.c.site_run_id, site_runs.c.run_id, site_runs.c.flow_run_id, site_runs.c.status,
                       site_runs.c.created_at, site_runs.c.input_key, site_runs.c.coefficient_set,
                       site_runs.c.coefficient_sha256, site_runs.c.code_version, site_runs.c.error)
             .where(site_runs.c.site_id == site_id).order_by(site_runs.c.site_run_id))
        with self.engine.connect() as c:
            return pd.read_sql(q, c)

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
        with self._tx() as c:
            if c.dialect.name == "postgresql":
                c.execute(sa.text("LOCK TABLE exported_vintages IN SHARE ROW EXCLUSIVE MODE"))
            else:  # SQLite: a write takes the database's write lock until the commit
                c.execute(meta.update().where(meta.c.key == "schema_version").values(value=meta.c.value))
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
            if publish is not None:
                publish()

    def site_run_inputs(self, site_run_id: int) -> str | None:
        """The input hashes (JSON) a site run was computed from."""
        q = sa.select(site_runs.c.inputs_json).where(site_runs.c.site_run_id == site_run_id)
        with self.engine.connect() as c:
            return c.execute(q).scalar_one_or_none()

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return dict(row) if row else None

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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never see a half-written transaction
    cur.execute("PRAGMA busy_timeout=30000")  # two runs at once wait for each other's commits
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _plain(rec: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in rec.items():
        out[k] = v.item() if hasattr(v, "item") else v
    return out
