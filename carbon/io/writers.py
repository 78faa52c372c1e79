"""Export files: CSV and JSON written byte for byte the same for the same ledger, and their
digests (docs/registry.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from carbon.rules.registry import neutralise


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """CSV with text cells neutralised, fixed float formatting, LF line ends: byte-identical
    for the same ledger."""
    safe = df.map(neutralise)
    path.write_bytes(safe.to_csv(index=False, lineterminator="\n", float_format="%.6f").encode("utf-8"))


def write_json(payload: Any, path: Path) -> None:
    path.write_bytes((json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")
                     .encode("utf-8"))


def sha256_bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
