"""Reading and validating the input tables: crosswalks, coefficients, catalog.

Each loader reads one file (a local path or a URL such as ``s3://bucket/key``, read through
fsspec: carbon/io/storage.py), validates it lazily against its pandera contract
(schemas/inputs.py) and raises one :class:`InputError` listing every problem with
its file, row and column.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from carbon.errors import InputError
from carbon.io import storage
from carbon.io.resources import BUILTIN_LEGENDS
from carbon.io.sites import load_per_version
from carbon.rules.accuracy import AccuracySample
from carbon.rules.coefficients import CatalogEntry, CoefficientSet, Crosswalk
from schemas._validate import failure_messages
from schemas.inputs import (
    AccuracySampleTable,
    CatalogTable,
    CoefficientTable,
    CrosswalkTable,
    InvestPoolsTable,
)


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a local file or an object (a URL), streamed (storage.sha256)."""
    return storage.sha256(path)


def _input(path: str | Path) -> str | Path:
    """A location as given: a URL stays a string, anything else is a Path."""
    return str(path) if storage.is_url(path) else Path(path)


def _validated(path: str | Path, what: str, model: type[pa.DataFrameModel]) -> pd.DataFrame:
    """A CSV input read and validated against its contract; one InputError listing every
    problem (file, row, column) otherwise."""
    table, problems = failure_messages(model, read_csv(path, what), where=str(path))
    if problems:
        raise InputError(f"{what} is invalid", path=path, problems=problems)
    assert table is not None
    return table


def read_csv(path: str | Path, what: str) -> pd.DataFrame:
    """Read a CSV input (a local file or a URL), turning every reading failure into an
    InputError naming the file."""
    path = _input(path)
    source: str | Path | io.BytesIO
    if storage.is_url(path):
        source = io.BytesIO(storage.read_bytes(path, what=f"{what} file"))  # "… file not found (file s3://…)"
    elif not Path(path).is_file():
        raise InputError(f"{what} file not found", path=path)
    else:
        source = path
    try:
        df = pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text: {exc}", path=path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{what} is not a readable CSV table: {exc}", path=path) from None
    df.columns = [str(c).strip() for c in df.columns]
    for col in df.columns:
        df[col] = df[col].str.strip()
    return df


# --- legend crosswalks -------------------------------------------------------------------


def load_crosswalk(legend: str, legends_dir: str | Path | None = None) -> Crosswalk:
    """Find ``<legend>.csv`` in the user's legends folder first, then the built-in ones."""
    candidates: list[str | Path] = []
    if legends_dir is not None:
        candidates.append(storage.resolve(legends_dir, f"{legend}.csv") if storage.is_url(legends_dir)
                          else Path(legends_dir) / f"{legend}.csv")
    candidates.append(BUILTIN_LEGENDS / f"{legend}.csv")
    path = next((p for p in candidates if storage.is_file(p)), None)
    if path is None:
        searched = ", ".join(str(storage.parent(p)) if storage.is_url(p) else str(Path(p).parent) for p in candidates)
        raise InputError(
            f"no crosswalk for legend {legend!r}: expected {legend}.csv in {searched}"
        )
    return load_per_version(_read_crosswalk, path)  # read and validated once per file version, not once a site


def _read_crosswalk(path: str | Path) -> Crosswalk:
    """The crosswalk of the legend its file is named after (``<legend>.csv``)."""
    legend = storage.stem(path)
    table = _validated(path, "legend crosswalk", CrosswalkTable)
    if table.empty:
        raise InputError("legend crosswalk has no rows", path=path)
    table = table.sort_values("code")
    return Crosswalk(
        legend=legend,
        path=str(path),
        codes=table["code"].to_numpy(dtype=np.int64),
        classes=tuple(table["carbon_class"]),
        labels=tuple("" if pd.isna(v) else str(v) for v in table["label"]),
        sha256=sha256_file(path),
        colors=tuple(None if pd.isna(v) else str(v) for v in table["color"]) if "color" in table.columns else (),
        labels_zh=tuple("" if pd.isna(v) else str(v) for v in table["label_zh"]) if "label_zh" in table.columns
        else (),
    )


