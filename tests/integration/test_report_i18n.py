"""Reports in Chinese and English, as a person sees them in headless Chromium: a GB/T 21010
site of two parts and a demo CLCD site, metered by the real loop (which keeps the run's
coefficient table and provenance), their pages in both languages, the auditor's trace equal to
the run's tables and the ledger, the methods beside the page, and the portfolio page."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from affine import Affine
from pyproj import Transformer

from carbon.io.config import load_config
from carbon.io.ledger import Ledger
from carbon.io.outputs import read_site_tables
from carbon.report.page import site_report
from tests.conftest import DEMO, write_config
from tests.integration.test_report import Cells, console_errors, render, screenshot
from tests.rasters import CLCD_ALBERS, X0, Y0, write_tif

GBT = "gbt-reclaim-two-parts"
CLCD = "wuhan-quarry-reclaim"


def _gbt_inputs(folder: Path) -> tuple[Path, Path]:
    """Two years of a 40 x 40 GB/T 21010 raster (30 m, Albers) and a site of two parts on it:
    mining land (0602) reclaimed to tree forest (0301) and shrub land (0305) beside a pond
    (1104) and housing (0701)."""
    rng = np.random.default_rng(21010)
    before = rng.choice(np.array([602, 602, 602, 1206, 404, 701], dtype=np.uint16), size=(40, 40))
    before[30:, :10] = 1104
    after = np.where(before == 602, rng.choice(np.array([301, 305, 602], dtype=np.uint16), size=(40, 40)), before)
    t = Affine(30, 0, X0, 0, -30, Y0)
    rows = ["year,path,legend"]
    for year, codes in ((2019, before), (2023, after)):
        write_tif(folder / f"gbt_{year}.tif", codes, transform=t)
        rows.append(f"{year},gbt_{year}.tif,gbt21010")
    catalog = folder / "catalog.csv"
    catalog.write_text("\n".join(rows) + "\n", encoding="utf-8")
    to = Transformer.from_crs(CLCD_ALBERS, "EPSG:4326", always_xy=True)

    def ring(c0: int, r0: int, c1: int, r1: int) -> list[list[float]]:
        pts = [(c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)]
        return [list(to.transform(X0 + 30 * c + 5, Y0 - 30 * r - 5)) for c, r in pts]

    sites = json.loads((DEMO / "sites.geojson").read_text(encoding="utf-8"))
    sites["features"] = [f for f in sites["features"] if f["properties"]["site_id"] == CLCD]
    sites["features"].append({
        "type": "Feature",
        "properties": {"site_id": GBT, "name": "废弃采矿用地复绿（两块）", "site_type": "reclaimed_mine",
                       "ecozone": "subtropical_humid_asia", "baseline_year": 2019},
        "geometry": {"type": "MultiPolygon", "coordinates": [[ring(2, 2, 18, 16)], [ring(24, 20, 37, 35)]]},
    })
    path = folder / "sites.geojson"
    path.write_text(json.dumps(sites, ensure_ascii=False), encoding="utf-8")
    return path, catalog


@pytest.fixture(scope="module")
def metered(tmp_path_factory) -> Path:
    """A run of the real loop (tables and provenance kept in the run's folder, density maps for
    the reports) over a CLCD demo site and a GB/T 21010 site; the configuration asks for Chinese."""
    from carbon.pipeline import loop
    from carbon.report.pool import site_reports

    folder = tmp_path_factory.mktemp("i18n")
    sites, catalog = _gbt_inputs(folder)
    demo_catalog = pd.read_csv(DEMO / "landcover" / "catalog.csv")
    demo_catalog["path"] = [str(DEMO / "landcover" / p) for p in demo_catalog["path"]]
    demo_catalog["accuracy"] = [str(DEMO / "landcover" / p) if isinstance(p, str) else "" for p in
                                demo_catalog["accuracy"]]
    ours = pd.read_csv(catalog)
    ours["path"] = [str(folder / p) for p in ours["path"]]
    demo_catalog[demo_catalog["legend"] == "clcd"].to_csv(folder / "clcd.csv", index=False)
    cfg_path = write_config(folder / "c.toml", sites=sites, landcover=folder / "clcd.csv")
    cfg_path.write_text(cfg_path.read_text() + 'report_language = "zh"\n', encoding="utf-8")
    # one catalog for both sites: the GB/T years are 2019 and 2023, the CLCD ones 2018-2024;
    # each site plans the rasters that meet it
    merged = pd.concat([demo_catalog[demo_catalog["legend"] == "clcd"], ours], ignore_index=True)
    merged.to_csv(folder / "clcd.csv", index=False)
    ctx = loop.start_run(str(cfg_path), None)
    outcomes = [loop.attempt(s, lambda s=s: loop.meter_site(ctx, s, loop.SiteParams(), report_maps=True))
                for s in ctx.site_ids]
    assert [o.status for o in outcomes] == ["succeeded", "succeeded"], [o.error for o in outcomes]
    loop.finish_run(ctx, outcomes)
    pages = site_reports(load_config(cfg_path), [CLCD, GBT], workers=1)
    assert all(p.endswith("index.html") for p in pages.values()), pages
    return cfg_path


ZH_HEADINGS = {"h-sinks": "碳汇", "h-stocks": "碳储量", "h-areas": "各碳类面积", "h-figures": "地图与图表",
               "h-transitions": "土地覆盖转移", "h-trace": "审核追溯", "h-method": "本地块采用的方法与规则",
               "h-coefficients": "所用系数", "h-gains": "各碳库的增加与损失", "h-provenance": "数据来源"}
EN_HEADINGS = {"h-sinks": "Sinks", "h-trace": "The auditor's trace", "h-coefficients": "Coefficients used",
               "h-gains": "Gains and losses by pool"}


def headings(dom: str) -> dict[str, str]:
    return dict(re.findall(r'<h[23] id="([^"]+)">([^<]+)</h[23]>', dom))


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("site_id", [GBT, CLCD])
def test_site_page_in_both_languages(metered: Path, tmp_path: Path, site_id: str, lang: str) -> None:
    cfg = load_config(metered)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = site_report(cfg, site_id, out_dir=tmp_path / lang, lang=lang)
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
    dom, log = render(page)
    assert console_errors(log) == []
    assert re.search(r'data-figures="3 loaded, 0 broken"', dom), re.findall(r'data-figures="[^"]*"', dom)
    shot = screenshot(page, tmp_path / f"{site_id}-{lang}.png")
    assert shot.stat().st_size > 50_000

    found = headings(dom)
    if lang == "zh":
        assert '<html lang="zh-Hans">' in dom
        assert {k: found.get(k) for k in ZH_HEADINGS} == ZH_HEADINGS
        assert "清除为正" in dom and "Sinks" not in found.values()
        font = page.parent / "cjk.otf"  # the glyphs of the page, beside it, loaded with @font-face
        assert font.is_file() and 1_000 < font.stat().st_size < 2_000_000
        assert 'src:url("cjk.otf")' in dom
        assert ">采矿用地<" in dom or site_id == CLCD  # carbon classes in Chinese
        assert ">地上生物量<" in dom
    else:
        assert {k: found.get(k) for k in EN_HEADINGS} == EN_HEADINGS
        assert "removals are positive" in dom

    # the numbers are the ledger's and the run's
    cells = Cells()
    cells.feed(dom)
    ledger = Ledger(cfg.ledger_url)
    sinks = ledger.current("sinks", site_id)
    assert len(sinks) >= 1
    for r in sinks.itertuples():
        period = f"{r.period_start}-{r.period_end}"
        assert cells.values[(period, "sink_tco2e")] == r.sink_tco2e
        assert cells.values[(period, "conservative_sink_tco2e")] == r.conservative_sink_tco2e
    for r in sinks.to_dict("records"):
        for col in [c for c in sinks.columns if c.startswith(("gain_", "loss_"))]:
            assert cells.values[(f"{r['period_start']}-{r['period_end']}", col)] == r[col]
    for r in ledger.current("stocks", site_id).itertuples():
        assert cells.values[(str(r.year), "stock_tc")] == r.stock_tc
    run_id = str(sinks["run_id"].iloc[0])
    used = read_site_tables(cfg.output_dir / "runs" / run_id / "sites" / site_id)["coefficients_used"]
    rows = re.findall(r'<tr data-coefficient="([^"]+)">(.*?)</tr>', dom, re.S)
    assert len(rows) == len(used) > 0
    shown = {key: re.findall(r'data-col="stock_tc_per_ha" data-value="([^"]+)"', row) for key, row in rows}
    for r in used.itertuples():
        assert float(shown[f"{r.carbon_class}/{r.pool}"][0]) == r.stock_tc_per_ha
    # the method and rules in words, the methods beside the page, no repository path
    rules = re.search(r'<ul id="rules">(.*?)</ul>', dom, re.S)
    assert rules is not None and ("增加-损失法" if lang == "zh" else "gain-loss") in rules.group(1)
    assert "AR-TOOL14" in rules.group(1)
    assert '<a href="methods.html">' in dom and "docs/methods.md" not in dom
    methods = (page.parent / "methods.html").read_text(encoding="utf-8")
    assert "§10 Uncertainty and the conservative sink" in methods and "data:image/png;base64," in methods


def test_gbt_site_legend_and_parts(metered: Path) -> None:
    """The GB/T site's page drawn after the run: the Chinese legend labels without doubled
    codes, both parts of the site on the map, and the growth curve and SD source in Chinese."""
    cfg = load_config(metered)
    page = cfg.output_dir / "reports" / GBT / "index.html"
    text = page.read_text(encoding="utf-8")
    assert "gbt21010" in text and "采矿用地" in text
    assert "系数表" in text or "默认值" in text  # sd_source in Chinese
    assert "602 0602" not in text
    assert (page.parent / "land_cover.png").stat().st_size > 10_000


def test_portfolio_page(metered: Path, tmp_path: Path) -> None:
    cfg = load_config(metered)
    reports = cfg.output_dir / "reports"
    index = reports / "index.html"
    assert index.read_text(encoding="utf-8") == (reports / "index.zh.html").read_text(encoding="utf-8")
    for lang in ("zh", "en"):
        page = reports / f"index.{lang}.html"
        dom, log = render(page)
        assert console_errors(log) == []
        assert re.search(r'data-figures="1 loaded, 0 broken"', dom), re.findall(r'data-figures="[^"]*"', dom)
        assert screenshot(page, tmp_path / f"portfolio-{lang}.png").stat().st_size > 30_000
        assert ("全部地块" if lang == "zh" else "All sites") in dom
        cells: dict[tuple[str, str], float] = {}
        for site, row in re.findall(r'<tr data-site="([^"]+)">(.*?)</tr>', dom, re.S):
            for col, v in re.findall(r'data-col="([^"]+)" data-value="([^"]+)"', row):
                cells[(site, col)] = float(v)
            assert f'href="{site}/index.html"' in row
            assert (reports / site / "index.html").is_file()
        sinks = Ledger(cfg.ledger_url).current("sinks")
        full = sinks[sinks["is_full_period"]]
        assert sorted(full["site_id"]) == sorted({s for s, _ in cells})
        for r in full.itertuples():
            assert cells[(r.site_id, "sink_tco2e")] == r.sink_tco2e
            assert cells[(r.site_id, "conservative_sink_tco2e")] == r.conservative_sink_tco2e
    assert (reports / "methods.html").is_file()


def test_cli_report_in_chinese(metered: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["report", "--site", CLCD, "--lang", "en", "--config", str(metered),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert '<html lang="en">' in (out / "index.html").read_text(encoding="utf-8")
    result = CliRunner().invoke(app, ["report", "--site", CLCD, "--config", str(metered), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert '<html lang="zh-Hans">' in (out / "index.html").read_text(encoding="utf-8")  # report_language
    bad = CliRunner().invoke(app, ["report", "--site", CLCD, "--lang", "fr", "--config", str(metered)])
    assert bad.exit_code != 0


def test_the_engines_notes_and_warnings_read_in_chinese() -> None:
    """What the engine writes into a result (the SD policy, the defaulted coefficients, map error,
    the map-gap warning) is said in Chinese on a Chinese page, and left as is in English."""
    import pandas as pd

    from carbon.report.i18n import Messages
    from carbon.rules import dating
    from carbon.rules.uncertainty import DEFAULT_SD_SOURCE, MAP_ERROR_MARK, POLICY_MARK

    sinks = pd.DataFrame({"site_id": ["s"], "period_start": [2000], "period_end": [2020], "is_full_period": [True]})
    stocks = pd.DataFrame({"site_id": ["s", "s"], "year": [2000, 2020]})
    [gap] = dating.gap_warnings(sinks, stocks)
    zh, en = Messages("zh"), Messages("en")
    texts = [gap, f"{POLICY_MARK} {DEFAULT_SD_SOURCE}", "default SD for forest/soc, grassland/agb", MAP_ERROR_MARK]
    for text in texts:
        said = zh.engine_text(text)
        assert said != text and not any(w in said for w in ("maps lie", "default SD", "interval of", "map error")), said
        assert en.engine_text(text) == text
    assert "20 年" in zh.engine_text(gap) and "forest/soc" in zh.engine_text(texts[2])


def test_the_overview_map_is_drawn_again_only_when_what_it_shows_changed(metered: Path, tmp_path: Path) -> None:
    """The portfolio's map (one a language) is redrawn when a site's official sink changes, and
    kept when nothing it shows did (an analyst's re-run: the same sinks)."""
    import shutil
    import sqlite3
    from dataclasses import replace

    from carbon.report.portfolio import portfolio_report

    cfg = load_config(metered)
    out = tmp_path / "out"
    shutil.copytree(cfg.output_dir, out)
    ledger = next(p for p in out.iterdir() if p.suffix == ".db")
    copy = replace(cfg, output_dir=out, ledger_url=f"sqlite:///{ledger}")
    maps = {lang: out / "reports" / f"portfolio_{lang}.png" for lang in ("zh", "en")}

    def state() -> dict[str, tuple[int, bytes]]:
        return {lang: (p.stat().st_mtime_ns, p.read_bytes()) for lang, p in maps.items()}

    before = state()
    portfolio_report(copy)
    assert state() == before  # nothing it shows changed: not drawn again
    with sqlite3.connect(ledger) as db:  # one site's official sink changes
        changed = db.execute("UPDATE sinks SET sink_tco2e = sink_tco2e + 5000 WHERE is_full_period AND site_id = "
                             "(SELECT MIN(site_id) FROM sinks)").rowcount
    assert changed >= 1
    portfolio_report(copy)
    after = state()
    for lang in maps:
        assert after[lang][0] != before[lang][0] and after[lang][1] != before[lang][1]
    (out / "reports" / "portfolio_en.key").unlink()  # a map whose drawing did not finish is drawn again
    portfolio_report(copy)
    assert state()["en"][0] != after["en"][0] and state()["zh"] == after["zh"]
