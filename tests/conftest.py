"""Shared fixtures. Real third-party rasters are read from ../shared/datasets (never copied).

When CI=true a missing datasets folder is an error, not a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Quiet, offline Prefect for tests (set before Prefect is imported anywhere).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CARBON_SINK_DATASETS", REPO.parent / "shared" / "datasets")).resolve()

POOLS = ("agb", "bgb", "deadwood", "litter", "soc")


def datasets() -> Path:
    if not SHARED.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError(f"CI=true but the real test datasets are missing: {SHARED}")
        pytest.skip(f"real datasets not found at {SHARED}")
    return SHARED


@pytest.fixture
def shared() -> Path:
    return datasets()


def write_catalog(path: Path, rows: list[tuple[int, str | Path, str]]) -> Path:
    lines = ["year,path,legend"] + [f"{y},{p},{legend}" for y, p, legend in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_coefficients(path: Path, density: dict[str, dict[str, float]], ecozone: str = "*") -> Path:
    """A long coefficient table from {class: {pool: t C/ha}}; missing pools are 0."""
    lines = ["carbon_class,ecozone,pool,stock_tc_per_ha,sd_tc_per_ha,source"]
    for cls, pools in density.items():
        for p in POOLS:
            lines.append(f"{cls},{ecozone},{p},{pools.get(p, 0.0)},,test value")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_legend(path: Path, mapping: dict[int, str]) -> Path:
    lines = ["code,label,carbon_class"] + [f"{c},code {c},{cls}" for c, cls in mapping.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ALL_CLASSES = ("forest", "shrubland", "grassland", "cropland", "wetland", "water", "settlement", "barren",
               "mining_land", "snow_ice")


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the whole session (started once: the suite stays quick)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


DEMO = REPO / "data" / "demo"


def write_config(path: Path, *, sites: Path | None = None, output_dir: Path | None = None, ledger: str | None = None,
                 coefficients: Path | None = None, landcover: Path | None = None) -> Path:
    lines = [
        f'sites = "{sites or DEMO / "sites.geojson"}"',
        f'landcover = "{landcover or DEMO / "landcover" / "catalog.csv"}"',
        f'coefficients = "{coefficients or REPO / "data" / "coefficients" / "ipcc2019_tier1.csv"}"',
        f'output_dir = "{output_dir or path.parent / "out"}"',
    ]
    if ledger:
        lines.append(f'ledger = "{ledger}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pg_url() -> str:
    url = os.environ.get("CARBON_SINK_TEST_PG_URL")
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError("CI=true but CARBON_SINK_TEST_PG_URL is not set (.ci/run starts PostgreSQL)")
        pytest.skip("no PostgreSQL server: set CARBON_SINK_TEST_PG_URL")
    return url
