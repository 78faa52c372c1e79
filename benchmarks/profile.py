"""Where the time goes: profiles of the two workloads whose targets are missed.

    uv run --group bench python benchmarks/profile.py engine [--size 8000] [--gain-loss]   # compute_site, full extent
    uv run --group bench python benchmarks/profile.py sites  [--n 100] [--no-reports]  # Prefect metering_run
    uv run python benchmarks/profile.py memory [--size 40000]                # what grows with the raster
    uv run python benchmarks/profile.py stages [--n 400]   # the many-site loop of a worker, ms a site by stage

``engine`` runs compute_site on the benchmark pair under pyinstrument (sampling, wall time,
the engine is single-threaded). ``sites`` runs the metering flow under py-spy (sampling every
thread of the flow process and of the temporary Prefect server subprocess, idle threads
excluded), on the first N sites of the 1,000-site benchmark configuration (each task still
reads the 1,000-site file, as in the full run). Both print the top functions by inclusive
and by self time, as shares of the sampled time, and write the full profile under
benchmarks/_work/ (pyinstrument HTML; py-spy collapsed stacks).
Inputs come from benchmarks/run.py (the pair and the metering configuration are generated if missing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import generate  # noqa: E402


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def print_top(incl: dict, self_: dict, total: float, unit: str, n: int = 25) -> str:
    lines = [f"total sampled: {total:.1f} {unit}", "", f"top {n} by inclusive time (share of total):"]
    for k, v in sorted(incl.items(), key=lambda kv: -kv[1])[:n]:
        lines.append(f"  {v / total * 100:5.1f} %  {k}")
    lines += ["", f"top {n} by self time (share of total):"]
    for k, v in sorted(self_.items(), key=lambda kv: -kv[1])[:n]:
        lines.append(f"  {v / total * 100:5.1f} %  {k}")
    text = "\n".join(lines)
    print(text)
    return text


def profile_engine(size: int, gain_loss: bool = False, threads: int = 1) -> None:
    # pyinstrument samples the thread that started it: the chunks of a large site run on
    # threads, so by default the engine runs on this one (CARBON_SINK_THREADS=1)
    os.environ["CARBON_SINK_THREADS"] = str(threads)
    import pyproj
    import shapely
    from pyinstrument import Profiler

    from carbon.io.tables import load_catalog, load_coefficients
    from carbon.pipeline.site import compute_site
    from carbon.rules.site import Site

    pair = generate.make_pair(size, "patchy")
    if gain_loss:  # the production path, as benchmarks/run.py --gain-loss measures it
        from run import GAIN_LOSS_SITE, GAIN_LOSS_YEARS

        path = generate.WORK / f"catalog_{size}_gain_loss.csv"
        lines = ["year,path,legend,source"] + [f"{y},{pair['paths'][src]},clcd,synthetic benchmark"
                                               for y, src in zip(GAIN_LOSS_YEARS, generate.YEARS, strict=True)]
        path.write_text("\n".join(lines) + "\n")
        catalog = load_catalog(path)
        coef = load_coefficients(ROOT / "data" / "coefficients" / "ipcc2019_tier1.csv")
        site_type, ecozone, baseline = GAIN_LOSS_SITE
        site = Site("bench-full-extent", "full", site_type, ecozone, shapely.box(*pair["bounds"]),
                    pyproj.CRS("EPSG:32650"), baseline_year=baseline)
    else:
        catalog = load_catalog(generate.write_catalog(generate.WORK / f"catalog_{size}.csv", pair, "lucode"))
        coef = load_coefficients(generate.write_pools(generate.WORK / "invest_pools.csv"))
        site = Site("bench-full-extent", "full", "other", "*", shapely.box(*pair["bounds"]), pyproj.CRS("EPSG:32650"))
    prof = Profiler(interval=0.001)
    t0 = time.perf_counter()
    prof.start()
    compute_site(site, catalog, coef, draws=10_000)
    prof.stop()
    wall = time.perf_counter() - t0
    session = prof.last_session
    incl: dict = defaultdict(float)
    self_: dict = defaultdict(float)

    def walk(frame, on_path: frozenset, parent: str | None) -> None:  # noqa: ANN001
        if frame.is_synthetic:  # pyinstrument's "[self]" leaves: the parent's own time
            if parent is not None:
                self_[parent] += frame.time
            return
        key = f"{frame.function}  ({_short(frame.file_path or '?')})"
        if key not in on_path:
            incl[key] += frame.time
        kids = frame.children
        self_[key] += max(0.0, frame.time - sum(c.time for c in kids))
        for c in kids:
            walk(c, on_path | {key}, key)

    root = session.root_frame()
    walk(root, frozenset(), None)
    print(f"compute_site on the {size}² pair ({'gain-loss' if gain_loss else 'stock difference'}, {threads} "
          f"thread(s)): {wall:.1f} s wall under the profiler")
    text = print_top(incl, self_, root.time, "s")
    out = generate.WORK / f"profile_engine_{size}{'_gain_loss' if gain_loss else ''}"
    (out.with_suffix(".txt")).write_text(text + "\n" + prof.output_text(unicode=False, color=False) + "\n")
    try:
        (out.with_suffix(".html")).write_text(prof.output_html())
    except RuntimeError as exc:  # a pyinstrument wheel without its HTML renderer's assets
        print(f"\n(no HTML profile: {exc})")
    print(f"\nfull profile: {out.with_suffix('.txt')}")


def profile_sites(n: int, n_file: int, reports: bool = True) -> None:
    from run import write_flow_config

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    pair = generate.make_pair(8000, "patchy")
    cfg = write_flow_config(generate.WORK, pair, n_file)
    shutil.rmtree(cfg.parent / "out", ignore_errors=True)
    home = Path(tempfile.mkdtemp(prefix="prefect_home_", dir=cfg.parent))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"})
    tag = f"{n}" if reports else f"{n}_no_reports"
    raw = generate.WORK / f"profile_sites_{tag}.collapsed"
    cmd = [pyspy, "record", "--format", "raw", "--rate", "50", "--subprocesses", "--threads", "-o", str(raw), "--",
           sys.executable, str(HERE / "child.py"), "flow", "--config", str(cfg), "--n", str(n),
           *([] if reports else ["--no-reports"])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    res = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH-JSON")), None)
    if res is None:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit("profiled run failed")
    print(res)
    # collapsed stacks: "process;thread;frame;...;frame count" (root first)
    incl: dict = defaultdict(float)
    self_: dict = defaultdict(float)
    by_proc: dict = defaultdict(float)
    total = 0.0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = float(count)
        frames = stack.split(";")
        proc_name = frames[0]
        is_server = "uvicorn" in stack or "prefect/server" in stack or "starlette" in stack
        by_proc["Prefect server process" if is_server and "child.py" not in proc_name else proc_name[:60]] += c
        total += c
        seen = set()
        funcs = [f for f in frames[1:] if not f.startswith(("thread (", "process "))]
        for f in funcs:
            key = _frame_key(f)
            if key not in seen:
                incl[key] += c
                seen.add(key)
        if funcs:
            self_[_frame_key(funcs[-1])] += c
    lines = ["samples by process:"] + [f"  {v / total * 100:5.1f} %  {k}" for k, v in
                                      sorted(by_proc.items(), key=lambda kv: -kv[1])]
    print("\n".join(lines))
    text = print_top(incl, self_, total, "samples (50 Hz, non-idle, all threads and processes)", 40)
    (generate.WORK / f"profile_sites_{tag}.txt").write_text(res + "\n" + "\n".join(lines) + "\n" + text + "\n")


def profile_memory(size: int) -> None:
    """Peak RSS of the engine's per-grid set-up alone (carbon.area.AreaModel for an N x N grid
    of the benchmark's CRS and pixel), in this fresh process: the part of compute_site's
    memory that grows with the raster (GDAL's block cache is the other: GDAL_CACHEMAX)."""
    import resource

    from affine import Affine
    from pyproj import CRS

    from carbon.rules import area

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    west = 500_000.0 - size * generate.PIXEL / 2
    before = peak()
    t0 = time.perf_counter()
    model = area.AreaModel(CRS(generate.CRS), Affine(generate.PIXEL, 0, west, 0, -generate.PIXEL, generate.NORTH),
                           size, size)
    wall = time.perf_counter() - t0
    held = sum(v.nbytes for v in vars(model).values() if hasattr(v, "nbytes")) / 2**20
    print(f"AreaModel for a {size}² grid: {wall:.1f} s; peak RSS {before:.0f} -> {peak():.0f} MiB "
          f"(+{peak() - before:.0f} MiB); arrays it keeps: {held:.0f} MiB")


#: The stages of a many-site worker timed by ``profile_stages``: (module, attribute, label); a
#: stage's time includes the stages it calls (indented under it in the table).
STAGES = (
    ("carbon.pipeline.loop", "site_key", "input key (rasters' headers and hashes, the site's plan)"),
    ("carbon.pipeline.loop", "compute_site_result", "compute the site"),
    ("carbon.pipeline.site", "_scan", "  read its pixels: windows of both years, coverage, areas (scan)"),
    ("carbon.pipeline.site", "reference_grid", "  reference grid (nominal pixel area per grid)"),
    ("carbon.pipeline.site", "_site_coefficients", "  the coefficients of its classes"),
    ("carbon.rules.dynamics", "year_stocks", "  stocks by year, class and pool"),
    ("carbon.rules.dynamics", "period_flows", "  flows by period"),
    ("carbon.pipeline.site", "_class_areas", "  class areas table"),
    ("carbon.pipeline.site", "_area_by_code", "  areas by map code table"),
    ("carbon.rules.accounting", "stock_tables", "  stock tables"),
    ("carbon.rules.accounting", "sink_table", "  sink table"),
    ("carbon.rules.accounting", "transition_table", "  transition table"),
    ("carbon.rules.uncertainty", "add_intervals", "  Monte Carlo and Approach 1 intervals"),
    ("carbon.rules.uncertainty", "draw_factors", "    the draws (10,000 per coefficient, the site's seed)"),
    ("carbon.rules.uncertainty", "summarize", "    the draws summed and their quantiles"),
    ("carbon.rules.uncertainty", "with_columns", "    adding columns to the tables (intervals, labels)"),
    ("carbon.pipeline.loop", "validate_site_results", "contract checks (per batch)"),
    ("carbon.pipeline.loop", "write_sites_tables", "writing the sites' files, 7 tables × Parquet and CSV (per batch)"),
    ("carbon.io.ledger", "Ledger.publish_sites", "the ledger transaction (per batch)"),
)


def profile_stages(n: int, batch: int) -> None:
    """The site loop as a worker process runs it (``loop.meter_sites`` on batches, no Prefect,
    no reports), on the first ``n`` sites of the product benchmark's many-site inputs (4000²
    CLCD pair, IPCC Tier 1, 1-20 ha), each stage timed: ms per site."""
    import functools
    import importlib
    import logging

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    import generate  # noqa: PLC0415
    import product  # noqa: PLC0415

    from carbon.pipeline import loop  # noqa: PLC0415

    cfg = product.many_inputs(generate.make_pair(product.MANY_PAIR, "patchy", product.WORK_ROOT), max(n, 1000))
    spent: dict[str, float] = defaultdict(float)
    for module, attr, label in STAGES:
        owner: object = importlib.import_module(module)
        name = attr
        if "." in attr:
            cls, name = attr.split(".")
            owner = getattr(owner, cls)
        fn = getattr(owner, name)

        def timed(*args: object, _fn=fn, _label=label, **kwargs: object) -> object:  # noqa: ANN001
            t = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent[_label] += time.perf_counter() - t

        setattr(owner, name, functools.wraps(fn)(timed))
    logging.disable(logging.WARNING)
    out = Path(tempfile.mkdtemp(prefix="stages-", dir=product.WORK_ROOT))
    ctx = loop.start_run(str(cfg), output_dir=out)
    ids = list(ctx.site_ids)[:n + batch]
    loop.meter_sites(ctx, ids[:batch], loop.SiteParams())  # a worker's first batch: imports, caches
    spent.clear()
    t0 = time.perf_counter()
    ok = 0
    for i in range(batch, len(ids), batch):
        ok += sum(o.status == "succeeded" for o in loop.meter_sites(ctx, ids[i:i + batch], loop.SiteParams()))
    total = time.perf_counter() - t0
    m = len(ids) - batch
    print(f"{m} sites ({ok} published) in batches of {batch}, one process, after a first batch: {total:.1f} s, "
          f"{total / m * 1000:.1f} ms a site")
    print("| stage | ms a site | share |\n|---|---|---|")
    for _, _, label in STAGES:
        print(f"| {label.replace('  ', '&nbsp;&nbsp;')} | {spent[label] / m * 1000:.2f} | "
              f"{spent[label] / total:.0%} |")
    shutil.rmtree(out, ignore_errors=True)


def _frame_key(frame: str) -> str:
    # py-spy frame: "function (path/to/file.py:line)"
    name, _, rest = frame.partition(" (")
    path = rest.rsplit(":", 1)[0]
    return f"{name}  ({_short(path)})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    e = sub.add_parser("engine")
    e.add_argument("--size", type=int, default=8000)
    e.add_argument("--gain-loss", action="store_true", help="CLCD legend, IPCC Tier 1: the gain-loss method")
    e.add_argument("--threads", type=int, default=1, help="CARBON_SINK_THREADS (pyinstrument sees the main one) [1]")
    s = sub.add_parser("sites")
    s.add_argument("--n", type=int, default=100, help="sites to meter")
    s.add_argument("--sites-file", type=int, default=1000, help="sites in the configuration [1000]")
    s.add_argument("--no-reports", action="store_true", help="metering_run(reports=False)")
    st = sub.add_parser("stages")
    st.add_argument("--n", type=int, default=400, help="sites timed, after a first batch [400]")
    st.add_argument("--batch", type=int, default=100, help="sites per batch [100, as a run of 10,000]")
    m = sub.add_parser("memory")
    m.add_argument("--size", type=int, default=40000)
    a = p.parse_args()
    if a.what == "memory":
        profile_memory(a.size)
    elif a.what == "stages":
        profile_stages(a.n, a.batch)
    elif a.what == "engine":
        profile_engine(a.size, a.gain_loss, a.threads)
    else:
        profile_sites(a.n, a.sites_file, not a.no_reports)


if __name__ == "__main__":
    main()
