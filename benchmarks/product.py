"""The product benchmark: what a user runs, the ``carbon-sink`` command, in fresh processes.

    uv run python benchmarks/product.py            # --quick (the default): about 9 min on 2 busy cores
    uv run python benchmarks/product.py --full     # 8000^2 pair, 1,000 sites, 3 repeats (about 23 min)
    uv run python benchmarks/product.py --big 8000 --sites 10000 --tag big   # any size
    uv run python benchmarks/product.py --report benchmarks/results/product-quick.json   # print a table again

Every figure is measured in the same run, side by side; the table at the end gives each target
with the measured figure and met / NO / not measured:

1. start-up: an analyst's single-site re-run of the demo quarry (``run --site ...`` with its
   report, on a copy of the demo configuration with its own output folder: the second of two
   re-runs), and ``validate --quick``, ``results``, ``history``, ``report``, ``export --registry
   json`` (median of ``--repeat-cli`` runs each); on an analyst's terminal (``CARBON_SINK_RUNNER=on``:
   the local runner, flows/runner.py, started by the first re-run) for the targets, and each in
   its own process (``off``: a scheduler, a pipe) beside them;
2. a large site: the full extent of the N^2 two-year pair (``--big``), ``run`` with reports
   against ``--no-reports``, the whole run's peak memory, and the big site's marginal CLI time
   (big site minus a 1 ha site on the same maps) against ``compute_site`` alone on the same site;
3. many sites: ``--sites`` small sites (1-20 ha, seeded) over a 4000^2 pair, ``run --no-reports``
   (the default: a process per core at 200 sites or more);
4. up to 1,000 of those sites (``DASK_SITES``) on ``--dask local --workers 2`` against one
   process (``--processes 0``);
5. the engine (``compute_site``, benchmarks/run.py's measurement) against the I/O floor.

Each command runs in a fresh process (the venv's ``carbon-sink`` script, as an installed wheel
runs it), its output to benchmarks/_work/product/logs/. Wall time is from start to exit;
memory is polled (every 0.2 s, psutil; PSS every 1 s) over the whole process tree (the CLI, the temporary
Prefect server, report and Dask worker processes): the peak of the summed RSS (shared pages
counted once per process, so an upper bound), the peak of the summed PSS (shared pages split),
and the largest single process (``ru_maxrss``, what ``/usr/bin/time -v`` prints). Prefect uses
its own PREFECT_HOME under benchmarks/_work/product/ (migrated by the first run, then kept, as
an analyst's is). Results: benchmarks/results/product-<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK_ROOT = HERE / "_work"  # shared with benchmarks/run.py: the generated pairs are reused
WORK = WORK_ROOT / "product"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import generate  # noqa: E402
import run as engine_bench  # noqa: E402

CLI = Path(sys.executable).parent / "carbon-sink"
DEMO = ROOT / "data" / "demo"
DEMO_SITE = "wuhan-quarry-reclaim"
COEFFICIENTS = ROOT / "data" / "coefficients" / "ipcc2019_tier1.csv"
#: Map years the catalogs give the generated pair's "current" and "future" rasters: observed
#: years (an official run refuses a map of a year after the current one).
YEARS = (2018, 2024)
MANY_PAIR = 4000
#: The pair of the 100,000-site run (``--hundred-k``): the 4000² pair (1.44 Mha) has room for about
#: 28,000 of these sites, one per grid cell of at least 600 m; the 8000² pair (5.76 Mha) for 110,000.
HUNDRED_K_PAIR = 8000
HUNDRED_K = 100_000
#: Sites of the Dask against one-process comparison (target 4: on 200 or more sites).
DASK_SITES = 1000
GIB = 1024.0  # MiB
#: Targets (docs: benchmarks/README.md).
T_RERUN_S = 3.0
T_CMD_S = 2.0
T_REPORT_SHARE = 0.5
T_BIG_RSS_MIB = 1 * GIB
T_MARGINAL_RATIO = 1.5
T_MANY_S_PER_10K = 180.0
T_MANY_S_PER_100K = 1800.0
T_MANY_RSS_MIB = 2 * GIB
T_ENGINE_IO = 1.5


#: Writes the results so far (set by ``main``), so that a run cut short keeps its figures.
SAVE: Callable[[], object] | None = None


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- measuring one command ----------------------------------------------------------------


def prefect_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(WORK / "prefect_home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
                "COLUMNS": "200"})
    return env


def measure(cmd: list[str], name: str, env: dict[str, str] | None = None, interval: float = 0.2,
            pss_every: int = 5) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process; wall time to its exit, peak memory of its process tree
    (RSS every ``interval`` s, PSS every ``pss_every`` samples: /proc/<pid>/smaps_rollup costs more)."""
    import psutil

    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    peak = {"rss": 0, "pss": 0, "procs": 0, "root": 0}
    done = threading.Event()
    with open(logs / f"{name}.out", "w") as fo, open(logs / f"{name}.err", "w") as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env or prefect_env(), cwd=WORK)

        def sample() -> None:
            root = psutil.Process(proc.pid)
            k = 0
            while not done.is_set():
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    break
                rss = pss = 0
                full = k % pss_every == 0
                for p in procs:
                    try:
                        m = p.memory_full_info() if full else p.memory_info()
                    except psutil.Error:
                        continue
                    rss += m.rss
                    pss += getattr(m, "pss", 0)
                    if p.pid == proc.pid:  # the command's own process: the flow, which holds the run
                        peak["root"] = max(peak["root"], m.rss)
                peak["rss"] = max(peak["rss"], rss)
                peak["pss"] = max(peak["pss"], pss)
                peak["procs"] = max(peak["procs"], len(procs))
                k += 1
                done.wait(interval)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        th.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    out = {"cmd": " ".join(["carbon-sink", *cmd[1:]]), "wall_s": wall, "exit": proc.returncode,
           "peak_tree_rss_mib": peak["rss"] / 2**20, "peak_tree_pss_mib": peak["pss"] / 2**20,
           "max_processes": peak["procs"], "max_single_rss_mib": ru.ru_maxrss / 1024,
           "peak_command_rss_mib": peak["root"] / 2**20,
           "cpu_s": ru.ru_utime + ru.ru_stime}
    if proc.returncode != 0:
        err = (logs / f"{name}.err").read_text()[-2000:]
        log(f"    {name}: exit {proc.returncode}: {err}")
        out["stderr_tail"] = err
    return out


