"""A large site whose run draws its report scans on the chunks' threads like a run without
reports, and publishes the same numbers to the last digit (the report's small density maps are
filled by whichever thread reads their rows): the Swiss Arealstatistik's full extent."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from carbon.pipeline import scan
from carbon.pipeline.site import compute_site
from tests.integration.test_real_data import box_site, swiss  # noqa: F401 - the fixture


def test_a_site_with_report_maps_publishes_what_it_publishes_without(swiss, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    d, catalog, coefficients, legends = swiss
    monkeypatch.setattr(scan, "CHUNK_CELLS", 300_000)  # the 1833 x 1286 extent in several chunks
    monkeypatch.setattr(scan, "THREADS", 2)
    site = box_site(d / "AS18_17.tif")
    plain = compute_site(site, catalog, coefficients, legends_dir=legends, draws=500)
    maps_dir = tmp_path / "runs" / "r" / "report-maps" / site.site_id  # maps only the report draws: decimated
    with_maps = compute_site(site, catalog, coefficients, legends_dir=legends, draws=500, maps_dir=maps_dir)
    for name, df in plain.tables().items():
        pd.testing.assert_frame_equal(df, with_maps.tables()[name], check_exact=True, obj=name)
    written = sorted(p.name for p in maps_dir.glob("*.tif"))
    assert written == [f"{site.site_id}_stock_change_1985_2018.tif"] + [
        f"{site.site_id}_stock_density_{y}.tif" for y in (1985, 1997, 2009, 2018)]
