"""Registry exports: deductions and vintages by hand, both registry shapes validated,
byte-identical re-exports, formula injection neutralised, bad parameters named."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path

import pandas as pd
import pytest

from carbon.errors import InputError
from carbon.io.config import load_config
from carbon.io.ledger import Ledger
from carbon.io.writers import write_csv
from carbon.pipeline.export import export
from carbon.pipeline.loop import compute_config
from carbon.rules.registry import Deductions, monitoring_dates, net_removals, neutralise, vintages
from tests.conftest import DEMO, publish, write_config


def test_net_creditable_removals_by_hand() -> None:
    d = Deductions(leakage_pct=10, buffer_pct=20, buffer_base="net_stock_change", project_emissions_tco2e=5)
    n = net_removals(1000, 900, 100, d)
    assert n["net_stock_change_tco2e"] == 900
    assert n["leakage_tco2e"] == pytest.approx(90)
    assert n["net_after_leakage_tco2e"] == pytest.approx(805)
    assert n["uncertainty_deduction_tco2e"] == pytest.approx(100)
    assert n["buffer_tco2e"] == pytest.approx(180)  # 20% of the net stock change
    assert n["net_creditable_tco2e"] == pytest.approx(525)
    after = net_removals(1000, 900, 100, Deductions(10, 20, "net_after_leakage", 5))
    assert after["buffer_tco2e"] == pytest.approx(161)  # 20% of 805
    assert after["net_creditable_tco2e"] == pytest.approx(544)


def test_a_loss_has_no_leakage_or_buffer_credit() -> None:
    n = net_removals(-50, -80, 0, Deductions(10, 20))
    assert n["leakage_tco2e"] == 0 and n["buffer_tco2e"] == 0
    assert n["net_creditable_tco2e"] == pytest.approx(-80)


def test_vintages_pro_rata_by_days_rounded_down() -> None:
    figures = {"net_creditable_tco2e": 730.5, "buffer_tco2e": 73.0, "project_removals_tco2e": 900.0, "buffer_pct": 10}
    v = vintages(dt.date(2021, 7, 1), dt.date(2023, 6, 30), figures)
    assert [(x["vintage_start"], x["vintage_end"], x["days"]) for x in v] == [
        ("2021-07-01", "2021-12-31", 184), ("2022-01-01", "2022-12-31", 365), ("2023-01-01", "2023-06-30", 181)]
    assert [x["net_creditable_tco2e"] for x in v] == pytest.approx([730.5 * 184 / 730, 730.5 * 365 / 730,
                                                                    730.5 * 181 / 730])
    # each vintage's net rounded down: 184.13, 365.25, 181.12 -> 184, 365, 181
    assert [x["issuable_tco2e"] for x in v] == [184, 365, 181]
    assert sum(x["issuable_tco2e"] for x in v) <= 730.5
    # floor(73.0) = 73: 18.4, 36.5, 18.1 -> 18, 36, 18 and the one left over to the largest remainder (36.5)
    assert [x["buffer_credits"] for x in v] == [18, 37, 18]
    assert v[0]["buffer_pct"] == 10  # percentages are not shared out


def test_no_vintage_is_issued_more_than_its_own_net() -> None:
    # three equal vintages of 10 t: 3.33 each; handing out floor(10) = 10 would give one 4 > 3.33
    v = vintages(dt.date(2021, 1, 1), dt.date(2023, 12, 31), {"net_creditable_tco2e": 10.0,
                                                              "buffer_tco2e": 0.0})
    shares = [x["net_creditable_tco2e"] for x in v]
    assert [x["issuable_tco2e"] for x in v] == [3, 3, 3]
    assert all(q <= n for q, n in zip([x["issuable_tco2e"] for x in v], shares, strict=True))


def test_map_years_to_monitoring_dates() -> None:
    assert monitoring_dates(2018, 2024) == (dt.date(2019, 1, 1), dt.date(2024, 12, 31))
    v = vintages(*monitoring_dates(2018, 2024), {"net_creditable_tco2e": 2192.0, "buffer_tco2e": 0.0})
    assert [x["days"] for x in v] == [365, 366, 365, 365, 365, 366]
    assert [x["issuable_tco2e"] for x in v] == [365, 366, 365, 365, 365, 366]


def test_formula_injection_is_neutralised(tmp_path: Path) -> None:
    assert neutralise("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    for bad in ("+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert neutralise(bad).startswith("'")
    assert neutralise(-12.5) == -12.5 and neutralise("Hubei") == "Hubei"
    write_csv(pd.DataFrame({"name": ["=cmd|' /C calc'!A0", "ok"], "sink_tco2e": [-12.5, 3.0]}), tmp_path / "x.csv")
    text = (tmp_path / "x.csv").read_text()
    assert "'=cmd" in text and "\n-12.500000\n" not in text and ",-12.500000\n" in text


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """The demo computed and published to a fresh ledger (without Prefect)."""
    root = tmp_path_factory.mktemp("registry")
    cfg_path = write_config(root / "c.toml")
    # coefficients without an SD get ±20% at 95% here (a center with its own measurements), so
    # that the quarry keeps credits after the AR-TOOL14 deduction and the vintages are non-zero
    # (with the default ±90% its deduction exceeds its sink: see the test below)
    text = cfg_path.read_text() + "buffer_pct = 10.0\nleakage_pct = 0.0\nuncertainty_default_pct = 20\n"
    cfg_path.write_text(text)
    cfg = load_config(cfg_path)
    cfg.output_dir.mkdir(parents=True)
    ledger = Ledger(cfg.ledger_url)
    run_id = str(uuid.uuid4())
    ledger.start_run(run_id, config_path=str(cfg_path), code_version="t", flow_run_id=None)
    for site_id, r in compute_config(cfg).results.items():
        ledger.publish_site(run_id=run_id, flow_run_id=None, site_id=site_id, tables=r.tables(), input_key="k",
                            inputs={"site": site_id}, coefficient_set="ipcc2019_tier1",
                            coefficient_sha256="0" * 64, code_version="t")
    return cfg_path


@pytest.mark.parametrize("kind", ["ccer", "verra", "json"])
def test_demo_exports_validate_and_are_byte_identical(published: Path, tmp_path: Path, kind: str) -> None:
    cfg = load_config(published)
    first = export(cfg, kind, tmp_path / "a")
    second = export(cfg, kind, tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    name = first[0].name
    assert manifest["files"][name] == hashlib.sha256(first[0].read_bytes()).hexdigest()
    assert set(manifest["sites"]) == {"wuhan-quarry-reclaim", "jiufeng-forest-park", "liangzi-lakeside-wetland",
                                      "daye-mine-wc"}
    assert all(len(s["ledger_run_id"]) == 36 for s in manifest["sites"].values())


def test_verra_vintages_and_deductions_follow_the_ledger(published: Path, tmp_path: Path) -> None:
    cfg = load_config(published)
    export(cfg, "verra", tmp_path, site_ids=["wuhan-quarry-reclaim"])
    df = pd.read_csv(tmp_path / "verra_vcus.csv", dtype={"project_id": str})
    assert df["vintage_start"].tolist() == [f"{y}-01-01" for y in range(2019, 2025)]
    ledger = Ledger(cfg.ledger_url)
    sink = ledger.current("sinks", "wuhan-quarry-reclaim").query("is_full_period").iloc[0]
    # the quarry's own property: leakage 5%; the config: buffer 10% of the net stock change
    net_change = sink["sink_tco2e"]
    leakage = 0.05 * net_change
    uncertainty = sink["sink_tco2e"] - sink["conservative_sink_tco2e"]
    net = net_change - leakage - uncertainty - 0.10 * net_change
    assert df["leakage_tco2e"].sum() == pytest.approx(leakage, rel=1e-5)
    assert df["uncertainty_deduction_tco2e"].sum() == pytest.approx(uncertainty, rel=1e-5)
    assert df["total_vintage_quantity"].sum() <= net
    # each vintage's own net rounded down: at most one t CO2e per vintage stays unissued
    days = [366 if y % 4 == 0 else 365 for y in range(2019, 2025)]
    assert df["total_vintage_quantity"].tolist() == [int(net * d / sum(days)) for d in days]
    assert df["total_vintage_quantity"].sum() > int(net) - len(df)
    assert (df["project_id"] == "9001").all() and (df["methodology"] == "VM0047").all()


def test_ccer_fields(published: Path, tmp_path: Path) -> None:
    export(load_config(published), "ccer", tmp_path, site_ids=["liangzi-lakeside-wetland"], period=(2018, 2024))
    df = pd.read_csv(tmp_path / "ccer_reductions.csv", dtype=str, encoding="utf-8-sig")
    row = df.iloc[0]
    assert row["methodologyNum"] == "CCER-14-003-V01" and row["provinceName"] == "Hubei"
    assert row["monitoringStart"] == "20190101" and row["monitoringEnd"] == "20241231"
    assert row["projectType"] == "N0301" and int(row["certifiedNum"]) >= 0


def test_missing_buffer_is_named(published: Path, tmp_path: Path) -> None:
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(published.read_text().replace("buffer_pct = 10.0\n", ""))
    with pytest.raises(InputError, match=r"site 'jiufeng-forest-park': buffer_pct is missing: set it as a site "
                                         r"property or in the configuration"):
        export(load_config(cfg_path), "json", tmp_path / "out")
    assert not (tmp_path / "out" / "removals.json").exists()  # nothing half-written


def test_invalid_registry_metadata_writes_nothing(published: Path, tmp_path: Path) -> None:
    sites = json.loads((DEMO / "sites.geojson").read_text())
    for f in sites["features"]:
        f["properties"]["verra_project_id"] = "=1+1"  # not a Verra project id
    (tmp_path / "sites.geojson").write_text(json.dumps(sites))
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(published.read_text().replace(f'sites = "{DEMO / "sites.geojson"}"',
                                                      f'sites = "{tmp_path / "sites.geojson"}"'))
    with pytest.raises(InputError, match=r"cannot export to verra: site properties are missing or bad") as err:
        export(load_config(cfg_path), "verra", tmp_path / "out")
    assert not any((tmp_path / "out").glob("*.csv"))
    # named by its property, once per site (not once per vintage row of the file)
    text = str(err.value)
    assert text.count("verra_project_id '=1+1' is not a Verra project ID") == 4
    for site_id in ("wuhan-quarry-reclaim", "jiufeng-forest-park", "liangzi-lakeside-wetland", "daye-mine-wc"):
        assert text.count(f"site {site_id!r}:") == 1
    assert "row 0" not in text


def test_unpublished_period_and_site(published: Path, tmp_path: Path) -> None:
    cfg = load_config(published)
    with pytest.raises(InputError, match="period 2019:2024 is not published"):
        export(cfg, "json", tmp_path, period=(2019, 2024))
    with pytest.raises(InputError, match="no published results in the ledger for site"):
        export(cfg, "json", tmp_path, site_ids=["nowhere"])


def test_numeric_ids_and_bad_deduction_properties(tmp_path: Path, published: Path) -> None:
    from carbon.rules.registry import _id, site_deductions

    assert _id({"verra_project_id": 9001.0}, "verra_project_id") == "9001"
    with pytest.raises(InputError) as e:
        site_deductions("s", {"buffer_pct": True, "leakage_pct": "lots", "project_emissions_tco2e_per_yr": -5,
                              "buffer_base": "gross"}, leakage_pct=None, buffer_pct=None,
                        buffer_base="net_stock_change", years=3)
    text = str(e.value)
    assert "buffer_pct True is not a number" in text and "leakage_pct 'lots' is not a number" in text
    assert "must not be negative" in text and "buffer_base 'gross'" in text
    assert site_deductions("s", {"buffer_pct": "20"}, leakage_pct=None, buffer_pct=None,
                           buffer_base="net_stock_change", years=3).buffer_pct == 20.0
    assert neutralise(" =1+1") == "' =1+1" and neutralise("\uff1dSUM(A1)").startswith("'")


def test_a_vintage_is_never_exported_twice_from_different_results(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path / "c.toml")
    cfg_path.write_text(cfg_path.read_text() + "buffer_pct = 10.0\n")
    publish(cfg_path, ["daye-mine-wc"])
    cfg = load_config(cfg_path)
    export(cfg, "verra", tmp_path / "first")  # vintages 2021-2024 of the 2020-2024 period
    export(cfg, "verra", tmp_path / "again")  # the same records again: fine, byte-identical
    assert (tmp_path / "first" / "verra_vcus.csv").read_bytes() == (tmp_path / "again" / "verra_vcus.csv").read_bytes()
    publish(cfg_path, ["daye-mine-wc"])  # a new estimate of the same years
    with pytest.raises(InputError, match="exported before") as e:
        export(cfg, "verra", tmp_path / "second")
    assert "vintage 2021-01-01..2021-12-31" in str(e.value)
    assert not (tmp_path / "second" / "verra_vcus.csv").exists()
    # a different registry keeps its own record
    export(cfg, "ccer", tmp_path / "ccer")


def test_credits_whose_uncertainty_is_unknown_are_refused_naming_the_coefficients(tmp_path: Path) -> None:
    """With no default uncertainty (uncertainty_default_pct = false), a coefficient without an
    SD leaves the uncertainty deduction too small: the export refuses and names it."""
    cfg_path = write_config(tmp_path / "c.toml")
    cfg_path.write_text(cfg_path.read_text() + "uncertainty_default_pct = false\nbuffer_pct = 10\n")
    publish(cfg_path, ["daye-mine-wc"])
    cfg = load_config(cfg_path)
    with pytest.raises(InputError, match="uncertainty is unknown") as err:
        export(cfg, "verra", tmp_path / "out")
    assert "site daye-mine-wc, period 2020-2024" in str(err.value)
    assert "forest/soc" in str(err.value)  # the IPCC table gives no SD for forest soil
    assert not (tmp_path / "out" / "verra_vcus.csv").exists()
    # with the default policy the same site exports, its SDs marked as defaulted
    cfg_path.write_text(cfg_path.read_text().replace("uncertainty_default_pct = false\n", ""))
    publish(cfg_path, ["daye-mine-wc"])
    paths = export(load_config(cfg_path), "verra", tmp_path / "ok")
    assert any(p.name == "verra_vcus.csv" for p in paths)


def test_with_the_default_uncertainty_the_quarry_keeps_its_credits(tmp_path: Path) -> None:
    """The demo quarry under IPCC's nominal ±90% for its coefficients without an SD. The
    defaulted coefficients of a pool are drawn together (methods §10), so land that moves
    between classes of equal soil carbon adds no soil uncertainty: the interval stays about
    as wide as its forest biomass SDs make it, and credits are issued."""
    cfg_path = write_config(tmp_path / "c.toml")
    cfg_path.write_text(cfg_path.read_text() + "buffer_pct = 10.0\n")
    publish(cfg_path, ["wuhan-quarry-reclaim"])
    cfg = load_config(cfg_path)
    sink = Ledger(cfg.ledger_url).current("sinks", "wuhan-quarry-reclaim").query("is_full_period").iloc[0]
    assert sink["sink_tco2e"] > sink["conservative_sink_tco2e"] > 0
    assert "default SD for" in sink["uncertainty_method"]
    export(cfg, "verra", tmp_path / "out")
    df = pd.read_csv(tmp_path / "out" / "verra_vcus.csv")
    assert df["total_vintage_quantity"].sum() > 0


def test_a_vintage_that_has_not_ended_is_refused(tmp_path: Path) -> None:
    """A map of the current year ends a period whose last vintage runs to 31 December: no
    credit is issued for it before it has ended."""
    year = dt.date.today().year
    rows = (DEMO / "landcover" / "catalog.csv").read_text().splitlines()
    extra = [r.replace("2024,", f"{year},", 1) for r in rows if r.startswith("2024,")]
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("\n".join([rows[0], *[r for r in rows[1:] if r.startswith(("2020,", "2024,"))], *extra]) + "\n")
    for r in rows[1:]:  # the rasters and accuracy samples beside the catalog
        for name in (r.split(",")[1], r.rsplit(",", 1)[1]):
            if name and not (tmp_path / name).exists():
                (tmp_path / name).symlink_to(DEMO / "landcover" / name)
    cfg_path = write_config(tmp_path / "c.toml", landcover=catalog)
    cfg_path.write_text(cfg_path.read_text() + "buffer_pct = 10\nuncertainty_default_pct = 20\n")
    publish(cfg_path, ["daye-mine-wc"])
    with pytest.raises(InputError, match="has not ended") as err:
        export(load_config(cfg_path), "verra", tmp_path / "out")
    assert f"vintage {year}-01-01..{year}-12-31" in str(err.value) and "site daye-mine-wc" in str(err.value)
    assert not (tmp_path / "out" / "verra_vcus.csv").exists()


def _two_estimates(tmp_path: Path) -> Path:
    cfg_path = write_config(tmp_path / "c.toml")
    cfg_path.write_text(cfg_path.read_text() + "buffer_pct = 10\nuncertainty_default_pct = 20\n")
    publish(cfg_path, ["daye-mine-wc"])
    return cfg_path


def test_an_export_that_fails_after_placing_its_files_records_nothing_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The files are placed inside the ledger's transaction: if anything fails before the commit
    (here a disk error right after the files are in place), the vintages are not recorded, no
    file of the export stays, and an earlier export's file is put back."""
    cfg = load_config(_two_estimates(tmp_path))
    out = tmp_path / "export"
    out.mkdir()
    (out / "verra_vcus.csv").write_text("an earlier export\n")
    real = Ledger.record_export

    def fails_before_commit(self, registry, rows, check=None, publish=None):  # noqa: ANN001, ANN202
        def place_then_fail() -> None:
            publish()
            assert (out / "manifest.json").exists()  # the files were in place
            raise OSError(28, "No space left on device")
        return real(self, registry, rows, check=check, publish=place_then_fail)

    monkeypatch.setattr(Ledger, "record_export", fails_before_commit)
    with pytest.raises(OSError, match="No space left"):
        export(cfg, "verra", out)
    assert (out / "verra_vcus.csv").read_text() == "an earlier export\n"
    assert not (out / "manifest.json").exists()
    assert Ledger(cfg.ledger_url).exported("verra", ["daye-mine-wc"]).empty
    monkeypatch.setattr(Ledger, "record_export", real)
    export(cfg, "verra", out)  # nothing was recorded: the same export now goes through
    assert len(Ledger(cfg.ledger_url).exported("verra", ["daye-mine-wc"])) == 4


