"""Uncertainty: zero for unchanged land, analytic intervals for linear cases, reproducible,
AR-TOOL14 deductions by hand, stored in the ledger."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from statistics import NormalDist

import pytest
import shapely
from pyproj import CRS

from carbon.io.ledger import Ledger
from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.site import compute_site
from carbon.rules.site import Site
from carbon.rules.uncertainty import ar_tool14_discount, conservative_sink
from tests.rasters import CLCD_ALBERS, X0, Y0, uniform_history

# forest agb 100 +- 30 t C/ha (CV 0.3); cropland agb 5 +- 2 (CV 0.4); everything else certain
COEF = """carbon_class,ecozone,pool,stock_tc_per_ha,sd_tc_per_ha,growth_tc_per_ha_yr,source
forest,*,agb,100,30,,hand
forest,*,bgb,0,,,hand
forest,*,deadwood,0,,,hand
forest,*,litter,0,,,hand
forest,*,soc,60,,,hand
cropland,*,agb,5,2,,hand
cropland,*,bgb,0,,,hand
cropland,*,deadwood,0,,,hand
cropland,*,litter,0,,,hand
cropland,*,soc,60,,,hand
"""
HA = 4 * 0.09
SITE = shapely.box(X0, Y0 - 60, X0 + 60, Y0)


def run(tmp_path: Path, history: dict[int, int], site_id: str = "s", **kw):
    catalog = load_catalog(uniform_history(tmp_path, history))
    (tmp_path / "coef.csv").write_text(COEF)
    site = Site(site_id, "S", "forest", "*", SITE, CRS.from_proj4(CLCD_ALBERS))
    kw.setdefault("method", "stock_difference")
    # coefficients without an SD are exact here: these tests check the Monte Carlo arithmetic of
    # the SDs given (the default SD policy has its own tests, tests/unit/test_sd_defaults.py)
    kw.setdefault("sd_defaults", None)
    return compute_site(site, catalog, load_coefficients(tmp_path / "coef.csv"), **kw)


def test_unchanged_land_has_zero_change_uncertainty(tmp_path: Path) -> None:
    r = run(tmp_path, {2018: 2, 2020: 2, 2024: 2})
    for col in ("sink_tco2e_lower95", "sink_tco2e_lower90", "sink_tco2e_median", "sink_tco2e_upper90",
                "sink_tco2e_upper95"):
        assert (r.sinks[col].abs() < 1e-9).all(), col
    assert (r.sinks["sink_tco2e_u90_pct"] == 0).all()
    assert (r.sinks["conservative_sink_tco2e"].abs() < 1e-9).all()
    # while the stock itself is uncertain
    assert (r.stocks["stock_tc_upper95"] - r.stocks["stock_tc_lower95"] > 1).all()


def test_single_coefficient_matches_the_analytic_lognormal_interval(tmp_path: Path) -> None:
    r = run(tmp_path, {2020: 2, 2021: 2})
    s = r.stocks.set_index("year").loc[2020]
    # stock = HA x (100 f + 60), f lognormal with mean 1 and CV 0.3
    sigma = math.sqrt(math.log(1 + 0.3**2))
    mu = -sigma**2 / 2

    def q(p: float) -> float:
        return HA * (100 * math.exp(mu + sigma * NormalDist().inv_cdf(p)) + 60)

    def standard_error(p: float, n: int = 10_000) -> float:
        # of a sample quantile: sqrt(p (1 - p) / n) / density at the quantile (stock scale)
        z = NormalDist().inv_cdf(p)
        f = math.exp(mu + sigma * z)
        density_f = math.exp(-z * z / 2) / math.sqrt(2 * math.pi) / (sigma * f)
        return HA * 100 * math.sqrt(p * (1 - p) / n) / density_f

    for name, p in (("lower95", 0.025), ("lower90", 0.05), ("median", 0.5), ("upper90", 0.95), ("upper95", 0.975)):
        # within 4 standard errors of the Monte Carlo estimate (N = 10,000): 0.5-0.6 % here
        assert abs(s[f"stock_tc_{name}"] - q(p)) < 4 * standard_error(p), name
    assert s["stock_tc_mean"] == pytest.approx(HA * 160, rel=0.005)
    # Approach 1: U95 = 1.96 x sd / mean = 1.96 x 30 / 160
    assert s["stock_tc_u95_pct_approach1"] == pytest.approx(1.959964 * 30 / 160 * 100, rel=1e-6)


def test_linear_change_matches_its_analytic_spread(tmp_path: Path) -> None:
    r = run(tmp_path, {2020: 1, 2021: 2})
    sink = r.sinks.iloc[0]
    # change = HA (100 f_forest - 5 f_crop) (soil unchanged): sd = HA sqrt(30^2 + 2^2), x 44/12
    sd = HA * math.hypot(30, 2) * 44 / 12
    mean = HA * 95 * 44 / 12
    assert sink["sink_tco2e"] == pytest.approx(mean)
    assert sink["sink_tco2e_mean"] == pytest.approx(mean, rel=0.01)
    assert (sink["sink_tco2e_upper95"] - sink["sink_tco2e_lower95"]) / (2 * 1.96 * sd) == pytest.approx(1.0, abs=0.08)
    assert sink["sink_tco2e_u95_pct_approach1"] == pytest.approx(1.959964 * sd / mean * 100, rel=1e-6)


def test_same_inputs_give_the_same_intervals(tmp_path: Path) -> None:
    for sub in "abc":
        (tmp_path / sub).mkdir()
    a = run(tmp_path / "a", {2020: 1, 2021: 2})
    b = run(tmp_path / "b", {2020: 1, 2021: 2})
    cols = [c for c in a.sinks.columns if c.startswith("sink_tco2e_")]
    assert a.sinks[cols].equals(b.sinks[cols])
    assert a.provenance["monte_carlo"]["seed"] == b.provenance["monte_carlo"]["seed"]
    # the seed derives from the inputs, not the name: another site id, the same draws
    renamed = run(tmp_path / "c", {2020: 1, 2021: 2}, site_id="t")
    assert renamed.provenance["monte_carlo"]["seed"] == a.provenance["monte_carlo"]["seed"]
    assert renamed.sinks[cols].equals(a.sinks[cols])
    # other inputs, other draws
    (tmp_path / "d").mkdir()
    other = run(tmp_path / "d", {2020: 1, 2022: 2})
    assert other.provenance["monte_carlo"]["seed"] != a.provenance["monte_carlo"]["seed"]


@pytest.mark.parametrize(("u", "share"), [(0, 0), (10, 0), (10.01, 0.25), (15, 0.25), (15.5, 0.5), (20, 0.5),
                                          (25, 0.75), (30, 0.75), (30.1, 1.0), (250, 1.0), (float("nan"), 1.0)])
def test_ar_tool14_discount_table(u: float, share: float) -> None:
    assert ar_tool14_discount(u) == share


def test_conservative_sink_by_hand() -> None:
    # 100 +- 20 (90%): U = 20% -> half of the half-width: 100 - 10 = 90
    assert conservative_sink(100, 80, 120, 20.0, "ar_tool14") == pytest.approx(90)
    assert conservative_sink(100, 95, 105, 5.0, "ar_tool14") == 100
    assert conservative_sink(100, 80, 120, 20.0, "lower90") == 80
    with pytest.raises(ValueError, match="unknown conservative rule"):
        conservative_sink(100, 80, 120, 20.0, "whatever")


def test_conservative_rule_is_recorded_and_applied(tmp_path: Path) -> None:
    r = run(tmp_path, {2020: 1, 2021: 2}, conservative_rule="lower90")
    sink = r.sinks.iloc[0]
    assert sink["conservative_rule"] == "lower90"
    assert sink["conservative_sink_tco2e"] == sink["sink_tco2e_lower90"]
    r2 = run(tmp_path, {2020: 1, 2021: 2})
    s2 = r2.sinks.iloc[0]
    hw = (s2["sink_tco2e_upper90"] - s2["sink_tco2e_lower90"]) / 2
    assert s2["sink_tco2e_u90_pct"] > 30  # CV 0.3 on the forest: a full deduction of the half-width
    assert s2["conservative_sink_tco2e"] == pytest.approx(s2["sink_tco2e"] - hw)


def test_the_ledger_stores_the_intervals(tmp_path: Path) -> None:
    r = run(tmp_path, {2020: 1, 2021: 2})
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    run_id = str(uuid.uuid4())
    ledger.start_run(run_id, config_path="c", code_version="t", flow_run_id=None)
    ledger.publish_site(run_id=run_id, flow_run_id=None, site_id="s", tables=r.tables(), input_key="k", inputs={},
                        coefficient_set="coef", coefficient_sha256="0" * 64, code_version="t")
    sink = ledger.current("sinks", "s").iloc[0]
    for col in ("sink_tco2e_lower90", "sink_tco2e_upper95", "sink_tco2e_u90_pct", "conservative_sink_tco2e"):
        assert sink[col] == pytest.approx(r.sinks.iloc[0][col])
    assert sink["conservative_rule"] == "ar_tool14"
    stock = ledger.current("stocks", "s").set_index("year").loc[2020]
    assert stock["stock_tc_lower95"] == pytest.approx(r.stocks.set_index("year").loc[2020, "stock_tc_lower95"])
