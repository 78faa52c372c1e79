"""One measurement, run by benchmarks/run.py in a fresh process; prints one JSON line.

    python benchmarks/child.py engine  --catalog C --coefficients P --bounds L B R T --draws N [--warm]
    python benchmarks/child.py io      --paths A B [--strip-cells 262144]
    python benchmarks/child.py flow    --config T --n N        (Prefect; PREFECT_HOME set by the caller)
    python benchmarks/child.py config  --config T --n N        (compute_config, no Prefect)
    python benchmarks/child.py mc      --config T --site-id S

Each measurement runs in its own process so that its peak RSS (``ru_maxrss`` of that
process) is its own, and so that imports and caches of one do not help another.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """Peak RSS of this process so far (MiB; Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cmd_engine(a: argparse.Namespace) -> dict:
    import pyproj
    import shapely

    from carbon.io.tables import load_catalog, load_coefficients
    from carbon.pipeline.site import compute_site
    from carbon.rules.site import Site

    rss_import = current_rss_mb()
    catalog = load_catalog(a.catalog)
    coefficients = load_coefficients(a.coefficients)
    crs = pyproj.CRS("EPSG:32650")
    site = Site("bench-full-extent", "full raster extent", a.site_type, a.ecozone, shapely.box(*a.bounds), crs,
                baseline_year=a.baseline_year)
    warm_s = None
    if a.warm:
        # a warm process (the command line's runner after an earlier command): a 300 x 300 pixel
        # site of the same maps computed first, so the libraries' first-call costs are paid
        left, bottom, right, top = a.bounds
        cx, cy = (left + right) / 2, (bottom + top) / 2
        small = Site("bench-warm-up", "warm-up", a.site_type, a.ecozone, shapely.box(cx, cy, cx + 9000, cy + 9000), crs,
                     baseline_year=a.baseline_year)
        t0 = time.perf_counter()
        compute_site(small, catalog, coefficients, draws=a.draws)
        warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    r = compute_site(site, catalog, coefficients, draws=a.draws)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    st = r.stocks.set_index("year")
    pixels = r.area_by_code.groupby("year")["pixel_count"].sum()
    sink = r.sinks.iloc[0] if len(r.sinks) else None
    px_by_class = r.area_by_code.groupby(["year", "carbon_class"])["pixel_count"].sum().to_dict()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "warm_up_s": warm_s,
        "rss_after_import_mb": rss_import,
        "peak_rss_mb": rss_mb(),
        "method": str(r.sinks["method"].iloc[0]) if sink is not None else None,
        "years": {int(y): {"stock_tc": float(st.loc[y, "stock_tc"]), "area_ha": float(st.loc[y, "area_ha"]),
                           "pixels": int(pixels.loc[y])} for y in st.index},
        "stock_change_tc": None if sink is None else float(sink["stock_change_tc"]),
        "change_area_ha": None if sink is None else float(sink["area_ha"]),
        # per year and class: ellipsoidal area, pixel count and stock (for a per-class area correction)
        "by_class": {
            int(y): {
                str(row.carbon_class): {
                    "area_ha": float(row.area_ha),
                    "stock_tc": float(row.stock_tc),
                    "pixels": int(px_by_class.get((y, row.carbon_class), 0)),
                }
                for row in r.stocks_by_class[r.stocks_by_class["year"] == y].itertuples()
            }
            for y in st.index
        },
    }