def test_a_locked_ledger_leaves_no_export_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process holds the ledger's write lock: the export waits, gives up, and leaves no
    file in --out (before, the files were moved into place first, then recording failed)."""
    import sqlite3

    from carbon.io import ledger as ledger_module
    from carbon.io.ledger import LedgerError

    def short_wait(dbapi_conn, _record) -> None:  # noqa: ANN001
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=300")
        cur.close()

    monkeypatch.setattr(ledger_module, "_sqlite_pragmas", short_wait)
    cfg = load_config(_two_estimates(tmp_path))
    holder = sqlite3.connect(cfg.ledger_url.removeprefix("sqlite:///"))
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(LedgerError, match="cannot be written"):
            export(cfg, "verra", tmp_path / "export")
    finally:
        holder.rollback()
        holder.close()
    assert not any((tmp_path / "export").glob("*.csv")) and not (tmp_path / "export" / "manifest.json").exists()
    assert Ledger(cfg.ledger_url).exported("verra", ["daye-mine-wc"]).empty


def test_two_exports_racing_cannot_both_issue_overlapping_vintages(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two exports that both passed the early check (as when they run at once): the check that
    counts is made again inside the ledger's write lock, so the second is refused."""
    cfg = load_config(_two_estimates(tmp_path))
    export(cfg, "verra", tmp_path / "first", period=(2020, 2024))
    monkeypatch.setattr(Ledger, "exported", lambda self, registry, site_ids: pd.DataFrame())  # the early look
    with pytest.raises(InputError, match="exported before"):
        export(cfg, "verra", tmp_path / "second", period=(2023, 2024))
    assert not (tmp_path / "second" / "verra_vcus.csv").exists()


