"""A coefficient without an SD (docs/methods.md §10): never taken as exact in silence. It gets
the configured default (IPCC's nominal ±90% at 95% unless the configuration says otherwise),
is marked as defaulted, or, with no default policy, is marked unknown and refused by exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carbon.errors import InputError
from carbon.io.config import load_config
from carbon.rules.uncertainty import SdDefaults, fill_missing_sd, unknown_coefficients
from carbon.rules.vocabulary import POOLS, Z95
from tests.conftest import write_config


def _densities() -> pd.DataFrame:
    df = pd.DataFrame(index=pd.Index(["forest", "water"], name="carbon_class"))
    for p in POOLS:
        df[p] = [100.0, 0.0]
        df[f"sd_{p}"] = [np.nan, np.nan]
    df.loc["forest", "sd_agb"] = 12.0  # given by the table: kept
    return df


def test_a_missing_sd_gets_the_default_and_is_named() -> None:
    out, fill = fill_missing_sd(_densities(), SdDefaults.ipcc_nominal())
    # ±90% of 100 t C/ha at 95%: SD = 90 / 1.959964 = 45.919 t C/ha
    assert out.loc["forest", "sd_soc"] == pytest.approx(90 / Z95) == pytest.approx(45.9192, abs=1e-4)
    assert out.loc["forest", "sd_agb"] == 12.0
    assert np.isnan(out.loc["water", "sd_soc"])  # a zero stock has nothing to be uncertain about
    assert fill.defaulted == [("forest", p) for p in POOLS if p != "agb"]
    assert fill.unknown == []
    assert "default SD for forest/bgb, forest/deadwood" in fill.label()


def test_without_a_policy_the_coefficient_is_marked_unknown_and_read_back() -> None:
    out, fill = fill_missing_sd(_densities(), None)
    assert np.isnan(out.loc["forest", "sd_soc"])
    assert fill.unknown == [("forest", p) for p in POOLS if p != "agb"]
    label = f"IPCC Approach 2: Monte Carlo, 100 lognormal draws; {fill.label()}"
    assert unknown_coefficients(label) == [f"forest/{p}" for p in POOLS if p != "agb"]
    assert unknown_coefficients("IPCC Approach 2: Monte Carlo, 100 lognormal draws") == []


def test_a_policy_by_pool_defaults_only_its_pools() -> None:
    out, fill = fill_missing_sd(_densities(), SdDefaults({"soc": 50.0}))
    assert out.loc["forest", "sd_soc"] == pytest.approx(50 / Z95)
    assert [p for _, p in fill.defaulted] == ["soc"]
    assert {p for _, p in fill.unknown} == {"bgb", "deadwood", "litter"}


def _config(folder: Path, line: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = write_config(folder / "c.toml")
    path.write_text(path.read_text() + line + "\n")
    return path


def test_the_configuration_sets_the_policy(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path / "a.toml")).sd_defaults == SdDefaults.ipcc_nominal()
    assert load_config(_config(tmp_path / "b", "uncertainty_default_pct = false")).sd_defaults is None
    by_pool = load_config(_config(tmp_path / "c", "uncertainty_default_pct = { soc = 60, agb = 30 }")).sd_defaults
    assert by_pool is not None and by_pool.u95_pct == {"soc": 60.0, "agb": 30.0}
    assert "soc 60%" in by_pool.source


@pytest.mark.parametrize("line, words", [
    ("uncertainty_default_pct = 0", "above 0"),
    ("uncertainty_default_pct = true", "above 0"),
    ("uncertainty_default_pct = { soil = 50 }", "unknown pool(s) soil"),
    ('uncertainty_default_pct = "ninety"', "must be"),
])
def test_a_bad_policy_is_refused_naming_the_key(tmp_path: Path, line: str, words: str) -> None:
    with pytest.raises(InputError, match="configuration is invalid") as err:
        load_config(_config(tmp_path / "x", line))
    assert words in str(err.value) and "uncertainty_default_pct" in str(err.value)


@pytest.mark.parametrize("value", ["inf", "1e300", "nan"])
def test_an_impossible_coefficient_is_refused_naming_the_row(tmp_path: Path, value: str) -> None:
    """inf, 1e300 (and an empty-looking nan) passed the old ``>= 0`` check, and every site then
    failed on an internal contract; now the table is refused, naming its row and column."""
    from carbon.io.tables import load_coefficients

    path = tmp_path / "coef.csv"
    path.write_text("carbon_class,ecozone,pool,stock_tc_per_ha,sd_tc_per_ha,source\n"
                    "forest,*,agb,100,,a\n"
                    f"forest,*,soc,{value},,b\n")
    with pytest.raises(InputError, match="coefficient table is invalid") as err:
        load_coefficients(path)
    assert "row 3" in str(err.value) and "stock_tc_per_ha" in str(err.value)


def test_defaulted_coefficients_of_a_pool_are_drawn_together(tmp_path: Path) -> None:
    """Cropland and forest with the same soil carbon (60 t C/ha) and no SD: land moving from one
    to the other changes no stock, so its change has no uncertainty. Drawn independently, the
    two defaulted SDs (±90%) would give the change an interval of about ±1.2 x 60 t C/ha."""
    import shapely
    from pyproj import CRS

    from carbon.io.tables import load_catalog, load_coefficients
    from carbon.pipeline.site import compute_site
    from carbon.rules.site import Site
    from tests.rasters import CLCD_ALBERS, X0, Y0, uniform_history

    (tmp_path / "coef.csv").write_text(
        "carbon_class,ecozone,pool,stock_tc_per_ha,sd_tc_per_ha,source\n"
        + "".join(f"{c},*,{p},{60 if p == 'soc' else 0},,hand\n" for c in ("cropland", "forest") for p in POOLS))
    catalog = load_catalog(uniform_history(tmp_path, {2018: 1, 2024: 2}))
    site = Site("s", "S", "other", "*", shapely.box(X0, Y0 - 60, X0 + 60, Y0), CRS.from_proj4(CLCD_ALBERS))
    r = compute_site(site, catalog, load_coefficients(tmp_path / "coef.csv"), method="stock_difference", draws=2000)
    s = r.sinks.iloc[0]
    assert s["sink_tco2e"] == pytest.approx(0, abs=1e-9)
    assert s["sink_tco2e_lower95"] == pytest.approx(0, abs=1e-9) and s["sink_tco2e_upper95"] == pytest.approx(0, abs=1e-9)
    st = r.stocks.set_index("year")  # each year's stock keeps its ±90%
    assert st.loc[2018, "stock_tc_u95_pct"] == pytest.approx(90, rel=0.1)
