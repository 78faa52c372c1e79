"""The per-site report as a person sees it: rendered in headless Chromium, no console errors,
every figure present, and the numbers on the page equal to the ledger's."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from carbon.io.config import load_config
from carbon.io.ledger import Ledger
from carbon.report.page import site_report
from tests.conftest import DEMO, chromium, publish, write_config


def render(page: Path) -> tuple[str, str]:
    """The DOM after load and Chromium's log (console messages included)."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        proc = subprocess.run(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
             "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "rror" in line)]


class Cells(HTMLParser):
    """data-value cells by (row key, column)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str, str], float] = {}
        self.row: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr":
            self.row = a.get("data-period") or a.get("data-year")
            if a.get("data-class") and self.row:
                self.row = f"{self.row}/{a['data-class']}"
        if tag == "td" and a.get("data-col") and self.row:
            self.values[(self.row, a["data-col"])] = float(a["data-value"] or "nan")


@pytest.fixture(scope="module")
def demo_cfg(tmp_path_factory) -> Path:
    """The demo published by a run that kept its density maps (as a metering run with reports does)."""
    cfg = write_config(tmp_path_factory.mktemp("report") / "c.toml")
    publish(cfg, maps=True)
    return cfg


def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the engine fail wherever a loaded carbon module holds it: a report must not run it."""
    import sys

    def engine(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the report ran the engine")

    for name, module in list(sys.modules.items()):
        if name == "carbon" or name.startswith("carbon."):
            for attr in ("compute_site", "compute_config", "scan_site", "scan_rows"):
                if callable(getattr(module, attr, None)):
                    monkeypatch.setattr(module, attr, engine)


@pytest.mark.parametrize("site_id", ["wuhan-quarry-reclaim", "daye-mine-wc"])  # Albers and a geographic grid
def test_report_renders_with_figures_and_the_ledger_numbers(demo_cfg: Path, site_id: str) -> None:
    cfg = load_config(demo_cfg)
    page = site_report(cfg, site_id)
    dom, log = render(page)
    assert console_errors(log) == []
    assert re.search(r'data-figures="3 loaded, 0 broken"', dom), re.findall(r'data-figures="[^"]*"', dom)
    cells = Cells()
    cells.feed(dom)
    ledger = Ledger(cfg.ledger_url)
    sinks = ledger.current("sinks", site_id)
    for r in sinks.itertuples():
        assert cells.values[(f"{r.period_start}-{r.period_end}", "sink_tco2e")] == r.sink_tco2e
    stocks = ledger.current("stocks", site_id)
    for r in stocks.itertuples():
        assert cells.values[(str(r.year), "stock_tc")] == r.stock_tc
    areas = ledger.current("class_areas", site_id)
    assert not areas.empty
    for r in areas.itertuples():
        assert cells.values[(f"{r.year}/{r.carbon_class}", "area_ha")] == r.area_ha
        assert cells.values[(f"{r.year}/{r.carbon_class}", "area_adjusted_ha")] == r.area_adjusted_ha
    # the CLCD maps of the demo have an accuracy sample, the WorldCover ones none
    basis = re.search(r'id="areas-basis">(.*?)</p>', dom, re.S)
    assert basis is not None
    if site_id == "daye-mine-wc":
        assert "<b>unadjusted</b>" in basis.group(1) and not areas["adjusted"].any()
    else:
        assert "adjusted for map error" in basis.group(1) and "clcd_accuracy.csv" in basis.group(1)
        assert areas["adjusted"].all()
    assert "removals are positive" in dom and "t CO2e" in dom
    assert stocks["run_id"].iloc[0] in dom  # provenance names the ledger run
    for png in ("land_cover.png", "stock_density.png", "stock_by_pool.png"):
        assert (page.parent / png).stat().st_size > 10_000


def test_report_says_what_failed(tmp_path: Path) -> None:
    """A year whose raster is corrupt: the run fails, the page says so and still shows the rest."""
    landcover = tmp_path / "landcover"
    shutil.copytree(DEMO / "landcover", landcover)
    cfg_path = write_config(tmp_path / "c.toml", landcover=landcover / "catalog.csv")
    publish(cfg_path, ["daye-mine-wc"], maps=True)  # a good run first (the page draws its maps)
    raster = landcover / "worldcover_2022.tif"
    raster.write_bytes(raster.read_bytes()[:300])  # truncated
    publish(cfg_path, ["daye-mine-wc"], maps=True)  # this run fails
    page = site_report(load_config(cfg_path), "daye-mine-wc")
    dom, log = render(page)
    assert console_errors(log) == []
    assert "The latest run" in dom and "failed" in dom
    assert "Map year 2022 cannot be read" in dom and "worldcover_2022.tif" in dom
    assert re.search(r'data-figures="3 loaded, 0 broken"', dom)


def test_reports_drawn_in_the_process_pool_match_the_ones_drawn_here(demo_cfg: Path, tmp_path: Path) -> None:
    """Two worker processes (spawned), the same pages and figures as one drawn in this
    process; a site that cannot be reported is noted beside the others."""
    from carbon.report.pool import site_reports

    cfg = load_config(demo_cfg)
    sites = ["wuhan-quarry-reclaim", "daye-mine-wc", "liangzi-lakeside-wetland"]
    pages = site_reports(cfg, [*sites, "no-such-site"], workers=2)
    assert list(pages) == [*sites, "no-such-site"]
    assert pages["no-such-site"].startswith("report failed: InputError") and "no run of this site" in pages[
        "no-such-site"]
    for site_id in sites:
        page = Path(pages[site_id])
        assert page == cfg.output_dir.resolve() / "reports" / site_id / "index.html"
        here = site_report(cfg, site_id, out_dir=tmp_path / site_id)
        assert page.read_text() == here.read_text()  # numbers, problems, provenance and the embedded figures
        for png in ("land_cover.png", "stock_density.png", "stock_by_pool.png"):
            assert (page.parent / png).read_bytes() == (here.parent / png).read_bytes()
    dom, log = render(Path(pages["daye-mine-wc"]))
    assert console_errors(log) == []
    assert re.search(r'data-figures="3 loaded, 0 broken"', dom)


def test_report_draws_the_density_maps_a_run_wrote_without_running_the_engine(demo_cfg: Path, tmp_path: Path,
                                                                              monkeypatch) -> None:
    from carbon.io.sites import load_sites
    from carbon.io.tables import load_catalog, load_coefficients
    from carbon.pipeline.site import compute_site
    from carbon.rules.site import select_sites

    cfg = load_config(demo_cfg)
    site_id = "wuhan-quarry-reclaim"
    maps = tmp_path / "maps"
    site = select_sites(load_sites(cfg.sites), [site_id])[0]
    compute_site(site, load_catalog(cfg.landcover), load_coefficients(cfg.coefficients), maps_dir=maps)

    no_engine(monkeypatch)
    kept = site_report(cfg, site_id, out_dir=tmp_path / "kept")  # the maps kept with the run behind the estimate
    assert "were not written" not in kept.read_text()
    reused = site_report(cfg, site_id, out_dir=tmp_path / "reused", maps_dir=maps)
    assert reused.read_text() == kept.read_text()
    assert (reused.parent / "stock_density.png").read_bytes() == (kept.parent / "stock_density.png").read_bytes()

    # an incomplete set of maps (the first year's is missing) is not used, and the engine does
    # not run instead: the page says which map is missing and shows the rest
    (maps / f"{site_id}_stock_density_2018.tif").unlink()
    again = site_report(cfg, site_id, out_dir=tmp_path / "again", maps_dir=maps)
    text = again.read_text()
    assert "The stock density maps of this estimate were not written" in text
    assert f"missing: {site_id}_stock_density_2018.tif" in text
    assert not (again.parent / "stock_density.png").exists()
    assert "Stock density, first and last year" not in text
    for png in ("land_cover.png", "stock_by_pool.png"):
        assert (again.parent / png).read_bytes() == (kept.parent / png).read_bytes()
    dom, log = render(again)
    assert console_errors(log) == []
    assert re.search(r'data-figures="2 loaded, 0 broken"', dom), re.findall(r'data-figures="[^"]*"', dom)


def test_a_site_whose_run_wrote_no_maps_gets_a_page_that_says_so(tmp_path: Path, monkeypatch) -> None:
    """The run behind the estimate wrote no density maps: the page says so in its problems
    (the report does not compute them) and still shows the land cover, the numbers and the chart."""
    cfg_path = write_config(tmp_path / "c.toml")
    run_id = publish(cfg_path, ["daye-mine-wc"])  # no maps
    cfg = load_config(cfg_path)
    assert not (cfg.output_dir / "runs" / run_id / "maps" / "daye-mine-wc").exists()
    no_engine(monkeypatch)
    page = site_report(cfg, "daye-mine-wc")
    dom, log = render(page)
    assert console_errors(log) == []
    problems = re.findall(r'<p class="problem">(.*?)</p>', dom, flags=re.S)
    assert any("The stock density maps of this estimate were not written" in p for p in problems), problems
    assert not (page.parent / "stock_density.png").exists()
    assert re.search(r'data-figures="2 loaded, 0 broken"', dom), re.findall(r'data-figures="[^"]*"', dom)
    sinks = Ledger(cfg.ledger_url).current("sinks", "daye-mine-wc")
    cells = Cells()
    cells.feed(dom)
    for r in sinks.itertuples():
        assert cells.values[(f"{r.period_start}-{r.period_end}", "sink_tco2e")] == r.sink_tco2e


def screenshot(page: Path, path: Path) -> Path:
    """A screenshot of the page as a person sees it (1280 x 2400), after its figures and fonts load."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        proc = subprocess.run(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--hide-scrollbars", "--virtual-time-budget=10000",
             "--window-size=1280,2400", f"--screenshot={path}", page.as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return path


def test_legend_entries_are_distinct_and_not_doubled() -> None:
    """Every code of a built-in legend has its own colour (the legend's colour column, else the
    fixed palette), and a label that carries its own code is not prefixed with it again."""
    from carbon.io.tables import load_crosswalk
    from carbon.report.i18n import Messages
    from carbon.report.page import code_colors, legend_label

    for name in ("clcd", "worldcover", "glc_fcs30", "corine", "gbt21010"):
        cw = load_crosswalk(name)
        colors = code_colors(cw)
        assert len(set(colors)) == len(cw.codes), name
        assert len(cw.labels_zh) == len(cw.codes) and all(cw.labels_zh), name
        for code, label in zip(cw.codes, Messages("zh").legend_labels(cw), strict=True):
            entry = legend_label(int(code), label)
            assert not entry.startswith(f"{code} 0"), entry
    gbt = load_crosswalk("gbt21010")
    zh = dict(zip(gbt.codes.tolist(), Messages("zh").legend_labels(gbt), strict=True))
    assert legend_label(701, zh[701]) == "0701 城镇住宅用地"
    assert legend_label(602, zh[602]) == "0602 采矿用地"
    clcd = load_crosswalk("clcd")
    assert code_colors(clcd)[1] == "#446f33"  # the legend's own colour
    assert legend_label(2, Messages("zh").legend_labels(clcd)[1]) == "2 林地"
    assert legend_label(2, Messages("en").legend_labels(clcd)[1]) == "2 Forest"


def test_report_language_comes_from_the_configuration(tmp_path: Path) -> None:
    from carbon.errors import InputError

    cfg_path = write_config(tmp_path / "c.toml")
    assert load_config(cfg_path).report_language == "en"
    cfg_path.write_text(cfg_path.read_text() + 'report_language = "zh"\n')
    assert load_config(cfg_path).report_language == "zh"
    cfg_path.write_text(cfg_path.read_text().replace('"zh"', '"fr"'))
    with pytest.raises(InputError) as err:
        load_config(cfg_path)
    assert "report_language must be 'en' or 'zh', not 'fr'" in str(err.value.problems)


def test_an_invest_pools_table_gives_every_class_its_name_and_colour(shared: Path) -> None:
    """With InVEST's Willamette pools table the classes are its lucodes: each gets its own colour
    (not one grey) and its ``lulc_name`` in the legend and the tables."""
    import pandas as pd

    from carbon.io.tables import load_coefficients
    from carbon.report.i18n import Messages
    from carbon.report.page import code_colors, legend_label
    from carbon.rules.coefficients import invest_crosswalk

    pools = shared / "invest_willamette" / "carbon_pools_willamette.csv"
    cw = invest_crosswalk(load_coefficients(pools))
    names = pd.read_csv(pools)
    name_col = next(c for c in names.columns if c.lower() == "lulc_name")
    assert len(cw.codes) == len(names) > 10
    colors = code_colors(cw)
    assert len(set(colors)) == len(cw.codes)  # one colour per class
    for lang in ("en", "zh"):
        labels = Messages(lang).legend_labels(cw)
        by_code = {int(c): legend_label(int(c), lbl) for c, lbl in zip(cw.codes, labels, strict=True)}
        for row in names.itertuples(index=False):
            code = int(getattr(row, next(c for c in names.columns if c.lower() == "lucode")))
            assert str(getattr(row, name_col)).strip() in by_code[code], (lang, code, by_code[code])