def test_export_folders_that_would_lose_or_scatter_files_are_refused(tmp_path: Path) -> None:
    """--out naming a file, the root, or a folder holding another registry's export is refused
    in one line; a path through '..' leaves no stray folder."""
    cfg = load_config(_two_estimates(tmp_path))
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        export(cfg, "verra", tmp_path / "a-file")
    with pytest.raises(InputError, match="root"):
        export(cfg, "verra", Path("/"))
    export(cfg, "ccer", tmp_path / "shared")
    with pytest.raises(InputError, match="holds a ccer export"):
        export(cfg, "verra", tmp_path / "shared")
    assert json.loads((tmp_path / "shared" / "manifest.json").read_text())["registry"] == "ccer"
    (tmp_path / "base").mkdir()
    export(cfg, "verra", tmp_path / "base" / "stray" / ".." / "verra")
    assert (tmp_path / "base" / "verra" / "verra_vcus.csv").is_file()
    assert not (tmp_path / "base" / "stray").exists()


def test_overlapping_sites_are_never_both_credited(tmp_path: Path) -> None:
    """Two sites sharing land (validate warns) were both published and both exported; now the
    export refuses, naming both and the overlap, and a site overlapping one exported before is
    refused too. Each site alone may be metered."""
    import geopandas as gpd
    import shapely

    sites = gpd.read_file(DEMO / "sites.geojson")
    copy = sites[sites["site_id"] == "daye-mine-wc"].copy()
    copy["site_id"] = "daye-mine-wc-copy"
    copy.geometry = [shapely.affinity.translate(g, xoff=0.0005) for g in copy.geometry]  # ~50 m east
    both = gpd.GeoDataFrame(gpd.pd.concat([sites, copy], ignore_index=True), crs=sites.crs)
    path = tmp_path / "sites.geojson"
    both.to_file(path, driver="GeoJSON")
    cfg_path = write_config(tmp_path / "c.toml", sites=path)
    cfg_path.write_text(cfg_path.read_text() + "buffer_pct = 10\nuncertainty_default_pct = 20\n")
    publish(cfg_path, ["daye-mine-wc", "daye-mine-wc-copy"])
    cfg = load_config(cfg_path)
    with pytest.raises(InputError, match="credited twice") as err:
        export(cfg, "verra", tmp_path / "both", site_ids=["daye-mine-wc", "daye-mine-wc-copy"])
    assert "sites 'daye-mine-wc' and 'daye-mine-wc-copy' overlap by" in str(err.value)
    assert not (tmp_path / "both" / "verra_vcus.csv").exists()
    export(cfg, "verra", tmp_path / "one", site_ids=["daye-mine-wc"])
    with pytest.raises(InputError, match="credited twice"):
        export(cfg, "verra", tmp_path / "other", site_ids=["daye-mine-wc-copy"])