def cmd_io(a: argparse.Namespace) -> dict:
    """Read the rasters fully, (1) block by block, (2) in full-width strips of the engine's
    height (values, then the mask, as carbon/rasters.py does)."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    out: dict = {}
    t0 = time.perf_counter()
    n = 0
    for p in a.paths:
        with rasterio.open(p) as src:
            for _, w in src.block_windows(1):
                n += src.read(1, window=w).size
    out["blocks_s"] = time.perf_counter() - t0
    out["pixels"] = n
    t0 = time.perf_counter()
    for p in a.paths:
        with rasterio.open(p) as src:
            rows = max(1, a.strip_cells // src.width)
            for r0 in range(0, src.height, rows):
                h = min(rows, src.height - r0)
                v = src.read(1, window=Window(0, r0, src.width, h))
                v.astype(np.int64)
    out["strips_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in a.paths:
        with rasterio.open(p) as src:
            rows = max(1, a.strip_cells // src.width)
            for r0 in range(0, src.height, rows):
                h = min(rows, src.height - r0)
                w = Window(0, r0, src.width, h)
                src.read(1, window=w)
                src.read_masks(1, window=w)
    out["strips_with_masks_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = rss_mb()
    return out


def _site_ids(config: str, n: int | None) -> list[str] | None:
    from carbon.io.config import load_config
    from carbon.io.sites import load_sites

    ids = [s.site_id for s in load_sites(load_config(config).sites)]
    return None if n is None or n >= len(ids) else ids[:n]


def cmd_flow(a: argparse.Namespace) -> dict:
    from prefect import flow

    @flow(name="bench-noop")
    def noop() -> int:
        return 1

    t0 = time.perf_counter()
    import flows.metering  # noqa: F401 - imports prefect, carbon, pandera, ...

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    noop()  # starts the temporary local Prefect server (and migrates its fresh database)
    startup_s = time.perf_counter() - t0
    site_ids = _site_ids(a.config, a.n)
    t0 = time.perf_counter()
    kw = {"reports": False} if a.no_reports else {}
    state = flows.metering.metering_run(config=a.config, site_ids=site_ids, force=True, return_state=True, **kw)
    wall = time.perf_counter() - t0
    summary = state.result(raise_on_failure=False)
    ok = isinstance(summary, dict)
    return {
        "import_s": import_s,
        "server_startup_s": startup_s,
        "flow_s": wall,
        "state": state.type.value,
        "n_sites": summary["n_sites"] if ok else None,
        "n_failed": summary["n_failed"] if ok else None,
        "failures": dict(list(summary["failures"].items())[:3]) if ok else str(summary)[:500],
        "max_workers": flows.metering.MAX_WORKERS,
        "reports": not a.no_reports,
        "peak_rss_mb": rss_mb(),
    }


def cmd_config(a: argparse.Namespace) -> dict:
    from carbon.pipeline.loop import compute_config

    site_ids = _site_ids(a.config, a.n)
    t0 = time.perf_counter()
    res = compute_config(a.config, site_ids)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "n_ok": len(res.results), "n_failed": len(res.errors),
            "errors": dict(list(res.errors.items())[:3]), "peak_rss_mb": rss_mb()}


def cmd_mc(a: argparse.Namespace) -> dict:
    import statistics

    from carbon.io.config import load_config
    from carbon.io.sites import load_sites
    from carbon.io.tables import load_catalog, load_coefficients
    from carbon.pipeline.site import compute_site
    from carbon.rules import dynamics, uncertainty
    from carbon.rules.site import select_sites
    from carbon.rules.vocabulary import CO2_PER_C

    cfg = load_config(a.config)
    site = select_sites(load_sites(cfg.sites), [a.site_id])[0]
    catalog = load_catalog(cfg.landcover)
    coef = load_coefficients(cfg.coefficients)

    def best(fn, k: int) -> float:
        ts = []
        for _ in range(k):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    compute_site(site, catalog, coef, draws=100)  # warm-up (imports, caches)
    out: dict = {"site_id": a.site_id}
    r = None
    for draws in (100, 10_000):
        def run(d=draws):  # noqa: ANN202
            nonlocal r
            r = compute_site(site, catalog, coef, draws=d)
        out[f"compute_site_{draws}_s"] = best(run, a.repeat)
    assert r is not None
    agg, c = r.aggregates, r.coefficients
    out["site_area_ha"] = float(r.provenance["site_area_ha"])
    out["n_classes"] = agg.n_classes
    out["method"] = str(r.sinks["method"].iloc[0])
    out["u90_pct_sink"] = float(r.sinks["sink_tco2e_u90_pct"].iloc[0])
    cv = c.cv
    for draws in (100, 10_000):
        def mc(d=draws) -> None:  # noqa: ANN001
            f = uncertainty.draw_factors(cv, d, 1234)
            uncertainty.summarize(dynamics.year_contributions(agg, c), f, cv)
            s, e = dynamics.period_contributions(agg, c)
            uncertainty.summarize(e - s, f, cv, scale=CO2_PER_C)
        out[f"mc_direct_{draws}_s"] = best(mc, a.repeat * 3)
    f = uncertainty.draw_factors(cv, 10_000, 1234)
    contrib = dynamics.year_contributions(agg, c)
    out["parts_10000_s"] = {
        "draw_factors": best(lambda: uncertainty.draw_factors(cv, 10_000, 1234), a.repeat * 3),
        "year_contributions": best(lambda: dynamics.year_contributions(agg, c), a.repeat * 3),
        "period_contributions": best(lambda: dynamics.period_contributions(agg, c), a.repeat * 3),
        "summarize_years": best(lambda: uncertainty.summarize(contrib, f, cv), a.repeat * 3),
    }
    out["peak_rss_mb"] = rss_mb()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("engine")
    e.add_argument("--catalog", required=True)
    e.add_argument("--coefficients", required=True)
    e.add_argument("--bounds", type=float, nargs=4, required=True)
    e.add_argument("--draws", type=int, default=10_000)
    e.add_argument("--warm", action="store_true", help="compute a small site of the same maps first (not timed)")
    e.add_argument("--site-type", default="other")
    e.add_argument("--ecozone", default="*")
    e.add_argument("--baseline-year", type=int)
    i = sub.add_parser("io")
    i.add_argument("--paths", nargs="+", required=True)
    i.add_argument("--strip-cells", type=int, default=262_144)
    for name in ("flow", "config"):
        f = sub.add_parser(name)
        f.add_argument("--config", required=True)
        f.add_argument("--n", type=int)
        if name == "flow":
            f.add_argument("--no-reports", action="store_true", help="metering_run(reports=False)")
    m = sub.add_parser("mc")
    m.add_argument("--config", required=True)
    m.add_argument("--site-id", required=True)
    m.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    result = {"engine": cmd_engine, "io": cmd_io, "flow": cmd_flow, "config": cmd_config, "mc": cmd_mc}[a.cmd](a)
    print("BENCH-JSON " + json.dumps(result, default=float), flush=True)


if __name__ == "__main__":
    main()
