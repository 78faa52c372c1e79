"""Analysts' scenarios beside the official estimate: a re-run of the demo quarry with other map
years (or method, start year, coefficients) is recorded as a scenario, listed by history and
shown by results --scenario, and never replaces the official estimate, which the next
scheduled run still finds unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from typer.testing import CliRunner

from carbon.api import compute
from carbon.io.config import load_config
from carbon.io.ledger import Ledger
from carbon.pipeline.loop import SiteParams, finish_run, for_each_site, meter_site, start_run
from carbon.pipeline.verify import verify_chain
from carbon.pipeline.versions import site_versions
from flows.cli import app
from tests.conftest import DEMO, write_config

SITE = "wuhan-quarry-reclaim"
THREE = (2018, 2020, 2024)
runner = CliRunner()


def _meter(cfg: Path, params: SiteParams, coefficients: str | None = None) -> dict:
    ctx = start_run(cfg, [SITE], coefficients)
    outcomes = for_each_site(ctx.site_ids, lambda s: meter_site(ctx, s, params))
    return finish_run(ctx, outcomes) | {"outcome": outcomes[0]}


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = write_config(tmp_path / "c.toml", output_dir=tmp_path / "out")
    with path.open("a", encoding="utf-8") as f:
        f.write("monte_carlo_draws = 300\n")
    return path


def _full(df):
    return df[df["is_full_period"]].iloc[0]


def test_a_scenario_is_recorded_beside_the_official_estimate_and_never_replaces_it(cfg: Path) -> None:
    official = _meter(cfg, SiteParams())
    assert official["status"] == "completed" and official["outcome"].value["scenario"] is None
    ledger = Ledger(load_config(cfg).ledger_url)
    before = _full(ledger.current("sinks", SITE))

    scen = _meter(cfg, SiteParams(years=THREE, force=True))
    name = scen["outcome"].value["scenario"]
    assert name == "years=2018,2020,2024"
    # the official estimate is unchanged; the scenario's tables are those of the same site with three maps
    after = _full(ledger.current("sinks", SITE))
    assert after["sink_tco2e"] == before["sink_tco2e"] and after["run_id"] == before["run_id"]
    scenario = _full(ledger.current("sinks", SITE, scenario=name))
    alone = compute(str(DEMO / "sites.geojson"), site_ids=[SITE], years=list(THREE),
                    config=load_config(cfg)).sinks
    assert scenario["sink_tco2e"] == pytest.approx(float(_full(alone)["sink_tco2e"]), rel=1e-12)
    assert scenario["sink_tco2e"] != pytest.approx(before["sink_tco2e"], rel=1e-3)
    assert set(ledger.current("stocks", SITE, scenario=name)["year"]) == set(THREE)
    assert ledger.scenarios() == [name]

    # history: the versions with their years, method, sink, and which is official
    versions = site_versions(ledger.history(SITE)).set_index("site_run_id")
    assert list(versions["estimate"]) == ["official (current)", "scenario"]
    assert versions.iloc[1]["years"] == "2018,2020,2024" and versions.iloc[0]["years"].count(",") == 6
    assert versions.iloc[1]["sink_tco2e"] == pytest.approx(scenario["sink_tco2e"])
    assert json.loads(versions.iloc[1]["parameters"]) == {"years": list(THREE)}

    # the next scheduled run finds the official estimate's inputs unchanged: skipped
    again = _meter(cfg, SiteParams())
    assert again["n_skipped"] == 1
    assert _full(ledger.current("sinks", SITE))["run_id"] == before["run_id"]
    # and the chain still verifies with scenario site runs in it
    assert verify_chain(load_config(cfg).ledger_url).problems == []


def test_method_start_year_and_coefficients_make_scenarios_and_a_name_is_kept(cfg: Path, tmp_path: Path) -> None:
    _meter(cfg, SiteParams())
    coef = tmp_path / "coef.csv"
    coef.write_text((Path(load_config(cfg).coefficients)).read_text())
    out = _meter(cfg, SiteParams(method="stock_difference", force=True))
    assert out["outcome"].value["scenario"] == "method=stock_difference"
    out = _meter(cfg, SiteParams(start_year=2020, force=True, scenario="from planting"))
    assert out["outcome"].value["scenario"] == "from planting"
    out = _meter(cfg, SiteParams(force=True), coefficients=str(coef))
    assert out["outcome"].value["scenario"] == f"coefficients={coef.resolve()}"
    versions = site_versions(Ledger(load_config(cfg).ledger_url).history(SITE))
    assert list(versions["estimate"]) == ["official (current)", "scenario", "scenario", "scenario"]


def test_the_sites_years_property_sets_the_official_estimate(cfg: Path, tmp_path: Path) -> None:
    """A site whose configuration gives it map years: its official estimate uses them, and a
    re-run with the same years is official too (not a scenario)."""
    sites = gpd.read_file(DEMO / "sites.geojson")
    sites["years"] = [",".join(map(str, THREE)) if s == SITE else None for s in sites["site_id"]]
    path = tmp_path / "sites.geojson"
    sites.to_file(path, driver="GeoJSON")
    text = cfg.read_text().replace(f'sites = "{DEMO / "sites.geojson"}"', f'sites = "{path}"')
    assert str(path) in text
    cfg.write_text(text)
    official = _meter(cfg, SiteParams())
    assert official["outcome"].value["scenario"] is None
    ledger = Ledger(load_config(cfg).ledger_url)
    assert set(ledger.current("stocks", SITE)["year"]) == set(THREE)
    same = _meter(cfg, SiteParams(years=THREE, force=True))
    assert same["outcome"].value["scenario"] is None


def test_the_cli_runs_a_scenario_and_lists_it(cfg: Path, prefect_server) -> None:
    _meter(cfg, SiteParams())
    result = runner.invoke(app, ["run", "--config", str(cfg), "--site", SITE, "--years", "2018,2020,2024",
                                 "--no-reports"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # however the console wraps it
    assert "scenario 'years=2018,2020,2024' recorded beside the official estimate" in said
    shown = runner.invoke(app, ["results", "--config", str(cfg), "--site", SITE, "--scenario", "years=2018,2020,2024",
                                "--format", "json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.stdout)
    assert {r["period_start"] for r in rows} == {2018, 2020}
    hist = runner.invoke(app, ["history", "--config", str(cfg), "--site", SITE, "--format", "json"])
    assert [v["estimate"] for v in json.loads(hist.stdout)] == ["official (current)", "scenario"]
    unknown = runner.invoke(app, ["results", "--config", str(cfg), "--scenario", "nope"])
    assert unknown.exit_code == 3 and "no scenario 'nope'" in " ".join(unknown.output.split())
    both = runner.invoke(app, ["run", "--config", str(cfg), "--years", "2018,2024"])
    assert both.exit_code == 2 and "exactly one --site" in " ".join(both.output.split())


def test_a_map_of_the_future_never_makes_the_official_estimate(cfg: Path, tmp_path: Path) -> None:
    """A catalog row of a year after the current one (a 2099 map once published 77 years of
    extrapolated growth): the official run of the sites it covers fails, naming the catalog,
    the year and the raster; the same maps run as a scenario are computed."""
    import datetime as dt
    import shutil

    landcover = tmp_path / "landcover"
    shutil.copytree(DEMO / "landcover", landcover)
    later = dt.date.today().year + 1
    rows = (landcover / "catalog.csv").read_text().splitlines()
    extra = [r.replace("2024,", f"{later},", 1) for r in rows if r.startswith("2024,clcd")]
    (landcover / "catalog.csv").write_text("\n".join([*rows, *extra]) + "\n")
    text = cfg.read_text().replace(str(DEMO / "landcover" / "catalog.csv"), str(landcover / "catalog.csv"))
    assert str(landcover) in text
    cfg.write_text(text)
    official = _meter(cfg, SiteParams())
    assert official["n_failed"] == 1
    error = official["outcome"].error
    assert f"map year {later} (" in error and "clcd_2024_a.tif" in error and "after the current year" in error
    assert Ledger(load_config(cfg).ledger_url).current("sinks", SITE).empty
    scenario = _meter(cfg, SiteParams(years=(2018, 2024, later), force=True))
    assert scenario["status"] == "completed" and scenario["outcome"].value["scenario"] == f"years=2018,2024,{later}"
