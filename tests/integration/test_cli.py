"""The carbon-sink command line, as a user calls it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.conftest import write_config

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    cfg = write_config(tmp_path_factory.mktemp("cli") / "c.toml")
    result = runner.invoke(app, ["run", "--config", str(cfg)])
    assert result.exit_code == 0, (result.exit_code, repr(result.exception), result.output[-3000:])
    return cfg


@pytest.mark.parametrize("command", ["run", "validate", "results", "history", "serve"])
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "--config" in result.output


def test_results_json_has_the_sink_columns_and_integer_years(published: Path) -> None:
    result = runner.invoke(app, ["results", "--config", str(published), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and len(rows) == 26  # 4 sites: 6 + 6 + 6 + 4 consecutive/whole periods
    for key in ("site_id", "period_start", "period_end", "area_ha", "stock_start_tc", "stock_end_tc",
                "stock_change_tc", "sink_tco2e", "annual_sink_tco2e", "sink_tco2e_median", "sink_tco2e_lower90",
                "sink_tco2e_upper90", "sink_tco2e_lower95", "sink_tco2e_upper95", "sink_tco2e_u90_pct",
                "conservative_sink_tco2e", "conservative_rule"):
        assert key in rows[0]
    assert all(isinstance(r["period_start"], int) and isinstance(r["period_end"], int) for r in rows)
    quarry = [r for r in rows if r["site_id"] == "wuhan-quarry-reclaim" and r["is_full_period"]][0]
    assert quarry["sink_tco2e"] == pytest.approx(quarry["stock_change_tc"] * 44 / 12)


def test_results_stocks_csv_has_a_column_per_pool(published: Path) -> None:
    result = runner.invoke(app, ["results", "--config", str(published), "--stocks", "--format", "csv",
                                 "--site", "daye-mine-wc"])
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.strip().splitlines()
    for col in ("site_id", "year", "area_ha", "stock_tc", "stock_agb_tc", "stock_bgb_tc", "stock_deadwood_tc",
                "stock_litter_tc", "stock_soc_tc"):
        assert col in header.split(",")
    assert [line.split(",")[1] for line in lines] == ["2020", "2021", "2022", "2023", "2024"]


def test_run_site_adds_a_version_and_history_shows_it(published: Path) -> None:
    result = runner.invoke(app, ["run", "--config", str(published), "--site", "daye-mine-wc"])
    assert result.exit_code == 0, result.output
    hist = runner.invoke(app, ["history", "--config", str(published), "--site", "daye-mine-wc"])
    assert hist.exit_code == 0
    assert hist.stdout.count("succeeded") == 2


def test_validate_passes_on_the_demo(published: Path) -> None:
    result = runner.invoke(app, ["validate", "--config", str(published)])
    assert result.exit_code == 0, result.output


def test_validate_lists_every_problem(tmp_path: Path) -> None:
    sites = tmp_path / "sites.geojson"
    sites.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"site_id": "../x", "name": "a", "site_type": "mine", "ecozone": "z"},
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}}]}))
    coef = tmp_path / "coef.csv"
    coef.write_text("carbon_class,ecozone,pool,stock_tc_per_ha,sd_tc_per_ha,source\nforest,*,agb,-1,,x\n")
    cfg = write_config(tmp_path / "c.toml", sites=sites, coefficients=coef)
    result = runner.invoke(app, ["validate", "--config", str(cfg)])
    assert result.exit_code == 1
    text = result.stdout
    assert "site_id" in text and "site_type" in text and "Self-intersection" in text and "stock_tc_per_ha" in text


def test_unwritable_output_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = write_config(tmp_path / "c.toml", output_dir=blocker / "out")
    result = runner.invoke(app, ["run", "--config", str(cfg)])
    assert result.exit_code == 3
    assert "cannot create output directory" in result.output


def test_missing_config_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["results", "--config", str(tmp_path / "none.toml")])
    assert result.exit_code == 3
    assert "configuration file not found" in result.output


def test_unknown_site(published: Path) -> None:
    result = runner.invoke(app, ["run", "--config", str(published), "--site", "nope"])
    assert result.exit_code == 3
    assert "unknown site_id(s): 'nope'" in result.output


@pytest.mark.parametrize("command", ["results", "history", "report"])
def test_an_unknown_site_is_bad_input_naming_the_known_sites(published: Path, command: str) -> None:
    result = runner.invoke(app, [command, "--config", str(published), "--site", "nope"])
    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error: unknown site 'nope': the known sites are daye-mine-wc, jiufeng-forest-park, "
                           "liangzi-lakeside-wetland, wuhan-quarry-reclaim"), text
    assert "Traceback" not in result.output


def test_exit_codes_usage_2_bad_input_3(published: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["results", "--no-such-option"]).exit_code == 2  # Typer's usage error
    assert runner.invoke(app, ["results", "--config", str(published), "--format", "xml"]).exit_code == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('sites = "nowhere.geojson"\nno_such_key = 1\n')
    result = runner.invoke(app, ["results", "--config", str(bad)])
    assert result.exit_code == 3, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output


def test_run_with_a_failing_site_reports_it_and_exits_1(tmp_path: Path) -> None:
    import geopandas as gpd
    import pandas as pd

    from tests.conftest import DEMO

    gdf = gpd.read_file(DEMO / "sites.geojson")
    bad = gdf.iloc[[0]].copy()
    bad["site_id"] = "far-away"
    bad["geometry"] = bad.translate(xoff=10.0)
    sites = tmp_path / "sites.geojson"
    gpd.GeoDataFrame(pd.concat([gdf, bad], ignore_index=True), crs=4326).to_file(sites, driver="GeoJSON")
    cfg = write_config(tmp_path / "c.toml", sites=sites)
    result = runner.invoke(app, ["run", "--config", str(cfg)])
    assert result.exit_code == 1, result.output
    assert "site far-away failed" in result.output and "outside every raster" in result.output
    assert "wuhan-quarry-reclaim" in result.stdout  # the others' sinks are printed


def test_a_run_of_many_sites_says_how_many_instead_of_listing_them(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``RUN_TABLE_MAX_SITES`` sites, a run prints how many sites remove and emit and where
    each site's figures are, not a table of every site (10,000 rows took 20 s to draw), and
    names that many failed sites, then how many more (the manifest has each)."""
    import geopandas as gpd
    import pandas as pd

    from flows import cli
    from tests.conftest import DEMO

    monkeypatch.setattr(cli, "RUN_TABLE_MAX_SITES", 2)
    gdf = gpd.read_file(DEMO / "sites.geojson")
    far = [gdf.iloc[[0]].assign(site_id=f"far-away-{i}", geometry=gdf.iloc[[0]].translate(xoff=10.0 + i))
           for i in range(3)]
    sites = tmp_path / "sites.geojson"
    gpd.GeoDataFrame(pd.concat([gdf, *far], ignore_index=True), crs=4326).to_file(sites, driver="GeoJSON")
    cfg = write_config(tmp_path / "c.toml", sites=sites)
    result = runner.invoke(app, ["run", "--config", str(cfg)])
    assert result.exit_code == 1, result.output
    rows = json.loads(runner.invoke(app, ["results", "--config", str(cfg), "--format", "json"]).stdout)
    full = [r for r in rows if r["is_full_period"]]
    removing = sum(r["sink_tco2e"] > 0 for r in full)
    emitting = sum(r["sink_tco2e"] < 0 for r in full)
    assert len(full) == 4 and removing + emitting == 4
    text = " ".join(result.stdout.split())
    assert (f"4 sites, {removing} removing and {emitting} emitting" in text
            and "each site's: carbon-sink results" in text), text
    assert not any(s in result.stdout for s in gdf["site_id"])  # no row per site
    failed_lines = [line for line in result.output.splitlines() if line.startswith("site far-away-")]
    assert len(failed_lines) == 2 and "and 1 more sites failed" in result.output, result.output