def test_identical_inputs_give_identical_credits_whatever_the_site_id() -> None:
    """The draws are seeded from the inputs (the polygon, not the name): renaming a site does not
    move its interval, its conservative sink nor the credits drawn from it."""
    import dataclasses

    from carbon.io.sites import load_sites
    from carbon.io.tables import load_catalog, load_coefficients
    from carbon.pipeline.site import compute_site

    cfg = load_config(None)
    site = next(s for s in load_sites(cfg.sites) if s.site_id == "daye-mine-wc")
    renamed = dataclasses.replace(site, site_id="another-name")
    catalog, coef = load_catalog(cfg.landcover), load_coefficients(cfg.coefficients)
    a = compute_site(site, catalog, coef, draws=500).sinks.drop(columns="site_id")
    b = compute_site(renamed, catalog, coef, draws=500).sinks.drop(columns="site_id")
    pd.testing.assert_frame_equal(a, b)
    assert (a["sink_tco2e_upper90"] > a["sink_tco2e_lower90"]).all()


def _sites_file(tmp_path: Path, change) -> Path:  # noqa: ANN001
    sites = json.loads((DEMO / "sites.geojson").read_text())
    for f in sites["features"]:
        change(f)
    path = tmp_path / "sites.geojson"
    path.write_text(json.dumps(sites, ensure_ascii=False))
    return path


