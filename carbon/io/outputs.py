"""Writing results: per-site table files, run manifests, input keys for incremental runs.

Files go under ``output_dir`` only: a path is built from a validated site_id slug and
checked to stay inside ``output_dir`` (never trust a name to make a path).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from carbon.errors import CarbonSinkError
from carbon.rules.results import SiteResult

#: The packages whose code a result depends on (their digest is part of the code version).
CODE_PACKAGES = ("carbon", "schemas")


class OutputDirError(CarbonSinkError):
    """The output directory is missing, not writable, or a path would leave it."""


def code_version() -> str:
    """Package version plus a digest of the accounting code, so results name the exact code."""
    try:
        v = version("carbon-sink")
    except PackageNotFoundError:
        v = "0+unknown"
    h = hashlib.sha256()
    for package in CODE_PACKAGES:
        root = Path(str(files(package)))
        for f in sorted(root.rglob("*.py")):
            h.update(f"{package}/{f.relative_to(root).as_posix()}".encode())
            h.update(f.read_bytes())
    return f"{v}+{h.hexdigest()[:12]}"


def inside(output_dir: Path, *parts: str) -> Path:
    """``output_dir/parts...``, refusing anything that would resolve outside ``output_dir``."""
    root = Path(output_dir).resolve()
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root) or path == root:
        raise OutputDirError(f"refusing a path outside the output directory: {'/'.join(parts)!r}")
    return path


def ensure_output_dir(output_dir: Path) -> Path:
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"cannot create output directory {output_dir}: {exc.strerror}") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise OutputDirError(f"output directory is not writable: {output_dir}")
    return output_dir


def write_site_tables(result: SiteResult, site_dir: Path) -> list[Path]:
    """Every table as CSV and Parquet, plus provenance.json; all or nothing (a temporary
    folder renamed into place)."""
    site_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{site_dir.name}-", dir=site_dir.parent))
    try:
        for name, df in result.tables().items():
            df.to_csv(tmp / f"{name}.csv", index=False)
            _parquet(df, tmp / f"{name}.parquet")
        (tmp / "provenance.json").write_text(json.dumps(result.provenance, indent=2, sort_keys=True, default=str))
        if site_dir.exists():
            shutil.rmtree(site_dir)
        tmp.rename(site_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(site_dir.iterdir())


def read_site_tables(site_dir: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted(site_dir.glob("*.parquet"))}


def _parquet(df: pd.DataFrame, path: Path) -> None:
    """A table as Parquet, text columns as strings: what ``DataFrame.to_parquet(index=False)``
    writes, through pyarrow directly (a run of thousands of sites writes seven tables each)."""
    text = {col: df[col].astype("string") for col in df.columns if df[col].dtype == object}
    out = df.assign(**text) if text else df
    table = pa.Table.from_pandas(out, preserve_index=False)
    if out.attrs:  # as pandas keeps them
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"PANDAS_ATTRS": json.dumps(out.attrs).encode()})
    pq.write_table(table, path, compression="snappy")


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return path



#: Folders of a run's density maps (``runs/<run_id>/<folder>/<site_id>``): asked for (kept), or
#: written for the site's report (only the latest published run's are kept).
MAPS = "maps"
REPORT_MAPS = "report-maps"


def run_maps(output_dir: Path, run_id: str, site_id: str) -> Path:
    """The density maps a run wrote for a site: the kept ones if any, else those for its report."""
    kept = inside(output_dir, "runs", run_id, MAPS, site_id)
    return kept if kept.is_dir() else inside(output_dir, "runs", run_id, REPORT_MAPS, site_id)


def prune_report_maps(output_dir: Path, run_id: str, site_ids: list[str]) -> None:
    """Remove the report maps of these sites that runs other than ``run_id`` wrote."""
    runs = Path(output_dir) / "runs"
    for site_id in site_ids:
        for old in runs.glob(f"*/{REPORT_MAPS}/{site_id}"):
            if old.parent.parent.name != run_id:
                shutil.rmtree(old, ignore_errors=True)
                if not any(old.parent.iterdir()):
                    old.parent.rmdir()