def test_validate_reports_overlapping_sites(tmp_path: Path) -> None:
    import geopandas as gpd
    import pandas as pd

    from tests.conftest import DEMO

    gdf = gpd.read_file(DEMO / "sites.geojson")
    twin = gdf.iloc[[0]].copy()
    twin["site_id"] = "quarry-twin"
    sites = tmp_path / "sites.geojson"
    gpd.GeoDataFrame(pd.concat([gdf, twin], ignore_index=True), crs=4326).to_file(sites, driver="GeoJSON")
    cfg = write_config(tmp_path / "c.toml", sites=sites)
    result = runner.invoke(app, ["validate", "--config", str(cfg), "--quick"])
    assert result.exit_code == 1
    assert "sites 'wuhan-quarry-reclaim' and 'quarry-twin' overlap by 62" in result.stdout


def test_messages_with_brackets_and_regexes_print_as_text(tmp_path: Path) -> None:
    """A site value such as ``forest[/x]`` and the site_id pattern ``^[a-z0-9_-]{1,64}$`` are
    printed as they are, not read as console markup (which crashed or mangled them)."""
    import geopandas as gpd

    from tests.conftest import DEMO

    sites = gpd.read_file(DEMO / "sites.geojson")
    sites.loc[0, "site_type"] = "forest[/x]"
    sites.loc[1, "site_id"] = "Bad [bold]ID"
    path = tmp_path / "sites.geojson"
    sites.to_file(path, driver="GeoJSON")
    cfg = write_config(tmp_path / "c.toml", sites=path)
    result = runner.invoke(app, ["validate", "--quick", "--config", str(cfg)])
    assert result.exit_code == 1, (repr(result.exception), result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    text = " ".join(result.output.split())  # the console may wrap long lines
    assert "forest[/x]" in text
    assert "Bad [bold]ID" in text
    assert "^[a-z0-9_-]{1,64}$" in text


def test_validate_names_a_nodata_value_that_is_a_legend_code_and_an_unusable_output_folder(tmp_path: Path) -> None:
    """A CLCD raster whose nodata is 1 (cropland) would read its cropland as no data; an output
    folder under a file cannot be made: validate says both, each in one line, before any run."""
    import numpy as np

    from tests.rasters import write_tif

    write_tif(tmp_path / "lc.tif", np.full((3, 3), 2, dtype=np.uint8), nodata=1)
    (tmp_path / "catalog.csv").write_text("year,path,legend\n2020,lc.tif,clcd\n")
    (tmp_path / "a-file").write_text("x")
    cfg = write_config(tmp_path / "c.toml", landcover=tmp_path / "catalog.csv", output_dir=tmp_path / "a-file" / "out")
    result = runner.invoke(app, ["validate", "--quick", "--config", str(cfg)])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "its nodata value 1 is also code 1" in text and "lc.tif" in text
    assert "output folder" in text and "is not a folder" in text


def _numbers(rows: list[dict], columns: list[str]) -> set[str]:
    """The figures of ``rows`` as the tables print them (two decimals, thousands separated)."""
    found = set()
    for r in rows:
        for c in columns:
            v = r[c]
            if isinstance(v, float):
                found.add(f"{v:,.2f}")
            elif isinstance(v, int) and not isinstance(v, bool):
                found.add(str(v))
    return found


@pytest.mark.parametrize("terminal", [False, True])
def test_tables_never_cut_a_number_at_a_narrow_width(published: Path, monkeypatch: pytest.MonkeyPatch,
                                                     terminal: bool) -> None:
    """A 60-column console: piped, the table is printed whole, however wide; on a terminal, one
    record per block. Either way every figure appears in full and nothing ends in '…'."""
    monkeypatch.setenv("COLUMNS", "60")
    if terminal:
        monkeypatch.setenv("TTY_COMPATIBLE", "1")
    for extra, columns in ((["--stocks"], ["year", "area_ha", "stock_tc", "stock_tc_lower90", "stock_tc_upper90",
                                           "stock_agb_tc", "stock_soc_tc"]),
                           ([], ["period_start", "period_end", "area_ha", "sink_tco2e", "sink_tco2e_lower90",
                                 "sink_tco2e_upper90", "conservative_sink_tco2e", "annual_sink_tco2e"])):
        rows = json.loads(runner.invoke(app, ["results", "--config", str(published), "--format", "json", *extra]).stdout)
        result = runner.invoke(app, ["results", "--config", str(published), *extra])
        assert result.exit_code == 0, result.output
        text = result.stdout
        assert "…" not in text
        cells = {cell.strip() for line in text.splitlines() for cell in line.replace("┃", "│").split("│")}
        cells |= {line.split()[-1] for line in text.splitlines() if line.split()}  # field  value blocks
        missing = _numbers(rows, columns) - cells
        assert not missing, sorted(missing)[:10]
        joined = "".join(text.split())  # a long text cell may be folded over lines, never cut
        assert all(r["site_id"] in joined for r in rows) and all(r["run_id"] in joined for r in rows)
        if terminal:
            assert "one record per block" in text and max(len(line) for line in text.splitlines()) <= 60
        else:
            assert "one record per block" not in text and max(len(line) for line in text.splitlines()) > 200


def test_messages_are_not_wrapped_when_not_a_terminal(published: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    result = runner.invoke(app, ["results", "--config", str(published)])
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: site daye-mine-wc: default SD for")]
    assert notes and notes[0].rstrip().endswith("barren/soc")  # one line, not cut at 60 or 80 columns
    bad = runner.invoke(app, ["results", "--config", str(published), "--site", "nope"])
    assert len(bad.stderr.strip().splitlines()) == 1 and len(bad.stderr.strip()) > 80


def test_serve_builds_the_three_deployments(published: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` hands prefect.serve the scheduled metering-run and the on-demand site-run and
    registry-export deployments (prefect.serve is replaced here: it would block)."""
    import prefect
    import yaml

    served: list = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments, **_: served.extend(deployments))
    result = runner.invoke(app, ["serve", "--config", str(published), "--cron", "0 3 * * 1"])
    assert result.exit_code == 0, result.output
    by_flow = {d.flow_name: d for d in served}
    assert sorted(by_flow) == ["metering-run", "registry-export", "site-run"]
    assert [d.name for d in served] == ["monthly-metering", "site-rerun", "registry-export"]
    assert all(d.parameters == {"config": str(published)} for d in served)
    assert [s.schedule.cron for s in by_flow["metering-run"].schedules] == ["0 3 * * 1"]
    assert not by_flow["site-run"].schedules and not by_flow["registry-export"].schedules
    entrypoints = {d.entrypoint for d in served}
    assert entrypoints == {"flows/metering.py:metering_run", "flows/metering.py:site_run",
                           "flows/export.py:registry_export"}
    # prefect.yaml deploys the same three flows under the same names
    from tests.conftest import REPO

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert {(d["name"], d["entrypoint"]) for d in spec["deployments"]} == {(d.name, d.entrypoint) for d in served}