# --- coefficients ------------------------------------------------------------------------


def load_coefficients(path: str | Path) -> CoefficientSet:
    path = _input(path)
    df = read_csv(path, "coefficient table")
    lower = {c.lower(): c for c in df.columns}
    if "lucode" in lower:
        df = df.rename(columns={orig: low for low, orig in lower.items()})
        table, problems = failure_messages(InvestPoolsTable, df, where=str(path))
        kind = "invest"
    else:
        table, problems = failure_messages(CoefficientTable, df, where=str(path))
        kind = "long"
    if problems:
        raise InputError("coefficient table is invalid", path=path, problems=problems)
    assert table is not None
    return CoefficientSet(name=storage.stem(path), path=str(path), sha256=sha256_file(path), kind=kind, table=table)


# --- catalog -----------------------------------------------------------------------------


def load_catalog(path: str | Path) -> list[CatalogEntry]:
    """Read the land-cover catalog; paths are relative to the catalog's folder (or, for a
    catalog at a URL, to its URL prefix); a path may also be a URL (``s3://bucket/key``)."""
    path = _input(path)
    table = _validated(path, "land-cover catalog", CatalogTable)
    if table.empty:
        raise InputError("land-cover catalog lists no raster", path=path)
    base = storage.parent(path)
    rows = []
    for row in table.to_dict("records"):
        sample = row.get("accuracy")
        accuracy = (storage.resolve(base, str(sample))
                    if sample is not None and not pd.isna(sample) and str(sample).strip() else None)
        rows.append((row, storage.resolve(base, str(row["path"])), accuracy))
    absent = storage.missing({loc for _, raster, acc in rows for loc in (raster, acc) if loc is not None})
    entries = []
    missing = []
    for i, (row, raster, accuracy) in enumerate(rows):
        if raster in absent:
            missing.append(f"{path}, row {i + 2}: raster file not found: {raster}")
        source = row.get("source")
        if accuracy is not None and accuracy in absent:
            missing.append(f"{path}, row {i + 2}: accuracy sample file not found: {accuracy}")
        entries.append(
            CatalogEntry(
                year=int(row["year"]),
                path=str(raster),
                legend=str(row["legend"]),
                source="" if source is None or pd.isna(source) else str(source),
                accuracy=None if accuracy is None else str(accuracy),
            )
        )
    if missing:
        raise InputError("land-cover catalog names missing files", path=path, problems=missing)
    return sorted(entries, key=lambda e: e.year)  # stable: tiles keep their catalog row order


def load_accuracy(path: str | Path, crosswalk: Crosswalk) -> AccuracySample:
    """A map's accuracy-assessment sample (``map_code,reference_code,count``), validated: counts
    whole and >= 0, every map class sampled at least twice, every code in the map's legend
    (docs/methods.md §8). Rows and columns of the sample are the legend's codes."""
    path = _input(path)
    df = read_csv(path, "accuracy sample")
    table, problems = failure_messages(AccuracySampleTable, df, where=str(path))
    if table is not None and not problems:
        known = {int(c) for c in crosswalk.codes}
        for i, row in enumerate(table.to_dict("records")):
            for col in ("map_code", "reference_code"):
                if int(row[col]) not in known:
                    problems.append(f"{path}, row {i + 2}, column {col}: code {int(row[col])} is not in the "
                                    f"{crosswalk.legend!r} legend")
    if problems:
        raise InputError("accuracy sample is invalid", path=path, problems=problems)
    assert table is not None
    return AccuracySample.from_long(table[["map_code", "reference_code", "count"]].astype("int64"),
                                    classes=[int(c) for c in crosswalk.codes])
