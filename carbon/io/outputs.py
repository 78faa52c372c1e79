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
from collections.abc import Iterable
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
    failed = write_sites_tables([result], [site_dir])
    if failed:
        raise failed[result.site_id]
    return sorted(site_dir.iterdir())


def write_sites_tables(results: list[SiteResult], site_dirs: list[Path]) -> dict[str, Exception]:
    """``write_site_tables`` for a batch of sites: the tables that share their columns and
    types are encoded together (one Arrow conversion and one CSV rendering per table and
    batch, each site's rows cut from them: the same files as one site at a time), then each
    site's folder is written all or nothing. A site whose folder cannot be written is
    returned with its error; the others are written."""
    encoded: list[dict[str, bytes]] = [{} for _ in results]
    failed: dict[str, Exception] = {}
    names = list(results[0].tables()) if results else []
    for name in names:
        groups: dict[tuple[tuple[Any, ...], tuple[Any, ...]], list[int]] = {}
        for i, r in enumerate(results):
            df = r.tables()[name]
            groups.setdefault((tuple(df.columns), tuple(df.dtypes)), []).append(i)
        for members in groups.values():
            try:
                files = _encode([results[i].tables()[name] for i in members])
            except Exception:  # noqa: BLE001 - one site's table may be the cause: each encoded alone
                files = []
                for i in members:
                    try:
                        files += _encode([results[i].tables()[name]])
                    except Exception as exc:  # noqa: BLE001 - that site fails alone
                        failed.setdefault(results[i].site_id, exc)
                        files.append((b"", b""))
            for i, (csv, parquet) in zip(members, files, strict=True):
                encoded[i][f"{name}.csv"] = csv
                encoded[i][f"{name}.parquet"] = parquet
    for r, contents, site_dir in zip(results, encoded, site_dirs, strict=True):
        if r.site_id in failed:
            continue
        try:
            contents["provenance.json"] = json.dumps(r.provenance, indent=2, sort_keys=True, default=str).encode()
            _write_folder(site_dir, contents)
        except Exception as exc:  # noqa: BLE001 - that site fails alone (the caller records it)
            failed[r.site_id] = exc
    return failed


def _write_folder(site_dir: Path, files: dict[str, bytes]) -> None:
    site_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{site_dir.name}-", dir=site_dir.parent))
    try:
        for name, data in files.items():
            _write_file(tmp / name, data)
        if site_dir.exists():
            shutil.rmtree(site_dir)
        tmp.rename(site_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_file(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _encode(frames: list[pd.DataFrame]) -> list[tuple[bytes, bytes]]:
    """(CSV, Parquet) bytes of each of ``frames`` (the same columns and types), as
    ``DataFrame.to_csv(index=False)`` and ``DataFrame.to_parquet(index=False)`` (text columns
    as strings) write them one by one."""
    if len(frames) > 1:
        whole = pd.concat(frames, ignore_index=True)
        lines = whole.to_csv(index=False, lineterminator="\n").split("\n")[:-1]
        if len(lines) == len(whole) + 1:  # one line a row (a quoted field across lines: each alone)
            header, rows = lines[0] + "\n", [line + "\n" for line in lines[1:]]
            table = _arrow(whole)
            out, at = [], 0
            for f in frames:
                n = len(f)
                out.append(((header + "".join(rows[at:at + n])).encode(), _parquet_bytes(table.slice(at, n))))
                at += n
            return out
    return [(f.to_csv(index=False).encode(), _parquet_bytes(_arrow(f))) for f in frames]


def _arrow(df: pd.DataFrame) -> pa.Table:
    text = {col: df[col].astype("string") for col, dtype in df.dtypes.items()
            if pd.api.types.is_object_dtype(dtype)}
    out = df.assign(**text) if text else df
    table = pa.Table.from_pandas(out, preserve_index=False)
    if out.attrs:  # as pandas keeps them
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"PANDAS_ATTRS": json.dumps(out.attrs).encode()})
    return table


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return bytes(sink.getvalue().to_pybytes())


def read_site_tables(site_dir: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted(site_dir.glob("*.parquet"))}


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(_dumps(payload))
    tmp.replace(path)
    return path


def _dumps(value: Any, indent: int = 0) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return text.replace("\n", "\n" + " " * indent) if indent else text


def write_json_streamed(path: Path, payload: dict[str, Any], key: str, entries: Iterable[tuple[str, Any]]) -> Path:
    """``write_json(path, {**payload, key: dict(entries)})``, the same bytes, with ``entries``
    (given in key order) written one at a time: a run's manifest of 100,000 sites is never one
    string in memory. (JSON strings escape their newlines: the only ones in an entry's text are
    its indentation's.)"""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        f.write("{")
        for i, name in enumerate(sorted([*payload, key])):
            f.write(("," if i else "") + "\n  " + json.dumps(name) + ": ")
            if name != key:
                f.write(_dumps(payload[name], 2))
                continue
            n = 0
            for entry, value in entries:
                f.write(("{" if n == 0 else ",") + "\n    " + json.dumps(entry) + ": " + _dumps(value, 4))
                n += 1
            f.write("\n  }" if n else "{}")
        f.write("\n}")
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
    wanted = set(site_ids)  # each run's folder of report maps listed once (not a search per site)
    for folder in sorted(runs.glob(f"*/{REPORT_MAPS}")) if runs.is_dir() else []:
        if folder.parent.name == run_id or not folder.is_dir():
            continue
        old = [p for p in folder.iterdir() if p.name in wanted]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        if old and not any(folder.iterdir()):
            folder.rmdir()
