"""The ledger on SQLite and on a real PostgreSQL server: append-only, one transaction per
site, consistent under a killed writer and under concurrent writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from carbon.io.ledger import Ledger, LedgerError, ledger_chain, sinks, site_runs, stocks, transitions
from carbon.pipeline.loop import compute_config
from tests.conftest import pg_url, write_config


@pytest.fixture(scope="module")
def demo_result(tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("cfg") / "c.toml")
    return compute_config(cfg, ["wuhan-quarry-reclaim"]).results["wuhan-quarry-reclaim"]


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path: Path) -> Ledger:
    if request.param == "sqlite":
        yield Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        return
    base = pg_url()
    # a fresh schema-less database per test: isolate by a unique database name
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    url = base.rsplit("/", 1)[0] + f"/{name}"
    yield Ledger(url)
    with admin.connect() as c:
        c.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))


def publish(ledger: Ledger, result, run_id: str | None = None) -> int:
    run_id = run_id or str(uuid.uuid4())
    ledger.start_run(run_id, config_path="c.toml", code_version="test", flow_run_id=None)
    return ledger.publish_site(run_id=run_id, flow_run_id=None, site_id=result.site_id, tables=result.tables(),
                               input_key="k" * 64, inputs={"x": 1}, coefficient_set="set", coefficient_sha256="0" * 64,
                               code_version="test")


def counts(ledger: Ledger) -> dict[str, int]:
    with ledger.engine.connect() as c:
        return {t.name: c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in (site_runs, stocks, sinks, transitions)}


def test_append_only_and_current_is_latest(ledger: Ledger, demo_result) -> None:
    first = publish(ledger, demo_result)
    second = publish(ledger, demo_result)
    assert second > first
    n = counts(ledger)
    assert n["site_runs"] == 2 and n["stocks"] == 2 * len(demo_result.stocks)
    current = ledger.current("sinks", "wuhan-quarry-reclaim")
    assert set(current["site_run_id"]) == {second}
    assert len(current) == len(demo_result.sinks)
    expected = demo_result.sinks.sort_values(["period_start", "period_end"])
    assert current["sink_tco2e"].tolist() == pytest.approx(expected["sink_tco2e"].tolist(), rel=1e-12)
    assert pd.api.types.is_integer_dtype(current["period_start"])
    hist = ledger.history("wuhan-quarry-reclaim")
    assert hist["site_run_id"].tolist() == [first, second]


def test_failed_write_leaves_no_half_site(ledger: Ledger, demo_result) -> None:
    publish(ledger, demo_result)
    before = counts(ledger)
    broken = demo_result.tables()
    broken["transitions"] = broken["transitions"].assign(from_class=None)  # NOT NULL violation, last table written
    with pytest.raises(sa.exc.IntegrityError):
        ledger.publish_site(run_id=str(uuid.uuid4()), flow_run_id=None, site_id=demo_result.site_id, tables=broken,
                            input_key="k", inputs={}, coefficient_set="s", coefficient_sha256="0" * 64,
                            code_version="t")
    assert counts(ledger) == before


def test_concurrent_runs_of_one_site_stay_consistent(ledger: Ledger, demo_result) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(3):
                publish(ledger, demo_result)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    n = counts(ledger)
    assert n["site_runs"] == 6
    assert n["stocks"] == 6 * len(demo_result.stocks) and n["sinks"] == 6 * len(demo_result.sinks)
    assert len(ledger.current("stocks")) == len(demo_result.stocks)


def test_writer_killed_mid_transaction_leaves_ledger_consistent(tmp_path: Path, demo_result) -> None:
    db = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{db}")
    publish(ledger, demo_result)
    before = counts(ledger)
    child = textwrap.dedent(f"""
        import os, signal, sqlalchemy as sa
        from carbon.io.ledger import Ledger, runs, site_runs, stocks, now
        led = Ledger("sqlite:///{db}")
        led.start_run("x", config_path="c", code_version="t", flow_run_id=None)
        with led.engine.begin() as c:
            rid = c.execute(site_runs.insert().values(run_id="x", site_id="wuhan-quarry-reclaim", status="succeeded",
                            created_at=now(), code_version="t")).inserted_primary_key[0]
            row = {{col.name: 0 if isinstance(col.type, (sa.Float, sa.Integer)) else "x" for col in stocks.columns}}
            row.update(site_run_id=rid, site_id="wuhan-quarry-reclaim", year=2018)
            c.execute(stocks.insert().values(**row))
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", child], cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == -9
    reopened = Ledger(f"sqlite:///{db}")
    assert counts(reopened) == before  # nothing of the killed site is visible
    publish(reopened, demo_result)  # the next run completes
    assert counts(reopened)["site_runs"] == before["site_runs"] + 1


