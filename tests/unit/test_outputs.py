"""Output files. A batch's tables are encoded together (one CSV rendering and one Arrow conversion per table)
and cut per site: each site's files must be exactly those of the site written alone."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from carbon.io.outputs import _encode, write_json, write_json_streamed


def _alone(df: pd.DataFrame) -> tuple[bytes, pd.DataFrame]:
    buf = io.BytesIO()
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].astype("string")
    out.to_parquet(buf, index=False)
    return df.to_csv(index=False).encode(), pd.read_parquet(io.BytesIO(buf.getvalue()))


def _frames(label_b: str) -> list[pd.DataFrame]:
    return [
        pd.DataFrame({"site_id": "a", "year": [2000, 2010], "area_ha": [1.0 / 3.0, 2e-17], "adjusted": [True, False],
                      "label": ["Wald, dicht", 'say "hi"'], "sd": pd.Series([None, 0.1], dtype=object)}),
        pd.DataFrame({"site_id": "b", "year": pd.Series([], dtype=np.int64), "area_ha": pd.Series([], dtype=float),
                      "adjusted": pd.Series([], dtype=bool), "label": pd.Series([], dtype=str),
                      "sd": pd.Series([], dtype=object)}),
        pd.DataFrame({"site_id": "c", "year": [2020], "area_ha": [np.nan], "adjusted": [True], "label": [label_b],
                      "sd": pd.Series([None], dtype=object)}),
    ]


def test_each_site_cut_from_the_batch_is_the_site_written_alone() -> None:
    for label in ("Fels", "two\nlines"):  # a quoted field across lines: each frame is then rendered alone
        frames = _frames(label)
        encoded = _encode(frames)
        assert len(encoded) == len(frames)
        for df, (csv, parquet) in zip(frames, encoded, strict=True):
            want_csv, want_table = _alone(df)
            assert csv == want_csv
            pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(parquet)), want_table, check_exact=True)


def test_the_streamed_manifest_is_the_manifest_written_whole(tmp_path: Path) -> None:
    """A run's manifest is written a site at a time (memory flat in the number of sites): the
    bytes must be those of ``json.dumps`` of the whole payload, the format it always had."""
    sites = {
        "b-site": {"status": "succeeded", "inputs": {"years": {"2024": {"rasters": {"/x/é.tif": "ab" * 32}}},
                                                     "parameters": {"years": None, "draws": [1, 2.5]}}},
        "a-site": {"status": "failed", "error": 'bad "tile"\nsecond line\tand a tab'},
        "c-site": {"status": "skipped", "input_key": "0" * 64, "empty": {}, "list": []},
    }
    header = {"run_id": "r", "status": "partial", "reports": {}, "flow_run_id": None, "ledger": "sqlite:///x",
              "when": dt.datetime(2026, 12, 3, 8, 0)}
    for chosen in (sites, {}):
        streamed = write_json_streamed(tmp_path / "m.json", header, "sites", sorted(chosen.items()))
        whole = write_json(tmp_path / "whole.json", {**header, "sites": chosen})
        assert streamed.read_bytes() == whole.read_bytes()
        assert json.loads(streamed.read_text())["sites"] == chosen
