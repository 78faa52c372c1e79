"""The ledger's schema revisions: a ledger written before them (schema version 4, no
``alembic_version``) is recognised as revision 0001, refused until ``carbon-sink ledger
upgrade``, and upgraded in place with its data kept and its records chained, on SQLite and on
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import importlib.util
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from carbon.io import ledger as ledger_mod
from carbon.io.ledger import HEAD, Ledger, LedgerError, upgrade
from carbon.pipeline.loop import compute_config
from carbon.pipeline.verify import verify_chain
from flows.cli import app
from tests.conftest import pg_url, write_config

runner = CliRunner()
SITE = "wuhan-quarry-reclaim"
REV1 = Path(ledger_mod.__file__).parent / "migrations" / "versions" / "rev_0001_ledger.py"


def revision_1():
    """The frozen tables of revision 0001 (the schema the code wrote before the revisions)."""
    spec = importlib.util.spec_from_file_location("rev_0001_for_test", REV1)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.frozen


@pytest.fixture(scope="module")
def demo_tables(tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("cfg") / "c.toml")
    return compute_config(cfg, [SITE]).results[SITE].tables()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    base = pg_url()
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    yield base.rsplit("/", 1)[0] + f"/{name}"
    ledger_mod._ENGINES.pop(base.rsplit("/", 1)[0] + f"/{name}", None)
    with admin.connect() as c:
        c.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))


def _records(table, tables, site_run_id: int) -> list[dict]:
    df = tables[table.name]
    cols = [c.name for c in table.columns if c.name != "site_run_id"]
    return [{**{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}, "site_run_id": site_run_id}
            for r in df[cols].to_dict("records")]


def legacy_ledger(url: str, tables, *, drop_class_areas: bool = False) -> dict[str, int]:
    """A ledger as the code before the revisions wrote it, with real rows: a finished run with a
    published site run (every table) and a failed one, a run still running, an export."""
    frozen = revision_1()
    engine = sa.create_engine(url)
    t = frozen.tables
    started = dt.datetime(2025, 3, 1, 8, 0, 0, 123456, tzinfo=dt.UTC)
    with engine.begin() as c:
        frozen.create_all(c)
        c.execute(t["ledger_meta"].insert().values(key="schema_version", value="4"))
        c.execute(t["runs"].insert(), [
            {"run_id": "run-1", "flow_run_id": None, "started_at": started, "finished_at": started + dt.timedelta(
                minutes=3), "status": "partial", "config_path": "/srv/c.toml", "code_version": "0.1.0+abc",
             "n_sites": 2, "n_failed": 1, "n_skipped": 0},
            {"run_id": "run-2", "flow_run_id": None, "started_at": started + dt.timedelta(hours=1),
             "finished_at": None, "status": "running", "config_path": "/srv/c.toml", "code_version": "0.1.0+abc",
             "n_sites": None, "n_failed": None, "n_skipped": None},
        ])
        sr = c.execute(t["site_runs"].insert().values(
            run_id="run-1", site_id=SITE, status="succeeded", created_at=started + dt.timedelta(minutes=1),
            input_key="k" * 64, inputs_json='{"x": 1}', coefficient_set="ipcc2019_tier1",
            coefficient_sha256="0" * 64, code_version="0.1.0+abc")).inserted_primary_key[0]
        c.execute(t["site_runs"].insert().values(
            run_id="run-1", site_id="jiufeng-forest-park", status="failed", created_at=started + dt.timedelta(
                minutes=2), code_version="0.1.0+abc", error="site jiufeng-forest-park: bad input"))
        for name in ("stocks", "sinks", "transitions", "class_areas"):
            c.execute(t[name].insert(), _records(t[name], tables, sr))
        c.execute(t["exported_vintages"].insert().values(
            registry="verra", site_id=SITE, vintage_start="2018-01-01", vintage_end="2024-12-31", site_run_id=sr,
            period_start=2018, period_end=2024, issuable_tco2e=812))
        c.execute(t["file_hashes"].insert().values(path="/data/a.tif", size=10, mtime_ns=1, sha256="a" * 64))
        if drop_class_areas:  # a version-4 ledger from before the class areas
            c.execute(t["class_areas"].delete())
    if drop_class_areas:
        t["class_areas"].drop(engine)
    engine.dispose()
    return {"site_run_id": sr}


def dump(url: str) -> dict[str, list[tuple]]:
    """Every row of the revision-0001 tables, in a stable order (only the revision-0001 columns)."""
    frozen = revision_1()
    engine = sa.create_engine(url)
    names = set(sa.inspect(engine).get_table_names())
    with engine.connect() as c:
        out = {name: sorted(tuple(map(repr, r)) for r in c.execute(sa.select(*table.columns)))
               for name, table in frozen.tables.items() if name in names and name != "ledger_meta"}
    engine.dispose()
    return out


def test_a_ledger_from_before_the_revisions_is_upgraded_with_its_data_kept(url: str, demo_tables, tmp_path) -> None:
    ids = legacy_ledger(url, demo_tables)
    before = dump(url)
    assert len(before["stocks"]) == len(demo_tables["stocks"]) > 0 and len(before["class_areas"]) > 0

    with pytest.raises(LedgerError, match=r"revision 0001.*carbon-sink ledger upgrade") as refused:
        Ledger(url)
    assert not refused.value.transient
    assert dump(url) == before  # refusing changed nothing

    cfg = write_config(tmp_path / "c.toml", ledger=url)
    result = runner.invoke(app, ["ledger", "upgrade", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert f"from revision 0001 to {HEAD}" in result.output

    assert dump(url) == before  # every row kept, every value the same
    engine = sa.create_engine(url)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD
        assert c.execute(sa.text("SELECT value FROM ledger_meta WHERE key = 'schema_version'")).scalar_one() == "5"
        cols = {col["name"] for col in sa.inspect(c).get_columns("runs")}
        assert {"host", "pid", "heartbeat_at"} <= cols
        # revision 0003: the site runs already there are official estimates (no scenario)
        assert c.execute(sa.text("SELECT count(*) FROM site_runs WHERE scenario IS NOT NULL")).scalar_one() == 0
        chain = c.execute(sa.text("SELECT kind, ref, prev_hash, record_hash FROM ledger_chain ORDER BY seq")).all()
    engine.dispose()
    # two site runs, the closed run (not the running one), the registry's export; linked in order
    assert [(k, r) for k, r, _, _ in chain] == [("site_run", str(ids["site_run_id"])), ("site_run", "2"),
                                              ("run", "run-1"), ("export", "verra")]
    assert chain[0][2] == "0" * 64 and all(chain[i][2] == chain[i - 1][3] for i in range(1, len(chain)))
    assert verify_chain(url).problems == []

    ledger = Ledger(url)  # opens at the head
    assert ledger.current("sinks", SITE)["sink_tco2e"].tolist() == pytest.approx(
        demo_tables["sinks"].sort_values(["period_start", "period_end"])["sink_tco2e"].tolist(), rel=1e-12)
    assert ledger.run("run-2")["status"] == "running"
    ledger.start_run("run-3", config_path="c", code_version="t", flow_run_id=None)
    ledger.publish_site(run_id="run-3", flow_run_id=None, site_id=SITE, tables=demo_tables, input_key="n" * 64,
                        inputs={"y": 2}, coefficient_set="s", coefficient_sha256="0" * 64, code_version="t")
    ledger.finish_run("run-3", status="completed", n_sites=1, n_failed=0, n_skipped=0)
    check = verify_chain(url)
    assert check.problems == [] and check.n_records == len(chain) + 2

    again = runner.invoke(app, ["ledger", "upgrade", "--config", str(cfg)])
    assert again.exit_code == 0 and f"at revision {HEAD} already" in again.output


def test_a_version_4_ledger_without_class_areas_gets_the_table(url: str, demo_tables) -> None:
    legacy_ledger(url, demo_tables, drop_class_areas=True)
    assert upgrade(url) == ("0001", HEAD)
    ledger = Ledger(url)
    assert ledger.current("class_areas").empty
    assert len(ledger.current("stocks")) == len(demo_tables["stocks"])
    assert verify_chain(url).problems == []


def test_a_new_ledger_is_created_at_the_head_with_the_tables_of_the_code(url: str) -> None:
    ledger = Ledger(url)
    inspector = sa.inspect(ledger.engine)
    with ledger.engine.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD
    for table in ledger_mod.metadata.tables.values():
        assert [col["name"] for col in inspector.get_columns(table.name)] == [c.name for c in table.columns]
        assert {i["name"] for i in inspector.get_indexes(table.name)} >= {i.name for i in table.indexes}
    assert upgrade(url) == (HEAD, HEAD)


def test_ledgers_that_cannot_be_upgraded_are_refused_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v3.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE ledger_meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL)"))
        c.execute(sa.text("INSERT INTO ledger_meta VALUES ('schema_version', '3')"))
        c.execute(sa.text("CREATE TABLE stocks (site_run_id INTEGER)"))
    with pytest.raises(LedgerError, match="schema version 3, which this carbon-sink cannot read or upgrade"):
        Ledger(url)
    with pytest.raises(LedgerError, match="schema version 3"):
        upgrade(url)
    cfg = write_config(tmp_path / "c.toml", ledger=url)
    result = runner.invoke(app, ["ledger", "upgrade", "--config", str(cfg)])
    assert result.exit_code == 3
    assert "schema version 3" in " ".join(result.output.split()) and "Traceback" not in result.output
    assert result.output.startswith("error: ledger") and "Traceback" not in result.output

    missing = write_config(tmp_path / "m.toml", ledger=f"sqlite:///{tmp_path / 'none.db'}")
    result = runner.invoke(app, ["ledger", "upgrade", "--config", str(missing)])
    assert result.exit_code == 3 and "nothing to upgrade" in " ".join(result.output.split())
    assert not (tmp_path / "none.db").exists()