def runner_env() -> dict[str, str]:
    """The environment of an analyst's terminal session: the local runner on (flows/runner.py),
    its own folder under the work folder."""
    return {**prefect_env(), "CARBON_SINK_RUNNER": "on", "CARBON_SINK_RUNNER_DIR": str(WORK / "runner"),
            "CARBON_SINK_RUNNER_IDLE": "1800"}


def runner_rss_mib() -> float | None:
    """The resident memory of the local runner and its children (Prefect's server), which the
    client's process tree does not hold."""
    import psutil

    for pid_file in (WORK / "runner").glob("*.pid"):
        try:
            root = psutil.Process(int(pid_file.read_text()))
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20
        except (OSError, ValueError, psutil.Error):
            continue
    return None


def stop_runner() -> None:
    subprocess.run([str(CLI), "runner", "stop"], env=runner_env(), capture_output=True, timeout=120)


def cli(name: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    r = measure([str(CLI), *args], name, env=env)
    log(f"    {name}: {r['wall_s']:.2f} s, exit {r['exit']}, peak tree RSS {r['peak_tree_rss_mib']:.0f} MiB")
    return r


def median_of(rs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(rs[0])
    out["runs_wall_s"] = [r["wall_s"] for r in rs]
    out["wall_s"] = statistics.median(out["runs_wall_s"])
    out["exit"] = max(r["exit"] for r in rs)
    out["peak_tree_rss_mib"] = max(r["peak_tree_rss_mib"] for r in rs)
    return out


# --- inputs -------------------------------------------------------------------------------


def write_config(path: Path, **keys: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# written by benchmarks/product.py"]
    for k, v in keys.items():
        v = str(v) if isinstance(v, Path) else v
        if not isinstance(v, str | int | float | bool):
            raise TypeError(f"configuration key {k}: only scalar values are copied, not {type(v).__name__}")
        lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def demo_copy(out: str = "out") -> Path:
    """The demo configuration with its paths made absolute and its own output folder ``out``."""
    raw = tomllib.loads((DEMO / "carbon-sink.toml").read_text())
    keys: dict[str, Any] = {}
    for k, v in raw.items():
        if k in ("sites", "landcover", "coefficients", "legends"):
            keys[k] = str((DEMO / v).resolve())
        elif k not in ("output_dir", "ledger"):
            keys[k] = v
    keys["output_dir"] = out
    return write_config(WORK / "demo" / ("carbon-sink.toml" if out == "out" else f"carbon-sink-{out}.toml"), **keys)


def write_catalog(path: Path, pair: dict) -> Path:
    lines = ["year,path,legend,source"]
    for y, p in zip(YEARS, (pair["paths"][generate.YEARS[0]], pair["paths"][generate.YEARS[1]]), strict=True):
        lines.append(f"{y},{p},clcd,synthetic benchmark (benchmarks/generate.py seed {generate.SEED})")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_sites(path: Path, crs: str, rows: list[tuple[str, Any]]) -> Path:
    import geopandas as gpd

    gdf = gpd.GeoDataFrame({"site_id": [r[0] for r in rows], "name": [f"Benchmark site {r[0]}" for r in rows],
                            "site_type": "reclaimed_mine", "ecozone": "subtropical_humid_asia",
                            "baseline_year": YEARS[0]}, geometry=[r[1] for r in rows], crs=crs)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    gdf.to_file(path, driver="GeoJSON")
    return path


def big_inputs(pair: dict) -> Path:
    """Two sites on the pair: ``big`` (its full extent) and ``tiny`` (1 ha, south-west)."""
    import shapely

    d = WORK / f"big_{pair['size']}"
    left, bottom, right, top = pair["bounds"]
    cx, cy = left + 0.25 * (right - left), bottom + 0.25 * (top - bottom)
    write_sites(d / "sites.geojson", generate.CRS, [
        ("big", shapely.box(left, bottom, right, top)),
        ("tiny", shapely.box(cx, cy, cx + 100.0, cy + 100.0)),
    ])
    write_catalog(d / "catalog.csv", pair)
    return write_config(d / "carbon-sink.toml", sites="sites.geojson", landcover="catalog.csv",
                        coefficients=str(COEFFICIENTS), output_dir="out")


def many_sites(path: Path, pair: dict, n: int, seed: int = generate.SEED + 7) -> None:
    """``n`` irregular polygons of 1-20 ha (star-shaped 10-16-gons), one per cell of a grid over
    the valid part of the map, at a random place in the cell, in a random order (seeded)."""
    import numpy as np
    import rasterio
    import shapely
    from rasterio.windows import from_bounds

    rng = np.random.default_rng(seed)
    left, bottom, right, top = pair["bounds"]
    current = rasterio.open(pair["paths"][generate.YEARS[0]])
    k = math.ceil(math.sqrt(n / 0.7))
    cell = (right - left) / k
    rows: list[tuple[str, Any]] = []
    for ci in rng.permutation(k * k):
        if len(rows) == n:
            break
        r, c = divmod(int(ci), k)
        fx, fy = (c + rng.uniform(0.3, 0.7)) / k, (r + rng.uniform(0.3, 0.7)) / k
        if fx - fy > 0.58:  # the nodata corner (x - y > 0.68 in map fractions), with a margin
            continue
        area_m2 = rng.uniform(1, 20) * 1e4
        m = int(rng.integers(10, 17))
        ang = (np.arange(m) + rng.uniform(0.15, 0.85, m)) * (2 * np.pi / m)
        rad = rng.uniform(0.7, 1.3, m)
        poly = shapely.Polygon(np.column_stack([np.cos(ang) * rad, np.sin(ang) * rad]))
        poly = shapely.affinity.scale(poly, *(2 * [math.sqrt(area_m2 / poly.area)]), origin=(0, 0))
        poly = shapely.affinity.rotate(poly, float(rng.uniform(0, 360)), origin=(0, 0))
        poly = shapely.affinity.translate(poly, left + fx * (right - left), top - fy * (top - bottom))
        poly = shapely.set_precision(poly, 0.01)
        assert poly.is_valid and poly.geom_type == "Polygon" and cell > 600
        # the corner's edge is noisy: on the 8000² pair the margin above left 11 of 100,000 sites
        # wholly in nodata (none on the 4000² pair, whose sets this check leaves as they were)
        box = current.read(1, window=from_bounds(*poly.bounds, transform=current.transform), boundless=True,
                           fill_value=current.nodata)
        if (box == current.nodata).all():
            continue
        rows.append((f"s{len(rows) + 1:05d}", poly))
    current.close()
    if len(rows) < n:
        raise RuntimeError(f"only {len(rows)} of {n} sites placed")
    write_sites(path, generate.CRS, rows)


def many_inputs(pair: dict, n: int) -> Path:
    d = WORK / (f"many_{n}" if pair["size"] == MANY_PAIR else f"many_{n}_{pair['size']}")
    sites = d / "sites.geojson"
    stamp = d / "sites.json"
    params = {"n": n, "pair": pair["size"], "seed": generate.SEED + 7, "version": 2}
    if not (sites.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == params):
        d.mkdir(parents=True, exist_ok=True)
        many_sites(sites, pair, n)
        stamp.write_text(json.dumps(params))
    write_catalog(d / "catalog.csv", pair)
    return write_config(d / "carbon-sink.toml", sites="sites.geojson", landcover="catalog.csv",
                        coefficients=str(COEFFICIENTS), output_dir="out")


# --- the engine alone, in a fresh process (``product.py _engine``) -------------------------


def child_engine(config: str, site_id: str) -> None:
    """compute_site on one site of a configuration, as the metering run calls it (inputs read
    before the clock starts); prints one JSON line."""
    import resource

    from carbon.io.config import load_config
    from carbon.pipeline.loop import site_inputs
    from carbon.pipeline.site import compute_site

    cfg = load_config(config)
    site, catalog, coefficients = site_inputs(cfg, site_id)
    t0 = time.perf_counter()
    r = compute_site(site, catalog, coefficients, legends_dir=cfg.legends, draws=cfg.monte_carlo_draws,
                     conservative_rule=cfg.conservative_rule, sd_defaults=cfg.sd_defaults, limits=cfg.site_limits)
    wall = time.perf_counter() - t0
    print("BENCH-JSON " + json.dumps({
        "wall_s": wall, "method": str(r.sinks["method"].iloc[0]), "area_ha": float(r.provenance["site_area_ha"]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def child_prefect() -> None:
    """A no-op Prefect flow: what any ``carbon-sink run`` pays before its first site (the
    import of Prefect, the start of its temporary local server)."""
    t0 = time.perf_counter()
    from prefect import flow

    @flow(name="bench-noop")
    def noop() -> int:
        return 1

    t1 = time.perf_counter()
    noop()
    print("BENCH-JSON " + json.dumps({"import_s": t1 - t0, "flow_s": time.perf_counter() - t1}), flush=True)


def engine_in_process(config: Path, site_id: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "_engine", str(config), site_id], capture_output=True, text=True,
                          cwd=ROOT)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH-JSON ")), None)
    if proc.returncode != 0 or line is None:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise RuntimeError("engine measurement failed")
    return json.loads(line[len("BENCH-JSON "):])


# --- the steps ----------------------------------------------------------------------------


def step_startup(R: dict, a: argparse.Namespace) -> None:
    cfg = demo_copy()
    d = cfg.parent
    shutil.rmtree(d / "out", ignore_errors=True)
    fresh_prefect = not (WORK / "prefect_home").exists()
    S: dict[str, Any] = {"config": str(cfg), "fresh_prefect_home": fresh_prefect}
    rerun = ["run", "--config", str(cfg), "--site", DEMO_SITE]
    log("(1) start-up, each command in its own process (CARBON_SINK_RUNNER=off: a scheduler, a pipe): a warm-up "
        "re-run of the demo quarry, then two in a row, with reports")
    S["warmup"] = cli("demo-warmup", *rerun, "--no-reports")
    S["help"] = cli("demo-help", "--help")
    S["rerun"] = [cli(f"demo-rerun-{i}", *rerun) for i in (1, 2)]
    S["rerun_no_reports"] = cli("demo-rerun-noreports", *rerun, "--no-reports")

    def commands(tag: str, env: dict[str, str] | None, cfg: Path) -> dict[str, Any]:
        export_dir = cfg.parent / f"export{tag}"
        cmds = {
            "validate --quick": ["validate", "--config", str(cfg), "--quick"],
            "results": ["results", "--config", str(cfg)],
            "history --site": ["history", "--config", str(cfg), "--site", DEMO_SITE],
            "report --site": ["report", "--config", str(cfg), "--site", DEMO_SITE],
            # (a second export of the same vintages is refused: each repeat exports the next year alone)
            "export --registry json": ["export", "--config", str(cfg), "--registry", "json", "--out", str(export_dir),
                                       "--site", DEMO_SITE],
        }
        found = {}
        for label, args in cmds.items():
            runs = []
            for i in range(a.repeat_cli):
                shutil.rmtree(export_dir, ignore_errors=True)
                extra = ["--period", f"{2018 + i}:{2019 + i}"] if args[0] == "export" else []
                runs.append(cli(f"demo-{tag}{args[0]}-{i + 1}", *args, *extra, env=env))
            found[label] = median_of(runs)
        return found

    S["commands"] = commands("", None, cfg)
    log("(1) the same on an analyst's terminal (CARBON_SINK_RUNNER=on), its own output folder: the first re-run "
        "starts the local runner, the second is the target; then the commands")
    stop_runner()
    renv = runner_env()
    cfg = demo_copy("out_runner")
    shutil.rmtree(cfg.parent / "out_runner", ignore_errors=True)
    rerun = ["run", "--config", str(cfg), "--site", DEMO_SITE]
    S["runner_first"] = cli("demo-runner-rerun-1", *rerun, env=renv)
    S["runner_rerun"] = cli("demo-runner-rerun-2", *rerun, env=renv)
    S["runner_rerun_no_reports"] = cli("demo-runner-rerun-noreports", *rerun, "--no-reports", env=renv)
    S["runner_commands"] = commands("runner-", renv, cfg)
    S["runner_rss_mib"] = runner_rss_mib()
    stop_runner()
    log("(1) a no-op Prefect flow, fresh process (the same PREFECT_HOME)")
    S["prefect_noop"] = measure([sys.executable, __file__, "_prefect"], "demo-prefect-noop")
    line = next((ln for ln in (WORK / "logs" / "demo-prefect-noop.out").read_text().splitlines()
                 if ln.startswith("BENCH-JSON ")), None)
    S["prefect_noop"]["parts"] = json.loads(line[len("BENCH-JSON "):]) if line else None
    log(f"    {S['prefect_noop']['wall_s']:.2f} s")
    log("(1) engine alone: compute_site on the demo site, fresh process")
    S["engine"] = engine_in_process(cfg, DEMO_SITE)
    log(f"    {S['engine']['wall_s']:.2f} s")
    R["startup"] = S


def step_big(R: dict, a: argparse.Namespace) -> dict:
    log(f"(2) large site: inputs, {a.big}² pair")
    pair = generate.make_pair(a.big, "patchy", WORK_ROOT, log=log)
    cfg = big_inputs(pair)
    shutil.rmtree(cfg.parent / "out", ignore_errors=True)
    B: dict[str, Any] = {"size": a.big, "config": str(cfg), "disk_mb": pair["disk_mb"]}
    log("(2) warm-up: the 1 ha site, no reports (fresh output folder: the ledger, the rasters' hashes)")
    B["warmup"] = cli(f"big{a.big}-warmup", "run", "--config", str(cfg), "--site", "tiny", "--no-reports")
    B["tiny_no_reports"] = cli(f"big{a.big}-tiny", "run", "--config", str(cfg), "--site", "tiny", "--no-reports")
    B["no_reports"] = cli(f"big{a.big}-noreports", "run", "--config", str(cfg), "--site", "big", "--no-reports")
    B["reports"] = cli(f"big{a.big}-reports", "run", "--config", str(cfg), "--site", "big")
    log("(2) engine alone: compute_site on the big site, fresh process")
    B["engine"] = engine_in_process(cfg, "big")
    log(f"    {B['engine']['wall_s']:.2f} s")
    R["big"] = B
    return pair


def step_many(R: dict, a: argparse.Namespace) -> None:
    log(f"(3) many sites: inputs, {a.sites} sites over the {MANY_PAIR}² pair")
    pair = generate.make_pair(MANY_PAIR, "patchy", WORK_ROOT, log=log)
    cfg = many_inputs(pair, a.sites)
    M: dict[str, Any] = {"n": a.sites, "pair": MANY_PAIR, "config": str(cfg)}
    from carbon.io.sites import load_sites

    areas = [s.geometry.area / 1e4 for s in load_sites(cfg.parent / "sites.geojson")]
    M["area_ha"] = {"min": min(areas), "mean": statistics.mean(areas), "max": max(areas)}
    out = cfg.parent / "out_default"
    shutil.rmtree(out, ignore_errors=True)
    # the product's default: a process per core for a run of 200 sites or more (flows/metering.py)
    M["default"] = cli(f"many{a.sites}-default", "--output", str(out), "run", "--config", str(cfg), "--no-reports")
    R["many"] = M
    if SAVE is not None:
        SAVE()
    if a.skip_dask:
        M["dask_skipped"] = "--skip-dask"
        return
    if a.sites < 200:
        M["dask_skipped"] = f"N = {a.sites} < 200"
        return
    # target 4 against one process (threads, --processes 0), at up to DASK_SITES sites
    n4 = min(a.sites, DASK_SITES)
    cfg4 = cfg if n4 == a.sites else many_inputs(pair, n4)
    M["n4"] = n4
    for key, extra in (("serial", ["--processes", "0"]), ("dask", ["--dask", "local", "--workers", "2"])):
        out = cfg4.parent / f"out_{key}"
        shutil.rmtree(out, ignore_errors=True)
        M[key] = cli(f"many{n4}-{key}", "--output", str(out), "run", "--config", str(cfg4), "--no-reports", *extra)
        R["many"] = M
        if SAVE is not None:
            SAVE()


def step_hundred_k(R: dict, a: argparse.Namespace) -> None:
    """Step 3's 100,000-site target: the same kind of sites over the 8000² pair (the 4000² pair
    has no room for them), ``run --no-reports`` by default, a fresh output folder."""
    log(f"(3) {HUNDRED_K:,} sites over the {HUNDRED_K_PAIR}² pair")
    pair = generate.make_pair(HUNDRED_K_PAIR, "patchy", WORK_ROOT, log=log)
    cfg = many_inputs(pair, HUNDRED_K)
    from carbon.io.sites import load_sites

    areas = [s.geometry.area / 1e4 for s in load_sites(cfg.parent / "sites.geojson")]
    H: dict[str, Any] = {"n": HUNDRED_K, "pair": HUNDRED_K_PAIR, "config": str(cfg),
                         "area_ha": {"min": min(areas), "mean": statistics.mean(areas), "max": max(areas)}}
    out = cfg.parent / "out_default"
    shutil.rmtree(out, ignore_errors=True)
    H["default"] = cli(f"many{HUNDRED_K}-default", "--output", str(out), "run", "--config", str(cfg), "--no-reports")
    R["hundred_k"] = H


def step_engine(R: dict, a: argparse.Namespace, pair: dict) -> None:
    log(f"(5) engine vs I/O floor on the {pair['size']}² pair (benchmarks/run.py's measurement), "
        f"{a.repeat} run(s)")
    runs = [engine_bench.bench_engine(pair, WORK_ROOT, 10_000, str(pair["size"])) for _ in range(a.repeat)]
    io = [engine_bench.child("io", "--paths", *map(str, pair["paths"].values())) for _ in range(a.repeat)]
    R["engine"] = {"size": pair["size"], "runs_wall_s": [r["wall_s"] for r in runs],
                   "wall_s": statistics.median(r["wall_s"] for r in runs),
                   "io_runs_s": [r["blocks_s"] for r in io], "io_s": statistics.median(r["blocks_s"] for r in io),
                   "method": runs[0].get("method")}
    log(f"    engine {R['engine']['runs_wall_s']} s, I/O floor {R['engine']['io_runs_s']} s")


# --- the table ----------------------------------------------------------------------------


def met(ok: bool | None) -> str:
    return "not measured" if ok is None else ("yes" if ok else "**NO**")


def ran(r: dict | None, ok_exits: tuple[int, ...] = (0,)) -> bool:
    """The command ran to its end: exit 0 (or, for ``validate``, 1: it found problems, a full answer)."""
    return bool(r) and r.get("exit") in ok_exits


def many_memory(r: dict) -> str:
    """A many-site run's memory: the tree, its PSS, the largest process and the command's own
    (recorded since the command's process holds a few hundred bytes a site instead of their inputs)."""
    own = f"; {r['peak_command_rss_mib']:.0f} MiB" if "peak_command_rss_mib" in r else ""
    return (f"{r['peak_tree_rss_mib']:.0f} MiB ({r['peak_tree_pss_mib']:.0f} MiB; {r['max_single_rss_mib']:.0f} MiB"
            f"{own})")


def report(R: dict) -> str:
    m = R["machine"]
    lines = [f"carbon-sink product benchmark — {R['mode']} — {R['started']} — {m['cores']} cores ({m['cpu']}), "
             f"{m['ram_gb']} GB RAM, load average {R['load_start'][0]:.2f} at the start, {R['load_end'][0]:.2f} at "
             "the end",
             f"command: {R['command']}",
             f"code: {R['tree']['head'][:72]}" + (" (+ uncommitted: " + R["tree"]["dirty"].replace("\n", ", ") + ")"
                                             if R["tree"]["dirty"] else ""),
             f"total: {R['total_s'] / 60:.1f} min", "",
             "| # | measure | value | target | met |", "|---|---|---|---|---|"]
    add = lines.append

    def row(num: str, what: str, value: str, target: str = "", ok: bool | None | str = "") -> None:
        add(f"| {num} | {what} | {value} | {target} | {ok if isinstance(ok, str) else met(ok)} |")

    def secs(r: dict) -> str:
        return f"{r['wall_s']:.2f} s" + ("" if r["exit"] == 0 else f" (exit {r['exit']})")

    S = R.get("startup")
    if S:
        w = S["warmup"]
        row("1", f"warm-up: `run --site {DEMO_SITE} --no-reports`, fresh output folder"
            + (", fresh PREFECT_HOME (migrated)" if S["fresh_prefect_home"] else ""), secs(w))
        if "runner_rerun" in S:
            f1, r2 = S["runner_first"], S["runner_rerun"]
            row("1", f"**on a terminal** (local runner): `run --site {DEMO_SITE}` with its report, 2nd of two "
                f"re-runs (1st, which starts the runner: {f1['wall_s']:.2f} s)",
                f"{secs(r2)} (client CPU {r2['cpu_s']:.1f} s)", f"≤ {T_RERUN_S:g} s",
                r2["wall_s"] <= T_RERUN_S if ran(r2) else None)
            if S.get("runner_rss_mib"):
                row("1", "diagnostic: resident memory of the local runner and Prefect's server it keeps (not in the "
                    "client's process tree above)", f"{S['runner_rss_mib']:.0f} MiB")
            rn = S["runner_rerun_no_reports"]
            row("1", "the same with `--no-reports`", secs(rn), f"≤ {T_RERUN_S:g} s",
                rn["wall_s"] <= T_RERUN_S if ran(rn) else None)
            for label, r in S["runner_commands"].items():
                runs = "" if len(r["runs_wall_s"]) == 1 else " (runs " + ", ".join(
                    f"{t:.2f}" for t in r["runs_wall_s"]) + ")"
                ok_exits = (0, 1) if label.startswith("validate") else (0,)
                row("1", f"on a terminal (local runner): `{label}`", f"{secs(r)}{runs}", f"≤ {T_CMD_S:g} s",
                    r["wall_s"] <= T_CMD_S if ran(r, ok_exits) else None)
        r1, r2 = S["rerun"]
        row("1", f"each command in its own process (no runner: a scheduler, a pipe): `run --site {DEMO_SITE}` with "
            f"its report, 2nd of two re-runs (1st: {r1['wall_s']:.2f} s)",
            f"{secs(r2)} (CPU {r2['cpu_s']:.1f} s, peak tree RSS {r2['peak_tree_rss_mib']:.0f} MiB)", "diagnostic")
        if "rerun_no_reports" in S:
            row("1", "its own process, `--no-reports`", secs(S["rerun_no_reports"]), "diagnostic")
        for label, r in S["commands"].items():
            runs = "" if len(r["runs_wall_s"]) == 1 else " (runs " + ", ".join(f"{t:.2f}" for t in r["runs_wall_s"]) + ")"
            row("1", f"its own process: `{label}`" + ("" if len(r["runs_wall_s"]) == 1 else
                                                      f" (median of {len(r['runs_wall_s'])})"),
                f"{secs(r)}{runs}", "diagnostic")
        if "help" in S:
            row("1", "diagnostic: `carbon-sink --help` (the interpreter and Typer)", secs(S["help"]))
        if "prefect_noop" in S:
            row("1", "diagnostic: a no-op Prefect flow in a fresh process (import, temporary server start, "
                "the same PREFECT_HOME)", secs(S["prefect_noop"]) + (
                    f" (import {parts['import_s']:.1f} s, server start and flow {parts['flow_s']:.1f} s)"
                    if (parts := S["prefect_noop"].get("parts")) else ""))
        if "engine" in S:
            row("1", f"diagnostic: `compute_site` alone on {DEMO_SITE} (fresh process, inputs read)",
                f"{S['engine']['wall_s']:.2f} s")
    B = R.get("big")
    if B:
        n = B["size"]
        nr, wr, tiny, eng = B["no_reports"], B["reports"], B["tiny_no_reports"], B["engine"]
        row("2", f"`run --site big --no-reports`, {n}² pair, site = full extent ({eng['area_ha']:,.0f} ha, "
            f"{eng['method']})", f"{secs(nr)} (peak tree RSS {nr['peak_tree_rss_mib']:.0f} MiB)")
        row("2", "`run --site big` (with its report)", f"{secs(wr)}")
        ok_both = ran(nr) and ran(wr)
        cost = wr["wall_s"] - nr["wall_s"]
        row("2", "report cost = with − without reports, against the metering time (without)",
            f"{cost:.2f} s = {cost / nr['wall_s']:.2f} × {nr['wall_s']:.2f} s", f"≤ {T_REPORT_SHARE:g} ×",
            cost <= T_REPORT_SHARE * nr["wall_s"] if ok_both else None)
        row("2", "peak memory of the run with reports: process tree, summed RSS (PSS; largest process)",
            f"{wr['peak_tree_rss_mib']:.0f} MiB ({wr['peak_tree_pss_mib']:.0f} MiB; {wr['max_single_rss_mib']:.0f} "
            f"MiB), {wr['max_processes']} processes", f"≤ {T_BIG_RSS_MIB:.0f} MiB (RSS)",
            wr["peak_tree_rss_mib"] <= T_BIG_RSS_MIB if ran(wr) else None)
        marg = nr["wall_s"] - tiny["wall_s"]
        row("2", "marginal CLI time of the big site (big − 1 ha site, both `--no-reports`) against `compute_site` "
            "alone (fresh process, inputs read)",
            f"{marg:.2f} s ({nr['wall_s']:.2f} − {tiny['wall_s']:.2f}) = {marg / eng['wall_s']:.2f} × "
            f"{eng['wall_s']:.2f} s", f"≤ {T_MARGINAL_RATIO:g} ×",
            marg <= T_MARGINAL_RATIO * eng["wall_s"] if ran(nr) and ran(tiny) else None)
    M = R.get("many")
    if M:
        n = M["n"]
        s = M.get("default") or M["serial"]  # (results files before the process pool: one process)
        how = "a process per core, the default at 200 sites or more" if "default" in M else "one process"
        target_s = T_MANY_S_PER_10K * n / 10_000
        scaled = "" if n == 10_000 else f" (180 s × {n:,}/10,000: scaled linearly)"
        ar = M["area_ha"]
        row("3", f"`run --no-reports` ({how}), {n:,} sites ({ar['min']:.1f}-{ar['max']:.1f} ha, mean "
            f"{ar['mean']:.1f}) over the {M['pair']}² pair, fresh output folder",
            f"{secs(s)} ({s['wall_s'] / n:.3f} s/site)", f"≤ {target_s:.1f} s{scaled}",
            s["wall_s"] <= target_s if ran(s) else None)
        row("3", "peak memory of that run: process tree, summed RSS (PSS; largest process; the command's own, "
            "which holds the run)", many_memory(s),
            f"≤ {T_MANY_RSS_MIB:.0f} MiB at 10,000 sites" + ("" if n == 10_000 else f"; not scaled: checked at {n:,}"),
            (s["peak_tree_rss_mib"] <= T_MANY_RSS_MIB if ran(s) else None) if n == 10_000 else
            (f"yes at {n:,} sites; 10,000 not measured" if ran(s) and s["peak_tree_rss_mib"] <= T_MANY_RSS_MIB
             else met(False if ran(s) else None)))
    H = R.get("hundred_k")
    if H:
        h = H["default"]
        ah = H["area_ha"]
        row("3", f"`run --no-reports` (a process per core), {H['n']:,} sites ({ah['min']:.1f}-{ah['max']:.1f} ha, "
            f"mean {ah['mean']:.1f}) over the {H['pair']}² pair, fresh output folder",
            f"{secs(h)} = {h['wall_s'] / 60:.1f} min ({h['wall_s'] / H['n']:.3f} s/site)",
            f"≤ {T_MANY_S_PER_100K / 60:.0f} min", h["wall_s"] <= T_MANY_S_PER_100K if ran(h) else None)
        row("3", f"peak memory of the {H['n']:,}-site run: process tree, summed RSS (PSS; largest process; the "
            "command's own)", many_memory(h),
            "diagnostic (memory should not grow with the sites)")
    elif M:
        s = M.get("default") or M["serial"]
        est = (f"linear estimate from the {M['n']:,}-site run: {s['wall_s'] * HUNDRED_K / M['n'] / 60:.0f} min"
               if ran(s) else "no estimate")
        row("3", f"{HUNDRED_K:,} sites (`--hundred-k`)", f"not run ({est})",
            f"≤ {T_MANY_S_PER_100K / 60:.0f} min", None)
    if M:
        dk = M.get("dask")
        one = M.get("serial") if "default" in M else None
        n4 = M.get("n4", n)
        if dk and one is None:  # an older results file: Dask against the one-process default
            one = s
        if dk and one is not None:
            row("4", f"{n4:,} sites, `--dask local --workers 2` against one process (`--processes 0`), fresh output "
                "folders", f"{secs(dk)} against {one['wall_s']:.2f} s = {dk['wall_s'] / one['wall_s']:.2f} × "
                f"(peak tree RSS {dk['peak_tree_rss_mib']:.0f} MiB)", "faster than one process",
                dk["wall_s"] < one["wall_s"] if ran(dk) and ran(one) else None)
            if "default" in M and n4 == n:
                row("4", f"diagnostic: the default (a process per core) at {n:,} sites against one process",
                    f"{s['wall_s']:.2f} s = {s['wall_s'] / one['wall_s']:.2f} × {one['wall_s']:.2f} s")
        else:
            why = f"skipped ({M['dask_skipped']})" if "dask_skipped" in M else "not run (the run ended before it)"
            row("4", "Dask", why, "faster than one process", None)
    E = R.get("engine")
    if E:
        ratio = E["wall_s"] / E["io_s"]
        runs = ", ".join(f"{t:.2f}" for t in E["runs_wall_s"])
        row("5", f"engine `compute_site` ({E['method']}, 10,000 draws) on the {E['size']}² pair against the I/O floor "
            "(benchmarks/run.py a, b)", f"{E['wall_s']:.2f} s (runs {runs}) / {E['io_s']:.2f} s = {ratio:.1f} ×",
            f"≤ {T_ENGINE_IO:g} ×", ratio <= T_ENGINE_IO)
    for key, num, label in (("startup", "1", "start-up"), ("big", "2", "large site"), ("many", "3-4", "many sites"),
                            ("engine", "5", "engine")):
        if key not in R:
            row(num, label, "not run" + (f" ({R['skipped'][key]})" if key in R.get("skipped", {}) else ""), "", None)
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_engine":
        child_engine(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_prefect":
        child_prefect()
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the default: --big 4000 --sites 200 --repeat 1")
    mode.add_argument("--full", action="store_true", help="the target sizes: --big 8000 --sites 1000 --repeat 3")
    p.add_argument("--big", type=int, help="size N of the N² pair of the large-site and engine steps (2, 5)")
    p.add_argument("--sites", type=int, help="how many small sites in steps 3 and 4 (the target is for 10,000)")
    p.add_argument("--repeat", type=int, help="engine and I/O floor runs (step 5), median reported")
    p.add_argument("--repeat-cli", type=int, help="runs of each 2-s command (step 1), median reported (quick 1, "
                   "full 3)")
    p.add_argument("--hundred-k", action="store_true", help=f"also {HUNDRED_K:,} sites over the {HUNDRED_K_PAIR}² pair "
                   "(step 3's 100,000-site target; about an hour on 2 cores)")
    for s in ("startup", "big", "many", "dask", "engine"):
        p.add_argument(f"--skip-{s}", action="store_true")
    p.add_argument("--tag", help="results file benchmarks/results/product-<tag>.json (default: quick or full)")
    p.add_argument("--report", type=Path, help="print the table of an earlier results file and exit")
    a = p.parse_args()
    if a.report:  # the table again, drawn from the stored runs by this code's rows
        stored = json.loads(a.report.read_text())
        try:
            print(report(stored))
        except (KeyError, TypeError):  # a results file older than the rows: its own table
            print(stored["report"])
        return
    a.big = a.big or (8000 if a.full else 4000)
    a.sites = a.sites or (1000 if a.full else 200)
    a.repeat = a.repeat or (3 if a.full else 1)
    a.repeat_cli = a.repeat_cli or (3 if a.full else 1)
    tag = a.tag or ("full" if a.full else "quick")
    if not CLI.is_file():
        sys.exit(f"no carbon-sink script beside {sys.executable}: run with `uv run python benchmarks/product.py`")
    WORK.mkdir(parents=True, exist_ok=True)
    # the venv's modules compiled as `pip install` leaves them (quick when they already are)
    import sysconfig

    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", sysconfig.get_paths()["purelib"],
                    *(str(ROOT / d) for d in ("carbon", "flows", "schemas"))], check=False, capture_output=True)
    T0 = time.perf_counter()
    R: dict[str, Any] = {"command": " ".join(["python", "benchmarks/product.py", *sys.argv[1:]]),
                         "mode": "full" if a.full else ("custom" if sys.argv[1:] and not a.quick else "quick"),
                         "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         "args": vars(a) | {"report": None}, "machine": engine_bench.machine(),
                         "tree": engine_bench.tree(), "load_start": os.getloadavg(), "skipped": {}}
    log(f"product benchmark ({tag}): big {a.big}², {a.sites} sites; work folder {WORK}")
    for s in ("startup", "big", "many", "engine"):
        if getattr(a, f"skip_{s}"):
            R["skipped"][s] = f"--skip-{s}"
    out = RESULTS / f"product-{tag}.json"

    def save(final: bool = False) -> str:
        """The results so far (a run cut short still leaves the steps it finished)."""
        R["load_end"] = os.getloadavg()
        R["tree_end"] = engine_bench.tree()
        R["total_s"] = time.perf_counter() - T0
        R["complete"] = final
        text = report(R)
        if R["tree_end"] != R["tree"]:
            text += f"\n\nnote: the code changed during the run; at the end: {R['tree_end']['head'][:72]}"
        if not final:
            text += "\n\nnote: partial results: the run has not finished"
        R["report"] = text
        RESULTS.mkdir(exist_ok=True)
        out.write_text(json.dumps(R, indent=1, default=str) + "\n")
        return text

    global SAVE
    SAVE = save
    pair = None
    if not a.skip_startup:
        step_startup(R, a)
        save()
    if not a.skip_big:
        pair = step_big(R, a)
        save()
    if not a.skip_engine:  # before the many sites, the longest step
        step_engine(R, a, pair or generate.make_pair(a.big, "patchy", WORK_ROOT, log=log))
        save()
    if not a.skip_many:
        step_many(R, a)
        save()
    if a.hundred_k:
        step_hundred_k(R, a)
    print(save(final=True))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