def test_validate_registry_names_every_missing_or_bad_property_once_per_site(tmp_path: Path) -> None:
    """`validate --registry verra|ccer` lists each site's missing or bad properties by name, in one
    line per site, before any export (the rules: carbon.rules.registry.SITE_PROPERTIES)."""
    from carbon.pipeline.validate import validate_inputs

    def change(f: dict) -> None:
        p = f["properties"]
        if p["site_id"] == "wuhan-quarry-reclaim":
            del p["verra_project_id"], p["owner"]
        if p["site_id"] == "jiufeng-forest-park":
            p["country"], p["project_type"] = "China", "forest"

    cfg_path = write_config(tmp_path / "c.toml", sites=_sites_file(tmp_path, change))
    cfg_path.write_text(cfg_path.read_text() + "buffer_pct = 10\n")
    verra = validate_inputs(load_config(cfg_path), quick=True, registry="verra").problems
    assert [p for p in verra if "verra export" in p] == [
        "site 'wuhan-quarry-reclaim': verra_project_id is missing (a Verra project ID in digits: project_id) "
        "(site properties of the sites file, for a verra export)",
        "site 'jiufeng-forest-park': country 'China' is not an ISO 3166 alpha-2 country code such as CN: "
        "country_area (site properties of the sites file, for a verra export)"]
    ccer = [p for p in validate_inputs(load_config(cfg_path), quick=True, registry="ccer").problems
            if "ccer export" in p]
    assert len(ccer) == 2 and "owner is missing" in ccer[0] and "project_type 'forest'" in ccer[1]
    assert not [p for p in validate_inputs(load_config(cfg_path), quick=True).problems if "export" in p]
    # the command line: one line per site, exit 1; an unknown registry is a usage error
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["validate", "--quick", "--registry", "verra", "--config", str(cfg_path)])
    assert result.exit_code == 1, result.output
    assert result.stdout.count("verra_project_id is missing") == 1 and result.stdout.count("country 'China'") == 1
    assert CliRunner().invoke(app, ["validate", "--registry", "gold", "--config", str(cfg_path)]).exit_code == 2


