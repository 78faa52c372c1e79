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


def publish(cfg_path: Path, site_ids: list[str] | None = None, *, maps: bool = False) -> str:
    """Compute a configuration's sites and publish them to its ledger, without Prefect
    (for tests of what reads the ledger: exports, reports); returns the run's id.

    ``maps``: keep each site's density maps with the run, in
    ``<output_dir>/runs/<run_id>/maps/<site_id>/``, as a metering run with reports does
    (the report draws its density figure from them)."""
    import uuid
    from dataclasses import replace

    from carbon.io.config import load_config
    from carbon.io.ledger import Ledger
    from carbon.io.outputs import inside
    from carbon.pipeline.loop import compute_config

    cfg = load_config(cfg_path)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(cfg.ledger_url)
    run_id = str(uuid.uuid4())
    ledger.start_run(run_id, config_path=str(cfg_path), code_version="test", flow_run_id=None)
    # compute_config writes the maps to <its output_dir>/maps/<site_id>: the run's folder here
    result = compute_config(replace(cfg, output_dir=inside(cfg.output_dir, "runs", run_id)), site_ids, maps=maps)
    for site_id, r in result.results.items():
        ledger.publish_site(run_id=run_id, flow_run_id=None, site_id=site_id, tables=r.tables(), input_key="k",
                            inputs=r.provenance, coefficient_set=cfg.coefficients.stem,
                            coefficient_sha256="0" * 64, code_version="test")
    for site_id, error in result.errors.items():
        ledger.record_site(run_id=run_id, flow_run_id=None, site_id=site_id, status="failed", code_version="test",
                           error=error)
    return run_id


def chromium() -> str:
    """Debian's chromium for tests of pages as a person sees them (.ci/run installs it)."""
    import shutil

    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError("CI=true but chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium not installed")
    return path
