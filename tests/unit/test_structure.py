"""What the layering promises and a test can check beyond lint-imports: importing the package
changes no setting, the table contracts follow the vocabulary, results name the exact code."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

import carbon
import schemas
from carbon.io import ledger
from carbon.io.outputs import code_version
from carbon.rules import vocabulary
from schemas._validate import failure_messages
from schemas.outputs import SinksTable, StocksTable


def test_importing_every_module_changes_no_environment_variable_and_no_plotting_backend() -> None:
    # third-party packages set a few variables of their own when imported (CA bundles, pyarrow):
    # import them first, then see what importing this project's modules adds
    script = """
import json, os, sys
import dask, exactextract, geopandas, numba, pandas, pandera.pandas, pyproj, rasterio, rioxarray, shapely, sqlalchemy
import xarray, matplotlib
before = dict(os.environ)
import carbon.rules.area, carbon.rules.dynamics, carbon.io.rasters, carbon.io.ledger, carbon.pipeline.loop
import carbon.report.page, carbon.report.pool, carbon.api, schemas.outputs
after = dict(os.environ)
print(json.dumps({"changed": sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)),
                  "pyplot": "matplotlib.pyplot" in sys.modules, "prefect": "prefect" in sys.modules}))
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"changed": [], "pyplot": False, "prefect": False}


def test_code_version_is_a_digest_of_every_module_of_carbon_and_schemas() -> None:
    h = hashlib.sha256()
    for package in (carbon, schemas):
        root = Path(package.__file__).parent
        files = sorted(p for p in root.rglob("*.py"))
        assert len(files) > (10 if package is carbon else 3)
        for f in files:
            h.update(f"{package.__name__}/{f.relative_to(root).as_posix()}".encode())
            h.update(f.read_bytes())
    assert code_version().endswith("+" + h.hexdigest()[:12])
    assert not code_version().endswith("+" + hashlib.sha256(b"").hexdigest()[:12])


def _sinks_row() -> dict[str, object]:
    row: dict[str, object] = {"site_id": "s", "period_start": 2018, "period_end": 2020, "period_years": 2,
                              "is_full_period": True, "area_ha": 1.0, "nodata_ha": 0.0, "stock_start_tc": 10.0,
                              "stock_end_tc": 12.0, "stock_change_tc": 2.0, "method": "stock_difference",
                              "coefficient_set": "c", "coefficient_sha256": "0" * 64,
                              "conservative_rule": "lower90", "uncertainty_method": "test"}
    for p in vocabulary.POOLS:
        row[f"stock_change_{p}_tc"] = 2.0 if p == "soc" else 0.0
    for c in vocabulary.gain_loss_columns():
        row[c] = 0.0
    row["sink_tco2e"] = 2.0 * vocabulary.CO2_PER_C
    row["annual_sink_tco2e"] = row["sink_tco2e"] / 2  # type: ignore[operator]
    for f in vocabulary.UNCERTAINTY_FIELDS:
        row[f"sink_tco2e_{f}"] = 0.0 if "_pct" in f else row["sink_tco2e"]
    row["conservative_sink_tco2e"] = row["sink_tco2e"]
    return row


def test_the_sinks_contract_has_a_column_for_every_pool_and_uncertainty_field() -> None:
    good = pd.DataFrame([_sinks_row()])
    _, problems = failure_messages(SinksTable, good, where="t")
    assert problems == []
    for missing in ("stock_change_litter_tc", "gain_deadwood_tc", "sink_tco2e_u95_pct_approach1"):
        _, problems = failure_messages(SinksTable, good.drop(columns=[missing]), where="t")
        assert problems, missing
    bad = good.copy()
    bad["loss_agb_tc"] = 1.0  # a loss is never positive
    bad["gain_agb_tc"] = -1.0
    _, problems = failure_messages(SinksTable, bad, where="t")
    assert any("loss_agb_tc" in p for p in problems) and any("gain_agb_tc" in p for p in problems)


def test_a_stocks_table_with_a_negative_pool_stock_breaks_its_contract() -> None:
    row = {"site_id": "s", "year": 2020, "area_ha": 1.0, "nodata_ha": 0.0, "stock_tc": 5.0, "stock_tc_per_ha": 5.0,
           "method": "gain_loss", "coefficient_set": "c", "coefficient_sha256": "0" * 64, "uncertainty_method": "t",
           **{c: 1.0 for c in vocabulary.pool_stock_columns()},
           **{f"stock_tc_{f}": (0.0 if "_pct" in f else 5.0) for f in vocabulary.UNCERTAINTY_FIELDS}}
    df = pd.DataFrame([row])
    assert failure_messages(StocksTable, df, where="t")[1] == []
    df.loc[0, "stock_soc_tc"] = -1.0
    df.loc[0, "stock_tc"] = 3.0
    df.loc[0, "stock_tc_per_ha"] = 3.0
    assert any("stock_soc_tc" in p for p in failure_messages(StocksTable, df, where="t")[1])


def test_the_ledger_stores_every_column_the_vocabulary_names() -> None:
    stored = set(ledger.sinks.c.keys())
    assert set(vocabulary.SINK_COLUMNS) <= stored
    assert set(vocabulary.uncertainty_columns("sink_tco2e")) <= stored
    assert set(vocabulary.STOCK_COLUMNS) <= set(ledger.stocks.c.keys())
