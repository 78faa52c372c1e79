"""carbon-sink benchmarks: one command, every figure side by side.

    uv run python benchmarks/run.py            # the targets (about 9 min on 2 cores)
    uv run python benchmarks/run.py --size 2000 --big 4000 --sites 50   # a quick smoke run
    uv run python benchmarks/run.py --engine-only [--gain-loss]         # (a) and (b) only

(a) carbon-sink vs InVEST Carbon 3.20.2 on the same N x N current/future pair (totals after the
    planar-area correction, and speed);
(b) the I/O floor: reading the same two rasters and nothing else;
(c) peak RSS of carbon-sink's computation, in a fresh process, for the N^2 pair and a big pair;
(d) a metering run of many small sites through the Prefect flow, against the engine alone;
(e) the Monte Carlo cost per site.

Inputs are generated (fixed seed) into benchmarks/_work/ (git-ignored) and reused by later
runs; results go to benchmarks/_work/results.json and are printed as one table at the end.
InVEST runs from its own venv (``--invest-python``; install it with
``bash benchmarks/invest/install.sh /tmp/invest-venv``); ``--skip-invest`` leaves it out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402

PLANAR_PIXEL_HA = generate.PIXEL * generate.PIXEL / 1e4  # 0.09 ha
DEFAULT_INVEST_PYTHON = "/tmp/invest-venv/bin/python"
DEFAULT_INVEST_RUNNER = str(HERE / "invest" / "run_carbon.py")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def child(*args: str, env: dict | None = None, timeout: float | None = None) -> dict:
    """Run benchmarks/child.py in a fresh interpreter; return its JSON result."""
    cmd = [sys.executable, str(HERE / "child.py"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH-JSON ")), None)
    if proc.returncode != 0 or line is None:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise RuntimeError(f"benchmark step failed: {' '.join(args[:1])} (exit {proc.returncode})")
    return json.loads(line[len("BENCH-JSON "):])


def tree() -> dict:
    """The code measured: git HEAD and the files that differ from it (others edit the tree)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return "?"

    return {"head": git("log", "-1", "--format=%h %s"), "dirty": git("status", "--short", "--untracked-files=no")}


def machine() -> dict:
    import numpy
    import prefect
    import rasterio

    cpu = "?"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        from importlib.metadata import version

        exx = version("exactextract")
    except Exception:  # noqa: BLE001
        exx = "?"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(mem_gb, 1), "os": platform.platform(),
        "python": platform.python_version(), "numpy": numpy.__version__, "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__, "exactextract": exx, "prefect": prefect.__version__,
    }


# --- steps -------------------------------------------------------------------------------


def bench_engine(pair: dict, work: Path, draws: int, tag: str, gdal_cache_mb: int | None = None,
                 threads: int | None = None, warm: bool = False) -> dict:
    """compute_site on the pair's full extent in a fresh process; ``gdal_cache_mb`` sets GDAL's
    block cache (the engine's default is 64 MB); ``threads`` the engine's threads per site
    (``CARBON_SINK_THREADS``; default: every core); ``warm``: after a small site of the same
    maps in the same process (a warm runner), not timed."""
    catalog = generate.write_catalog(work / f"catalog_{tag}.csv", pair, "lucode")
    pools = generate.write_pools(work / "invest_pools.csv")
    env = dict(os.environ)
    if gdal_cache_mb is not None:
        env["GDAL_CACHEMAX"] = str(gdal_cache_mb)
    if threads is not None:
        env["CARBON_SINK_THREADS"] = str(threads)
    return child("engine", "--catalog", str(catalog), "--coefficients", str(pools),
                 "--bounds", *map(str, pair["bounds"]), "--draws", str(draws), *(["--warm"] if warm else []), env=env)


#: The production path of bench_gain_loss: the maps as CLCD of these years, IPCC Tier 1, a site
#: such as benchmarks/product.py's ``big`` (the pair's full extent).
GAIN_LOSS_YEARS = (2018, 2024)
GAIN_LOSS_SITE = ("reclaimed_mine", "subtropical_humid_asia", 2018)


