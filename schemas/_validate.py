"""Run a pandera model lazily and turn every failure into a sentence naming where it is."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors


def failure_messages(
    model: type[pa.DataFrameModel],
    df: pd.DataFrame,
    *,
    where: str,
    row_offset: int | None = 2,
) -> tuple[pd.DataFrame | None, list[str]]:
    """Validate ``df`` against ``model`` with every check run (lazy).

    Returns the validated (coerced) frame, or None, and one message per failure, e.g.
    ``sites.geojson, row 3, column site_id: '../x' fails str_matches(...)``.
    ``row_offset`` converts a 0-based index to the row number a person sees in the file
    (2 for a CSV with a header line); None prints the index as it is.
    """
    try:
        return model.validate(df, lazy=True), []
    except SchemaErrors as exc:
        return None, _messages(exc.failure_cases, where=where, row_offset=row_offset)
    except SchemaError as exc:  # raised for some frame-level problems even when lazy
        return None, [f"{where}: {exc}"]


def _messages(cases: pd.DataFrame, *, where: str, row_offset: int | None) -> list[str]:
    out: list[str] = []
    seen: set[tuple[Any, str]] = set()
    bad_dtype = {
        c["column"] for c in cases.to_dict("records") if str(c.get("check")).startswith(("coerce_dtype", "dtype"))
    }
    for case in cases.to_dict("records"):
        context = case.get("schema_context")
        column = case.get("column")
        check = str(case.get("check"))
        failure = case.get("failure_case")
        index = case.get("index")
        if column in bad_dtype and not _present(index):
            continue  # a comparison that failed only because the column has the wrong type
        if column in bad_dtype and check.startswith("dtype"):
            continue  # the coerce failure says it already
        parts = [where]
        if _present(index):
            row = int(index) + row_offset if row_offset is not None and _is_int(index) else index
            parts.append(f"row {row}")
        if context == "DataFrameSchema" and check != "column_in_dataframe":
            key = (index, check)  # a frame-level check is reported once per row
            if key in seen:
                continue
            seen.add(key)
            out.append(", ".join(str(p) for p in parts) + f": {check}")
            continue
        if _present(column) and context != "DataFrameSchema":
            parts.append(f"column {column}")
        out.append(", ".join(str(p) for p in parts) + f": {_explain(check, failure)}")
    return out


def _explain(check: str, failure: Any) -> str:
    if check == "column_in_dataframe":
        return f"required column {failure!r} is missing"
    if check == "not_nullable":
        return "value is missing"
    if check.startswith("field_uniqueness") or check == "unique" or "duplicates" in check:
        return f"duplicate value {failure!r}"
    if check.startswith("coerce_dtype") or check.startswith("dtype"):
        return f"value {failure!r} has the wrong type ({check})"
    return f"value {failure!r} fails {check}"


def _present(value: Any) -> bool:
    if value is None:
        return False
    try:
        return not pd.isna(value)
    except (TypeError, ValueError):
        return True


def _is_int(value: Any) -> bool:
    try:
        int(value)
    except (TypeError, ValueError):
        return False
    return True
