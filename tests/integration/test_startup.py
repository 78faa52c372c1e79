"""Start-up of the command line: commands that need no orchestration never import Prefect (nor
Dask, matplotlib or the per-pixel computation), checked in a fresh interpreter's sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, publish, write_config

#: Modules that the commands below must not load (orchestration, drawing, the computation).
#: (dask itself is not listed: pandera imports dask.dataframe when it first builds a table
#: model, e.g. to validate the sites file an export reads.)
HEAVY = ("prefect", "prefect_dask", "distributed", "matplotlib", "numba", "rasterio", "exactextract")

PROBE = """
import json, sys
from typer.testing import CliRunner
from flows.cli import app
runner = CliRunner()
seen = {}
for args in json.loads(sys.argv[1]):
    result = runner.invoke(app, args)
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
    seen[" ".join(args)] = {"exit_code": result.exit_code, "loaded": loaded, "output": result.output[-2000:]}
print(json.dumps(seen))
"""


def _probe(commands: list[list[str]], heavy: tuple[str, ...] = HEAVY) -> dict[str, dict]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands), json.dumps(heavy)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_cli_and_asking_for_help_loads_no_prefect_nor_pandas() -> None:
    seen = _probe([["--help"], ["results", "--help"], ["export", "--help"], ["run", "--help"]],
                  (*HEAVY, "dask", "pandas", "sqlalchemy", "geopandas"))
    for command, s in seen.items():
        assert s["exit_code"] == 0, (command, s["output"])
        assert s["loaded"] == [], (command, s["loaded"])


def test_commands_without_orchestration_load_no_prefect(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml")
    cfg.write_text(cfg.read_text() + "buffer_pct = 10\nuncertainty_default_pct = 20\n")
    publish(cfg, ["daye-mine-wc"])
    c = str(cfg)
    seen = _probe([["--version"], ["results", "--config", c], ["results", "--config", c, "--stocks", "--format", "csv"],
                   ["history", "--config", c, "--site", "daye-mine-wc"],
                   ["export", "--config", c, "--registry", "json", "--out", str(tmp_path / "export")],
                   ["ledger", "upgrade", "--config", c]])
    for command, s in seen.items():
        assert s["exit_code"] == 0, (command, s["output"])
        assert s["loaded"] == [], (command, s["loaded"])
    assert "daye-mine-wc,2024," in seen[f"results --config {c} --stocks --format csv"]["output"]
    assert (tmp_path / "export" / "removals.json").is_file()
    assert seen["--version"]["output"].startswith("carbon-sink ")
    # validate and verify recompute sites (the per-pixel pass), but need no orchestration either
    checks = _probe([["validate", "--config", c, "--quick"], ["verify", "--config", c, "--chain-only"]],
                    ("prefect", "prefect_dask", "distributed", "matplotlib"))
    for command, s in checks.items():
        assert s["exit_code"] == 0, (command, s["output"])
        assert s["loaded"] == [], (command, s["loaded"])


def test_the_cli_module_imports_no_prefect_at_import() -> None:
    code = "import sys, flows.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=True)
    assert done.stdout.strip() == "[]"