def bench_gain_loss(pair: dict, work: Path, draws: int) -> dict:
    """compute_site with the gain-loss method (CLCD legend, IPCC Tier 1 coefficients) on the
    pair's full extent, in a fresh process."""
    catalog = work / f"catalog_{pair['size']}_gain_loss.csv"
    lines = ["year,path,legend,source"]
    for y, src in zip(GAIN_LOSS_YEARS, generate.YEARS, strict=True):
        lines.append(f"{y},{pair['paths'][src]},clcd,synthetic benchmark (benchmarks/generate.py seed {generate.SEED})")
    catalog.write_text("\n".join(lines) + "\n")
    site_type, ecozone, baseline = GAIN_LOSS_SITE
    return child("engine", "--catalog", str(catalog), "--coefficients", str(ROOT / "data" / "coefficients" /
                                                                          "ipcc2019_tier1.csv"),
                 "--bounds", *map(str, pair["bounds"]), "--draws", str(draws), "--site-type", site_type,
                 "--ecozone", ecozone, "--baseline-year", str(baseline))


def bench_invest(pair: dict, work: Path, py: str, runner: str) -> dict:
    pools = generate.write_pools(work / "invest_pools.csv")
    ws = work / f"invest_ws_{pair['size']}"
    if ws.exists():
        shutil.rmtree(ws)
    cmd = [py, runner, "--lulc-cur", pair["paths"][generate.YEARS[0]], "--lulc-fut", pair["paths"][generate.YEARS[1]],
           "--pools", str(pools), "--workspace", str(ws), "--n-workers", "-1"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise RuntimeError("InVEST run failed")
    out = json.loads(proc.stdout)
    shutil.rmtree(ws, ignore_errors=True)  # ~1.3 GB of float32 outputs at 8000^2
    return out


def compare(cs: dict, inv: dict, pair: dict) -> dict:
    y0, y1 = generate.YEARS
    ratio = {y: cs["years"][str(y)]["area_ha"] / (cs["years"][str(y)]["pixels"] * PLANAR_PIXEL_HA) for y in (y0, y1)}
    corrected = {
        "current": cs["years"][str(y0)]["stock_tc"] / ratio[y0],
        "future": cs["years"][str(y1)]["stock_tc"] / ratio[y1],
        # the change is over land with data in both years (the same pixels here): same correction
        "change": cs["stock_change_tc"] / ratio[y0],
    }
    t = inv["totals"]
    rs = inv["raster_sums"]
    invest = {"current": t["total_carbon_current_MgC"], "future": t["total_carbon_future_MgC"],
              "change": t["total_sequestration_MgC"]}
    invest_rs = {"current": rs["c_storage_bas"]["total_x_area_ha"], "future": rs["c_storage_alt"]["total_x_area_ha"],
                 "change": rs["c_change_bas_alt"]["total_x_area_ha"]}
    out = {"area_ratio": ratio, "carbon_sink_corrected": corrected, "invest_summary": invest,
           "invest_raster_sums": invest_rs}
    # per-class correction: each class's stock scaled by its own planar / ellipsoidal area (the
    # ellipsoidal/planar ratio varies across a UTM map, so one global ratio leaves ~1e-6)
    per_class = {}
    for key, y in (("current", y0), ("future", y1)):
        per_class[key] = sum(v["stock_tc"] * v["pixels"] * PLANAR_PIXEL_HA / v["area_ha"]
                             for v in cs["by_class"][str(y)].values() if v["area_ha"] > 0)
    per_class["change"] = per_class["future"] - per_class["current"]  # valid in both years: the same pixels here
    out["carbon_sink_per_class_corrected"] = per_class
    out["rel_diff_per_class"] = {k: abs(per_class[k] - invest[k]) / abs(invest[k]) for k in invest}
    out["rel_diff"] = {k: abs(corrected[k] - invest[k]) / abs(invest[k]) for k in invest}
    out["rel_diff_raster_sums"] = {k: abs(corrected[k] - invest_rs[k]) / abs(invest_rs[k]) for k in invest}
    out["pixels_match"] = all(cs["years"][str(y)]["pixels"] == pair["valid_pixels"][y] for y in (y0, y1)) and (
        rs["c_storage_bas"]["n_valid_pixels"] == pair["valid_pixels"][y0])
    return out


def write_flow_config(work: Path, pair: dict, n_sites: int) -> Path:
    """Sites, catalog (CLCD legend: IPCC Tier 1 coefficient set, gain_loss: the production
    path) and TOML config of the metering run."""
    d = work / f"metering_{n_sites}"
    d.mkdir(parents=True, exist_ok=True)
    sites = d / "sites.geojson"
    if not sites.is_file():
        generate.make_sites(sites, pair, n_sites)
    generate.write_catalog(d / "catalog.csv", pair, "clcd")
    cfg = d / "carbon-sink.toml"
    coeff = ROOT / "data" / "coefficients" / "ipcc2019_tier1.csv"
    cfg.write_text(
        "# benchmark metering run (benchmarks/run.py)\n"
        f'sites = "sites.geojson"\nlandcover = "catalog.csv"\ncoefficients = "{coeff}"\n'
        'output_dir = "out"\n'
    )
    return cfg


def bench_flow(cfg: Path, n: int, reports: bool = True) -> dict:
    out_dir = cfg.parent / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    home = Path(tempfile.mkdtemp(prefix="prefect_home_", dir=cfg.parent))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"})
    try:
        return child("flow", "--config", str(cfg), "--n", str(n), *([] if reports else ["--no-reports"]), env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)


# --- report ------------------------------------------------------------------------------


def fmt(v: float | None, spec: str = ",.3f") -> str:
    return "n/a" if v is None else format(v, spec)


def report(R: dict) -> str:
    a = R["args"]
    lines = []
    add = lines.append
    add(f"carbon-sink benchmarks — {R['machine']['cores']} cores, {R['machine']['cpu']}, {R['machine']['ram_gb']} GB RAM")
    add(f"command: {R['command']}")
    add(f"code: {R['tree']['head']}" + (" (+ uncommitted changes: " + R["tree"]["dirty"].replace(chr(10), ", ")
                                         + ")" if R["tree"]["dirty"] else ""))
    end = R.get("tree_end")
    if end and end != R["tree"]:
        add(f"WARNING: the code changed during the run (others commit to the tree); at the end: {end['head']}"
            + (f" (+ {end['dirty']})".replace(chr(10), ", ") if end["dirty"] else ""))
    add(f"total benchmark wall time: {R['total_s'] / 60:.1f} min (input generation included: "
        f"{R.get('generate_s', 0):.0f} s)")
    add("")
    add("| # | measure | value | target | met |")
    add("|---|---|---|---|---|")
    n = a["size"]
    cs = R.get("engine")
    if cs:
        mpx = n * n / 1e6
        runs = ", ".join(f"{t:.2f}" for t in cs.get("runs_wall_s", []))
        add(f"| a | carbon-sink compute_site, {n}² pair, full extent, {a['draws']} draws | {cs['wall_s']:.2f} s "
            f"({2 * mpx / cs['wall_s']:.1f} Mpx/s over both years; CPU {cs['cpu_s']:.1f} s; runs {runs}) | | |")
    warm = R.get("engine_warm")
    if warm:
        runs = ", ".join(f"{t:.2f}" for t in warm["runs_wall_s"])
        add(f"| a | same, warm process (a 300² site of the same maps computed first in it, not timed: a runner "
            f"after an earlier command) | {warm['wall_s']:.2f} s (CPU {warm['cpu_s']:.1f} s; runs {runs}) | | |")
    gl = R.get("gain_loss")
    if gl:
        add(f"| a | compute_site with gain-loss (CLCD, IPCC Tier 1, {gl['draws']} draws), {n}² pair, full extent, "
            f"fresh process | {gl['wall_s']:.2f} s (CPU {gl['cpu_s']:.1f} s; peak RSS {gl['peak_rss_mb']:.0f} MiB; "
            f"runs {', '.join(f'{t:.2f}' for t in gl['runs_wall_s'])}) | | |")
    one = R.get("engine_1thread")
    if one:
        add(f"| a | same, one thread (CARBON_SINK_THREADS=1) | {one['wall_s']:.2f} s (runs "
            f"{', '.join(f'{t:.2f}' for t in one['runs_wall_s'])}; peak RSS {one['peak_rss_mb']:.0f} MiB) | | |")
    inv = R.get("invest")
    if inv:
        add(f"| a | InVEST Carbon {inv['invest_version']}, n_workers -1, same pair (execute() only) | "
            f"{inv['wall_time_s']:.1f} s (runs {', '.join(f'{t:.1f}' for t in inv.get('runs_wall_time_s', []))}; "
            f"peak RSS {inv['peak_rss_self_MiB']:.0f} MiB) | | |")
        sp = inv["wall_time_s"] / cs["wall_s"]
        add(f"| a | speed ratio InVEST / carbon-sink (medians) | {sp:.2f}× | ≥ 10× | {'yes' if sp >= 10 else 'NO'} |")
        if one:
            sp1 = inv["wall_time_s"] / one["wall_s"]
            add(f"| a | speed ratio InVEST / carbon-sink on one thread | {sp1:.2f}× | ≥ 10× | "
                f"{'yes' if sp1 >= 10 else 'NO'} |")
        c = R["compare"]
        for k in ("current", "future", "change"):
            add(f"| a | total {k} (t C): carbon-sink corrected / InVEST | {c['carbon_sink_corrected'][k]:,.1f} / "
                f"{c['invest_summary'][k]:,.1f} | rel. diff < 1e-6 | "
                f"{'yes' if c['rel_diff'][k] < 1e-6 else 'NO'} ({c['rel_diff'][k]:.1e}) |")
        pc = c["carbon_sink_per_class_corrected"]
        add(f"| a | same with a per-class area correction: current / future / change (t C) | {pc['current']:,.1f} / "
            f"{pc['future']:,.1f} / {pc['change']:,.1f} | rel. diff < 1e-6 | "
            f"{'yes' if max(c['rel_diff_per_class'].values()) < 1e-6 else 'NO'} "
            f"({' / '.join(f'{v:.0e}' for v in c['rel_diff_per_class'].values())}) |")
        ar = c["area_ratio"]
        add(f"| a | area correction (ellipsoidal / planar), current | "
            f"{ar.get(generate.YEARS[0], ar.get(str(generate.YEARS[0]))):.7f} | | |")
    io = R.get("io")
    if io and cs:
        r = cs["wall_s"] / io["blocks_s"]
        add(f"| b | I/O floor: read both rasters block by block | {io['blocks_s']:.2f} s "
            f"(strips as the engine: {io['strips_s']:.2f} s; + masks: {io['strips_with_masks_s']:.2f} s) | | |")
        add(f"| b | carbon-sink / I/O floor (medians) | {r:.1f}× | ≤ 1.5× | {'yes' if r <= 1.5 else 'NO'} |")
        if warm:
            rw = warm["wall_s"] / io["blocks_s"]
            add(f"| b | same, warm process | {rw:.1f}× | ≤ 1.5× | {'yes' if rw <= 1.5 else 'NO'} |")
        if one:
            add(f"| b | same, one thread | {one['wall_s'] / io['blocks_s']:.1f}× | | |")
    mem = R.get("memory", {})
    if mem:
        small = mem.get(str(n)) or mem.get(n)
        peak = max(v["peak_rss_mb"] for v in mem.values())
        for size, v in sorted(mem.items(), key=lambda kv: int(kv[0])):
            add(f"| c | peak RSS, {size}² pair ({v['kind']}, {v['disk_mb']:.0f} MB on disk), compute in a fresh "
                f"process | {v['peak_rss_mb']:.0f} MiB (after imports {v['rss_after_import_mb']:.0f} MiB; "
                f"compute {v['wall_s']:.0f} s) | ≤ 512 MiB | {'yes' if v['peak_rss_mb'] <= 512 else 'NO'} |")
        if small and len(mem) > 1:
            big = max(mem.items(), key=lambda kv: int(kv[0]))[1]
            growth = big["peak_rss_mb"] - small["peak_rss_mb"]
            add(f"| c | RSS growth from {n}² to {max(int(s) for s in mem)}² | {growth:+.0f} MiB | not growing "
                f"| {'yes' if growth < 0.1 * small['peak_rss_mb'] else 'NO'} |")
        del peak
    capped = R.get("memory_capped") or {}
    for size, v in sorted(capped.items(), key=lambda kv: int(kv[0])):
        add(f"| c | diagnostic: peak RSS, {size}² pair, GDAL_CACHEMAX={a['gdal_cache_mb']} MB | "
            f"{v['peak_rss_mb']:.0f} MiB (compute {v['wall_s']:.0f} s) | ≤ 512 MiB | "
            f"{'yes' if v['peak_rss_mb'] <= 512 else 'NO'} |")
    if len(capped) > 1:
        vals = [v["peak_rss_mb"] for _, v in sorted(capped.items(), key=lambda kv: int(kv[0]))]
        add(f"| c | diagnostic: RSS growth with GDAL_CACHEMAX={a['gdal_cache_mb']} MB | {vals[-1] - vals[0]:+.0f} MiB | | |")
    fl = R.get("flow")
    if fl:
        f, e = fl["prefect"], fl["engine"]
        k = fl["n_run"]
        ext = fl["n_sites"] / k
        est = f" (run on {k}, ×{ext:.0f})" if k != fl["n_sites"] else ""
        total = f["flow_s"] * ext
        add(f"| d | Prefect temporary server start (first flow, fresh PREFECT_HOME) | {f['server_startup_s']:.1f} s | | |")
        add(f"| d | metering_run, {fl['n_sites']} sites of 5-20 ha{est}, {f['max_workers']} threads | "
            f"{total:.0f} s = {total / 60:.1f} min ({f['flow_s'] / k:.3f} s/site; {f['n_failed']} failed) "
            f"| < 10 min | {'yes' if total < 600 else 'NO'} |")
        nr = fl.get("prefect_no_reports")
        if nr:
            t2 = nr["flow_s"] * ext
            add(f"| d | same, metering_run(reports=False): no per-site HTML report{est} | {t2:.0f} s = {t2 / 60:.1f} min "
                f"({nr['flow_s'] / k:.3f} s/site; {nr['n_failed']} failed) | < 10 min | {'yes' if t2 < 600 else 'NO'} |")
        add(f"| d | engine only (compute_config, same sites) | {e['wall_s'] / k:.3f} s/site "
            f"({e['wall_s'] * ext:.0f} s for {fl['n_sites']}) | | |")
        add(f"| d | orchestration overhead per site (flow − engine) / n | {(f['flow_s'] - e['wall_s']) / k:.3f} s"
            + (f" (without reports: {(nr['flow_s'] - e['wall_s']) / k:.3f} s)" if nr else "") + " | | |")
    mc = R.get("mc")
    if mc:
        add(f"| e | compute_site, small site ({mc['site_area_ha']:.1f} ha, {mc['method']}), 100 vs 10,000 draws | "
            f"{mc['compute_site_100_s'] * 1e3:.1f} ms vs {mc['compute_site_10000_s'] * 1e3:.1f} ms | | |")
        add(f"| e | Monte Carlo alone (draw_factors + contributions + summarize), 100 vs 10,000 draws | "
            f"{mc['mc_direct_100_s'] * 1e3:.2f} ms vs {mc['mc_direct_10000_s'] * 1e3:.2f} ms "
            f"({mc['mc_direct_10000_s'] / mc['compute_site_10000_s'] * 100:.0f} % of the site at 10,000) | | |")
        parts = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in mc["parts_10000_s"].items())
        add(f"| e | parts at 10,000 draws | {parts} | | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8000, help="side of the patchy pair for (a), (b), (c) [8000]")
    p.add_argument("--big", type=int, default=40000, help="side of the big blocky pair for (c); 0 skips it [40000]")
    p.add_argument("--sites", type=int, default=1000, help="sites of the metering run (d) [1000]")
    p.add_argument("--flow-sites", type=int, default=200,
                   help="meter only this many of the --sites sites (each task still reads the whole sites "
                        "file) and extrapolate linearly; 0 = all [200: 1,000 take over 15 min]")
    p.add_argument("--draws", type=int, default=10_000, help="Monte Carlo draws in (a) [10000]")
    p.add_argument("--repeat", type=int, default=3,
                   help="(a)(b) runs of carbon-sink, InVEST and the reads; the median is reported [3]")
    p.add_argument("--skip-invest", action="store_true")
    p.add_argument("--skip-flow", action="store_true")
    p.add_argument("--skip-no-reports", action="store_true", help="(d) skip the second flow run without reports")
    p.add_argument("--engine-only", action="store_true",
                   help="only (a) and (b): the engine in fresh and warm processes against the I/O floor")
    p.add_argument("--gain-loss", action="store_true",
                   help="(a) also compute_site with gain-loss (CLCD, IPCC Tier 1) on the same pair")
    p.add_argument("--gdal-cache-mb", type=int, default=64,
                   help="(c) also measure peak RSS with GDAL_CACHEMAX at this many MB; 0 skips [64]")
    p.add_argument("--invest-python", default=DEFAULT_INVEST_PYTHON)
    p.add_argument("--invest-runner", default=DEFAULT_INVEST_RUNNER)
    p.add_argument("--work", type=Path, default=generate.WORK)
    p.add_argument("--report", type=Path, help="only print the table of an earlier results.json")
    p.add_argument("--tag", default="", help="write results<tag>.json/.md instead of results.json/.md")
    a = p.parse_args()
    if a.report:
        print(report(json.loads(a.report.read_text())))
        return
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    T0 = time.perf_counter()
    R: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
               "command": "uv run python benchmarks/run.py " + " ".join(sys.argv[1:]),
               "machine": machine(), "tree": tree(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    log(f"inputs: {a.size}² patchy pair")
    pair = generate.make_pair(a.size, "patchy", work, log=log)
    R["pair"] = {k: v for k, v in pair.items() if k != "paths"}
    gen_s = pair["generate_s"] if pair.get("generate_s") else 0

    log("(b) I/O floor: reading both rasters")
    runs = [child("io", "--paths", *pair["paths"].values()) for _ in range(a.repeat)]
    R["io"] = {k: statistics.median(r[k] for r in runs) for k in ("blocks_s", "strips_s", "strips_with_masks_s")}
    R["io"]["runs_blocks_s"] = [r["blocks_s"] for r in runs]

    log("warm-up: one engine run, so the compiled kernels are in numba's on-disk cache (as after any first run)")
    bench_engine(pair, work, 100, f"{a.size}")
    log(f"(a)(c) carbon-sink compute_site on the {a.size}² pair (fresh process)")
    runs = [bench_engine(pair, work, a.draws, f"{a.size}") for _ in range(a.repeat)]
    R["engine"] = {**runs[0], "wall_s": statistics.median(r["wall_s"] for r in runs),
                   "cpu_s": statistics.median(r["cpu_s"] for r in runs), "runs_wall_s": [r["wall_s"] for r in runs],
                   "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
    log(f"    {R['engine']['runs_wall_s']} s, peak RSS {R['engine']['peak_rss_mb']:.0f} MiB")
    log("(a) the same in a warm process (a small site of the same maps first, not timed)")
    runs = [bench_engine(pair, work, a.draws, f"{a.size}", warm=True) for _ in range(a.repeat)]
    R["engine_warm"] = {"wall_s": statistics.median(r["wall_s"] for r in runs),
                        "cpu_s": statistics.median(r["cpu_s"] for r in runs), "runs_wall_s": [r["wall_s"] for r in runs]}
    log(f"    {R['engine_warm']['runs_wall_s']} s")
    if a.gain_loss:
        log(f"(a) compute_site with gain-loss on the {a.size}² pair (fresh process)")
        runs = [bench_gain_loss(pair, work, a.draws) for _ in range(max(1, a.repeat // 3))]
        R["gain_loss"] = {"wall_s": statistics.median(r["wall_s"] for r in runs), "draws": a.draws,
                          "cpu_s": statistics.median(r["cpu_s"] for r in runs), "runs_wall_s": [r["wall_s"] for r in runs],
                          "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "method": runs[0]["method"]}
        log(f"    {R['gain_loss']['runs_wall_s']} s ({R['gain_loss']['method']})")
    if a.engine_only:
        finish(R, a, work, T0, gen_s)
        return
    runs1 = [bench_engine(pair, work, a.draws, f"{a.size}", threads=1) for _ in range(a.repeat)]
    R["engine_1thread"] = {"wall_s": statistics.median(r["wall_s"] for r in runs1),
                           "runs_wall_s": [r["wall_s"] for r in runs1],
                           "peak_rss_mb": max(r["peak_rss_mb"] for r in runs1)}
    log(f"    one thread: {R['engine_1thread']['runs_wall_s']} s")
    R["memory"] = {str(a.size): {**{k: R["engine"][k] for k in ("peak_rss_mb", "rss_after_import_mb", "wall_s")},
                                 "kind": "patchy", "disk_mb": pair["disk_mb"]}}
    R["memory_capped"] = {}
    if a.gdal_cache_mb:
        log(f"(c) same with GDAL_CACHEMAX={a.gdal_cache_mb} MB")
        e = bench_engine(pair, work, a.draws, f"{a.size}", a.gdal_cache_mb)
        R["memory_capped"][str(a.size)] = {k: e[k] for k in ("peak_rss_mb", "rss_after_import_mb", "wall_s")}
        log(f"    {e['wall_s']:.1f} s, peak RSS {e['peak_rss_mb']:.0f} MiB")

    if not a.skip_invest:
        log("(a) InVEST Carbon on the same pair")
        runs = [bench_invest(pair, work, a.invest_python, a.invest_runner) for _ in range(a.repeat)]
        R["invest"] = {**runs[0], "wall_time_s": statistics.median(r["wall_time_s"] for r in runs),
                       "runs_wall_time_s": [r["wall_time_s"] for r in runs]}
        R["compare"] = compare(R["engine"], R["invest"], pair)
        log(f"    {R['invest']['runs_wall_time_s']} s; rel. diff {R['compare']['rel_diff']}")

    if a.big:
        log(f"(c) inputs: {a.big}² blocky pair")
        big = generate.make_pair(a.big, "blocky", work, log=log)
        gen_s += big["generate_s"] or 0
        log(f"(c) carbon-sink compute_site on the {a.big}² pair (fresh process)")
        e = bench_engine(big, work, a.draws, f"{a.big}")
        R["memory"][str(a.big)] = {**{k: e[k] for k in ("peak_rss_mb", "rss_after_import_mb", "wall_s")},
                                   "kind": "blocky", "disk_mb": big["disk_mb"]}
        log(f"    {e['wall_s']:.1f} s, peak RSS {e['peak_rss_mb']:.0f} MiB")
        R["big_totals"] = {"years": e["years"], "stock_change_tc": e["stock_change_tc"]}
        if a.gdal_cache_mb:
            log(f"(c) same with GDAL_CACHEMAX={a.gdal_cache_mb} MB")
            e = bench_engine(big, work, a.draws, f"{a.big}", a.gdal_cache_mb)
            R["memory_capped"][str(a.big)] = {k: e[k] for k in ("peak_rss_mb", "rss_after_import_mb", "wall_s")}
            log(f"    {e['wall_s']:.1f} s, peak RSS {e['peak_rss_mb']:.0f} MiB")

    cfg = write_flow_config(work, pair, a.sites)
    first = None
    if not a.skip_flow:
        k = min(a.flow_sites or a.sites, a.sites)
        log(f"(d) engine only: compute_config on {k} sites")
        eng = child("config", "--config", str(cfg), "--n", str(k))
        log(f"    {eng['wall_s']:.1f} s ({eng['n_failed']} failed)")
        log(f"(d) Prefect metering_run on {k} of {a.sites} sites (fresh PREFECT_HOME)")
        fl = bench_flow(cfg, k)
        log(f"    server start {fl['server_startup_s']:.1f} s, flow {fl['flow_s']:.1f} s, state {fl['state']}")
        R["flow"] = {"n_sites": a.sites, "n_run": k, "prefect": fl, "engine": eng}
        if not a.skip_no_reports:
            log("(d) the same without the per-site HTML reports (metering_run(reports=False))")
            nr = bench_flow(cfg, k, reports=False)
            log(f"    server start {nr['server_startup_s']:.1f} s, flow {nr['flow_s']:.1f} s, state {nr['state']}")
            R["flow"]["prefect_no_reports"] = nr

    from carbon.io.sites import load_sites  # noqa: PLC0415

    first = load_sites(cfg.parent / "sites.geojson")[0].site_id
    log(f"(e) Monte Carlo cost on site {first}")
    R["mc"] = child("mc", "--config", str(cfg), "--site-id", first)

    finish(R, a, work, T0, gen_s)


def finish(R: dict, a: argparse.Namespace, work: Path, T0: float, gen_s: float) -> None:
    R["generate_s"] = gen_s
    R["tree_end"] = tree()
    R["total_s"] = time.perf_counter() - T0
    text = report(R)
    R["report"] = text
    (work / f"results{a.tag}.json").write_text(json.dumps(R, indent=1, default=str))
    (work / f"results{a.tag}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