def test_an_export_refuses_sites_changed_since_their_published_run(tmp_path: Path) -> None:
    """An export credits the land the published run metered: once the site's polygon moves in
    the sites file, the export is refused until the site is re-run."""
    import shapely

    sites = _sites_file(tmp_path, lambda f: None)
    cfg_path = write_config(tmp_path / "c.toml", sites=sites)
    cfg_path.write_text(cfg_path.read_text() + "buffer_pct = 10\nuncertainty_default_pct = 20\n")
    publish(cfg_path, ["daye-mine-wc"])
    data = json.loads(sites.read_text())
    for f in data["features"]:
        if f["properties"]["site_id"] == "daye-mine-wc":
            moved = shapely.affinity.translate(shapely.geometry.shape(f["geometry"]), xoff=0.0001)
            f["geometry"] = shapely.geometry.mapping(moved)
    sites.write_text(json.dumps(data, ensure_ascii=False))
    with pytest.raises(InputError, match="the sites file changed since the published runs") as err:
        export(load_config(cfg_path), "verra", tmp_path / "out")
    assert "site 'daye-mine-wc': its polygon or CRS changed" in str(err.value)
    assert "carbon-sink run --site daye-mine-wc" in str(err.value)
    assert not (tmp_path / "out" / "verra_vcus.csv").exists()
    publish(cfg_path, ["daye-mine-wc"])  # re-run: the export goes through
    export(load_config(cfg_path), "verra", tmp_path / "ok")
    assert (tmp_path / "ok" / "verra_vcus.csv").is_file()