def test_missing_ledger_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="ledger folder does not exist"):
        Ledger(f"sqlite:///{tmp_path / 'nowhere' / 'ledger.db'}")


def test_unreachable_postgres_is_a_clear_error() -> None:
    with pytest.raises(LedgerError, match="cannot open ledger postgresql"):
        Ledger("postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=2")


def test_current_is_the_latest_run_of_each_site_as_a_whole(ledger: Ledger, demo_result) -> None:
    """A re-run with other map years replaces the site's estimate: no period of an older run
    stays current beside it (an export would otherwise count those years twice)."""
    publish(ledger, demo_result)
    narrower = demo_result.tables()
    keep = (narrower["sinks"]["period_start"] >= 2020) & (narrower["sinks"]["period_end"] <= 2022)
    narrower["sinks"] = narrower["sinks"][keep]
    narrower["stocks"] = narrower["stocks"][narrower["stocks"]["year"].between(2020, 2022)]
    narrower["transitions"] = narrower["transitions"][narrower["transitions"]["period_start"] >= 2020]
    run_id = str(uuid.uuid4())
    ledger.start_run(run_id, config_path="c", code_version="t", flow_run_id=None)
    latest = ledger.publish_site(run_id=run_id, flow_run_id=None, site_id=demo_result.site_id, tables=narrower,
                                 input_key="k", inputs={}, coefficient_set="s", coefficient_sha256="0" * 64,
                                 code_version="t")
    current = ledger.current("sinks")
    assert set(current["site_run_id"]) == {latest}
    assert len(current) == int(keep.sum())
    assert set(ledger.current("stocks")["year"]) == {2020, 2021, 2022}


def test_a_ledger_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE stocks (site_run_id INTEGER, site_id TEXT)"))
    with pytest.raises(LedgerError, match="older carbon-sink") as e:
        Ledger(url)
    assert not e.value.transient


def test_only_transient_failures_are_retried() -> None:
    import errno
    from types import SimpleNamespace

    from carbon.errors import InputError
    from flows.tasks import _transient

    def state(exc: BaseException):
        def result():
            raise exc
        return SimpleNamespace(result=result)

    assert _transient(None, None, state(LedgerError("locked", transient=True)))
    assert not _transient(None, None, state(LedgerError("wrong schema")))
    assert _transient(None, None, state(OSError(errno.EBUSY, "busy")))
    assert not _transient(None, None, state(OSError(errno.ENOENT, "missing")))
    assert not _transient(None, None, state(InputError("bad site")))


def test_publishing_a_site_again_in_the_same_run_is_idempotent(ledger: Ledger, demo_result) -> None:
    """A task re-run after a worker died past the commit does not write the site twice."""
    run_id = str(uuid.uuid4())
    first = publish(ledger, demo_result, run_id)
    again = ledger.publish_site(run_id=run_id, flow_run_id=None, site_id=demo_result.site_id,
                                tables=demo_result.tables(), input_key="k" * 64, inputs={"x": 1},
                                coefficient_set="set", coefficient_sha256="0" * 64, code_version="test")
    assert again == first
    assert counts(ledger)["site_runs"] == 1


def test_a_site_listed_twice_in_one_batch_is_published_once(ledger: Ledger, demo_result) -> None:
    """A batch publishes its sites in one pass: a site that appears twice in it (``run -s A -s A``)
    gets one site run, its rows once and one chain record, as when published one by one."""
    run_id = str(uuid.uuid4())
    ledger.start_run(run_id, config_path="c.toml", code_version="test", flow_run_id=None)
    one = dict(run_id=run_id, flow_run_id=None, site_id=demo_result.site_id, tables=demo_result.tables(),
               input_key="k" * 64, inputs={"x": 1}, coefficient_set="set", coefficient_sha256="0" * 64,
               code_version="test")
    first, second = ledger.publish_sites([one, dict(one)])
    assert first == second
    assert counts(ledger) == {"site_runs": 1, "stocks": len(demo_result.stocks), "sinks": len(demo_result.sinks),
                              "transitions": len(demo_result.transitions)}
    with ledger.engine.connect() as c:
        chained = c.execute(sa.select(sa.func.count()).select_from(ledger_chain)
                            .where(ledger_chain.c.kind == "site_run")).scalar_one()
    assert chained == 1