def test_a_metering_run_records_what_the_export_compares(tmp_path: Path) -> None:
    """A run through the site loop records the site's geometry digest, ecozone and baseline year
    in its input key; a changed baseline year is refused like a moved polygon."""
    from carbon.pipeline.loop import SiteParams, finish_run, meter_site, start_run

    sites = _sites_file(tmp_path, lambda f: None)
    cfg_path = write_config(tmp_path / "c.toml", sites=sites)
    cfg_path.write_text(cfg_path.read_text() + "buffer_pct = 10\nuncertainty_default_pct = 20\n")
    ctx = start_run(str(cfg_path), ["daye-mine-wc"])
    finish_run(ctx, [meter_site(ctx, "daye-mine-wc", SiteParams())])
    export(load_config(cfg_path), "json", tmp_path / "before")
    data = json.loads(sites.read_text())
    original = sites.read_text()
    for f in data["features"]:
        if f["properties"]["site_id"] == "daye-mine-wc":
            f["properties"]["baseline_year"] = 2021
    sites.write_text(json.dumps(data, ensure_ascii=False))
    with pytest.raises(InputError, match="its baseline_year changed"):
        export(load_config(cfg_path), "json", tmp_path / "after")
    # any property: the export would write what the run did not meter with (a project id here)
    data = json.loads(original)
    for f in data["features"]:
        if f["properties"]["site_id"] == "daye-mine-wc":
            f["properties"]["verra_project_id"] = "VCS-9999"
    sites.write_text(json.dumps(data, ensure_ascii=False))
    with pytest.raises(InputError, match="property verra_project_id changed") as err:
        export(load_config(cfg_path), "json", tmp_path / "after")
    assert "its property verra_project_id changed" in str(err.value)


def test_the_ccer_file_is_utf8_with_a_bom_for_excel(published: Path, tmp_path: Path) -> None:
    """Excel on Chinese Windows opens a CSV without a BOM as GBK and garbles the project names."""
    export(load_config(published), "ccer", tmp_path, site_ids=["wuhan-quarry-reclaim"])
    raw = (tmp_path / "ccer_reductions.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and raw.count(b"\xef\xbb\xbf") == 1
    text = raw.decode("utf-8-sig")
    assert text.startswith("applyId,") and "武汉废弃采石场复绿碳汇示范项目" in text
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["files"]["ccer_reductions.csv"] == hashlib.sha256(raw).hexdigest()
