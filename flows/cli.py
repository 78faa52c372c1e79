"""The ``carbon-sink`` command line: run, validate, results, history, serve.

Start-up is kept short: this module imports only Typer and rich's console at the top; each
command imports what it needs (the ledger, pandas, Prefect for ``run`` and ``serve``), so that
``--help``, ``--version``, ``results`` or ``export`` never load Prefect
(``tests/integration/test_startup.py``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from carbon.errors import CarbonSinkError

if TYPE_CHECKING:
    import pandas as pd

    from carbon.io.config import Config
    from carbon.io.ledger import Ledger

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Carbon-sink accounting: per-site carbon stocks "
                  "and sinks from annual land-cover maps, published to a ledger.")


class _Console(Console):
    """Rich's console, wrapping long lines only on a terminal: output piped or redirected (a
    log, a file, a scheduler) keeps every message and path on one line."""

    def print(self, *objects: Any, soft_wrap: bool | None = None, **kwargs: Any) -> None:  # noqa: A003
        super().print(*objects, soft_wrap=(not self.is_terminal) if soft_wrap is None else soft_wrap, **kwargs)


console = _Console(stderr=True)
out = _Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Run configuration (TOML). Default: the demo.")]
SINK_COLUMNS = ["site_id", "period_start", "period_end", "area_ha", "stock_start_tc", "stock_end_tc",
                "stock_change_tc", "sink_tco2e", "annual_sink_tco2e"]


def _prefect_defaults() -> None:
    # A first start of the embedded Prefect server migrates its database: give it time.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # nor Prefect's client: the command sends no usage data
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


_OPTIONS: dict[str, Path | None] = {"output": None}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        try:
            package = version("carbon-sink")
        except PackageNotFoundError:
            package = "0+unknown"
        try:  # the version results record: the package's plus a digest of the accounting code
            from carbon.io.outputs import code_version  # noqa: PLC0415

            code = f" (code {code_version()})"
        except Exception:  # noqa: BLE001 - the package version alone is still an answer
            code = ""
        sys.stdout.write(f"carbon-sink {package}{code}\n")
        raise typer.Exit(0)


@app.callback()
def _main(
    output: Annotated[Path | None, typer.Option("--output", help="Output folder (and default ledger) instead of the "
                                                "configuration's output_dir.")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Carbon-sink accounting: per-site carbon stocks and sinks from annual land-cover maps."""
    _OPTIONS["output"] = output


def _load(config: Path | None) -> Config:
    from carbon.io.config import load_config  # noqa: PLC0415

    try:
        return load_config(config, output_dir=_OPTIONS["output"])
    except CarbonSinkError as exc:
        _fail(exc)


#: Exit codes (README, docs/operations.md): 0 success; 1 some sites failed or problems were found;
#: 2 a usage error (Typer's own, or an option's value); 3 bad input or configuration.
EXIT_PROBLEMS, EXIT_USAGE, EXIT_INPUT = 1, 2, 3


def _fail(exc: BaseException, code: int | None = None) -> NoReturn:
    """One line on stderr, then exit: bad input or configuration (our own errors) 3, an
    option's value (ValueError) 2, anything else 1."""
    if code is None:
        code = EXIT_INPUT if isinstance(exc, CarbonSinkError) else EXIT_USAGE if isinstance(exc, ValueError) else 1
    console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
    raise typer.Exit(code)


#: At most this many sites are listed after a run (their sinks, their failures); a larger run
#: says how many, and ``carbon-sink results`` or the manifest gives each.
RUN_TABLE_MAX_SITES = 50

#: The exit codes of a run stopped by SIGTERM and by Ctrl-C (128 + the signal, as a shell reports them).
EXIT_TERMINATED, EXIT_INTERRUPTED = 143, 130


class _Terminated(BaseException):  # noqa: N818 - not an error: the command was asked to stop
    """SIGTERM arrived (``_terminable``)."""


@contextmanager
def _terminable() -> Iterator[None]:
    """SIGTERM (a scheduler's stop or time limit, ``kill``) ends a run as Ctrl-C does: through
    Python's own clean-up, so that the run's temporary Prefect server and its worker processes
    stop with it (without this, Prefect re-sends the signal to a default handler and the server
    is left running), and one line says what stays (docs/operations.md, "Stale runs")."""
    import signal  # noqa: PLC0415

    def stop(signum: int, frame: Any) -> None:
        raise _Terminated(signum)

    said = ("the sites published so far stay published; this run is marked stale by the next run "
            "(docs/operations.md, \"Stale runs\")")
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:  # a handler of its own (the local runner's)
            previous = None
        else:
            previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: nothing to install
        previous = None
    try:
        yield
    except BaseException as exc:  # ours, Ctrl-C, or Prefect's own TerminationSignal (SIGTERM had a handler)
        stop_ = _stopped_by(exc)
        if stop_ is None:
            raise
        how, code = stop_
        console.print(f"[red]stopped[/red] by {how}: {said}", highlight=False)
        raise typer.Exit(code) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stopped_by(exc: BaseException | None) -> tuple[str, int] | None:
    """The signal that stopped the command, with its exit code, if ``exc`` is one or was raised
    while one was handled (Prefect's flow engine records a stopped run as crashed on its way
    out, and what goes wrong then, e.g. a server already stopped, comes out instead)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, KeyboardInterrupt):
            return "Ctrl-C", EXIT_INTERRUPTED
        if isinstance(exc, _Terminated) or type(exc).__name__ == "TerminationSignal":
            return "SIGTERM", EXIT_TERMINATED
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _require_site(cfg: Config, site_id: str) -> None:
    """An unknown site is bad input (exit 3), naming the known sites: those the ledger has
    recorded and those of the sites file (read only when the ledger does not know the site)."""
    import sqlalchemy as sa  # noqa: PLC0415

    from carbon.errors import InputError  # noqa: PLC0415
    from carbon.io.ledger import site_runs  # noqa: PLC0415

    ledger = _ledger(cfg)
    with ledger.engine.connect() as c:
        known = {str(s) for s in c.execute(sa.select(site_runs.c.site_id).distinct()).scalars()}
    if site_id in known:
        return
    try:
        from carbon.io.sites import load_sites  # noqa: PLC0415

        known |= {s.site_id for s in load_sites(cfg.sites)}
    except CarbonSinkError:
        pass  # the ledger's sites are the known ones
    if site_id in known:
        return
    names = sorted(known)
    listed = ", ".join(names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")
    _fail(InputError(f"unknown site {site_id!r}: the known sites are {listed or 'none (empty ledger and sites file)'}"))


def _ledger(cfg: Config) -> Ledger:
    from carbon.io.ledger import Ledger, LedgerError  # noqa: PLC0415

    try:
        return Ledger(cfg.ledger_url)
    except LedgerError as exc:
        _fail(exc)


@app.command()
def run(
    config: ConfigOpt = None,
    site: Annotated[list[str] | None, typer.Option("--site", "-s", help="Re-run only this site (repeatable); "
                                                   "listed sites are always recomputed.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute sites whose inputs are unchanged.")] = False,
    maps: Annotated[bool, typer.Option("--maps/--no-maps", help="Write per-pixel stock density maps (COG).")] = False,
    method: Annotated[str | None, typer.Option("--method", help="Override every site's method: gain_loss or "
                                               "stock_difference (docs/methods.md §9).")] = None,
    reports: Annotated[bool, typer.Option("--reports/--no-reports", help="Write an HTML report per site.")] = True,
    dask: Annotated[str | None, typer.Option("--dask", help="Run the sites on Dask: a scheduler address "
                                             "(tcp://host:8786) or 'local' for a LocalCluster.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes of the local Dask cluster.")] = 2,
    processes: Annotated[int | None, typer.Option("--processes", help="Processes that meter the sites on this "
                                                  "machine (0: threads of one process; default: one per core "
                                                  "when the run has 200 sites or more).")] = None,
    years: Annotated[str | None, typer.Option("--years", help="With one --site: the map years to use, e.g. "
                                              "2018,2020,2024 (a scenario unless the site's years property).")] = None,
    start_year: Annotated[int | None, typer.Option("--start-year", help="With one --site: the start of the whole "
                                                   "period (a scenario unless the site's baseline_year).")] = None,
    coefficients: Annotated[Path | None, typer.Option("--coefficients", help="With one --site: another coefficient "
                                                      "table (a scenario).")] = None,
    scenario: Annotated[str | None, typer.Option("--scenario", help="With one --site: name the run as a scenario "
                                                 "(default: named after its parameters).")] = None,
) -> None:
    """Meter every site (the main job). With no arguments it runs the demo.

    An analyst's re-run of one site with other years, period start, coefficients or method is a
    scenario: recorded in the ledger beside the official estimate (``history``, ``results
    --scenario``), never replacing it."""
    _prefect_defaults()
    from carbon.io.outputs import OutputDirError, ensure_output_dir  # noqa: PLC0415
    from carbon.io.sites import load_sites  # noqa: PLC0415
    from carbon.rules.site import select_sites  # noqa: PLC0415

    cfg = _load(config)
    from carbon.rules.vocabulary import METHODS

    if method is not None and method not in METHODS:
        _fail(ValueError(f"--method must be one of {', '.join(METHODS)}, not {method!r}"))
    analyst = years is not None or start_year is not None or coefficients is not None or scenario is not None
    if analyst and len(site or []) != 1:
        _fail(ValueError("--years, --start-year, --coefficients and --scenario re-run one site: give exactly one --site"))
    year_list: list[int] | None = None
    if years is not None:
        try:
            year_list = sorted({int(y) for y in years.replace(";", ",").split(",") if y.strip()})
        except ValueError:
            _fail(ValueError(f"--years must be map years separated by commas (e.g. 2018,2020,2024), not {years!r}"))
    if coefficients is not None and not coefficients.is_file():
        _fail(ValueError(f"--coefficients: no such file: {coefficients}"), EXIT_INPUT)
    try:
        sites = select_sites(load_sites(cfg.sites), site)
        ensure_output_dir(cfg.output_dir)
    except (CarbonSinkError, OutputDirError) as exc:
        _fail(exc)
    _ledger(cfg)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from flows import progress  # noqa: PLC0415
    from flows.metering import (  # noqa: PLC0415
        ServerStartError,
        metering_run,
        one_api,
        processes_for,
        with_dask,
        with_processes,
    )

    if processes is not None and processes < 0:
        _fail(ValueError(f"--processes must be 0 or more, not {processes}"))
    n_procs = 0 if dask is not None or analyst else processes_for(len(sites), processes)
    if dask is not None:
        flow_fn = with_dask(None if dask == "local" else dask, workers)
    elif n_procs:
        flow_fn = with_processes(n_procs)
    else:
        flow_fn = metering_run
    if analyst:
        from flows.metering import site_run  # noqa: PLC0415

        assert site is not None

        def flow_fn(**kw: Any) -> Any:  # one site, always recomputed, as the site-run flow does it
            return site_run(site_id=site[0], config=kw["config"], years=year_list, start_year=start_year,
                            coefficients=str(coefficients.resolve()) if coefficients else None, maps=kw["maps"],
                            method=kw["method"], reports=kw["reports"], output_dir=kw["output_dir"],
                            scenario=scenario, return_state=True)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        job = bar.add_task("metering sites", total=len(sites))

        def on_site(site_id: str, status: str) -> None:
            if status != "started":
                bar.update(job, advance=1, description=f"{site_id}: {status}")

        unsubscribe = progress.subscribe(on_site)
        try:
            # worker processes (ours, or a local Dask cluster's) report to this process's server
            # (started first, in a session of its own: flows/metering.py one_api)
            with _terminable(), one_api(share=bool(n_procs) or dask is not None):
                state = flow_fn(config=str(cfg.path), site_ids=site or None, force=force or bool(site), maps=maps,
                                method=method, reports=reports, output_dir=str(cfg.output_dir), return_state=True)
        except ServerStartError as exc:
            _fail(exc)
        finally:
            unsubscribe()
    summary = state.result(raise_on_failure=False)
    if not isinstance(summary, dict):  # the run could not start (shared inputs, ledger): say why
        _fail(summary if isinstance(summary, BaseException) else RuntimeError(state.message or "metering run failed"))
    assert isinstance(summary, dict)
    ledger = _ledger(cfg)
    shown = ["site_id", "period_start", "period_end", "area_ha", "sink_tco2e", "sink_tco2e_lower90",
             "sink_tco2e_upper90", "conservative_sink_tco2e", "annual_sink_tco2e"]
    sinks = ledger.current("sinks", columns=[*shown, "is_full_period"])
    sinks = sinks[sinks["is_full_period"] & sinks["site_id"].isin([s.site_id for s in sites])]
    title = "Current full-period sinks (t CO2e; removals positive; 90% interval; conservative per AR-TOOL14)"
    if len(sinks) <= RUN_TABLE_MAX_SITES:
        _print_table(sinks[shown], title)
    else:  # a table of thousands of rows is read by no one and took 20 s a 10,000 sites to draw
        periods = ", ".join(f"{a}-{b}" for a, b in sorted(set(zip(sinks["period_start"], sinks["period_end"],
                                                                   strict=True)))[:5])
        out.print(f"{title}: {len(sinks):,} sites, {int((sinks['sink_tco2e'] > 0).sum()):,} removing and "
                  f"{int((sinks['sink_tco2e'] < 0).sum()):,} emitting (periods {periods}); each site's: carbon-sink "
                  "results (--format csv or json; --format gpkg --out FILE, a layer for QGIS)", markup=False)
    console.print(f"run {summary['run_id']}: {summary['status']}; {summary['n_sites']} sites, "
                  f"{summary['n_skipped']} unchanged, {summary['n_failed']} failed. Manifest: {summary['manifest']}", markup=False)
    if summary.get("reports"):
        console.print(f"site reports: {cfg.output_dir / 'reports'}/<site_id>/index.html", markup=False)
    if analyst and site:
        last = ledger.history(site[0]).iloc[-1]
        if last["status"] == "succeeded" and last["scenario"] is not None:
            console.print(f"site {site[0]}: scenario {last['scenario']!r} recorded beside the official estimate, which "
                          f"it does not replace; full-period sink {last['sink_tco2e']:,.2f} t CO2e "
                          f"[{last['sink_tco2e_lower90']:,.2f}, {last['sink_tco2e_upper90']:,.2f}] "
                          f"(carbon-sink results --site {site[0]} --scenario {last['scenario']!r})", markup=False)
    failures = list(summary["failures"].items())
    for site_id, error in failures[:RUN_TABLE_MAX_SITES]:
        console.print(f"[red]site {escape(site_id)} failed:[/red] {escape(str(error))}", highlight=False)
    if len(failures) > RUN_TABLE_MAX_SITES:
        console.print(f"[red]and {len(failures) - RUN_TABLE_MAX_SITES:,} more sites failed:[/red] the manifest names "
                      "each with its reason", highlight=False)
    if summary["n_failed"]:
        raise typer.Exit(1)


@app.command()
def validate(
    config: ConfigOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="Check tables and raster headers only, not pixel codes.")] = False,
    registry: Annotated[str | None, typer.Option("--registry", "-r", help="Also check the site properties an export "
                                                 "to this registry needs (ccer or verra).")] = None,
) -> None:
    """Check every input (tables, rasters, codes, coefficients); print every problem; exit 1 if any."""
    from carbon.pipeline.validate import validate_inputs
    from carbon.rules.vocabulary import REGISTRIES  # noqa: PLC0415

    if registry is not None and registry not in REGISTRIES:
        _fail(ValueError(f"--registry must be one of {', '.join(REGISTRIES)}, not {registry!r}"))
    cfg = _load(config)
    found = validate_inputs(cfg, quick=quick, registry=registry)
    for p in found.problems:
        out.print(f"[red]problem:[/red] {escape(p)}", highlight=False)
    if found.problems:
        console.print(f"{len(found.problems)} problem(s) found in {escape(str(cfg.path))}", highlight=False)
        raise typer.Exit(1)
    console.print(f"[green]ok:[/green] {escape(str(cfg.path))}: {found.n_sites} sites, {found.n_rasters} rasters, "
                  f"coefficient set {escape(str(found.coefficient_set))}; no problem found", highlight=False)


@app.command()
def results(
    config: ConfigOpt = None,
    site: Annotated[str | None, typer.Option("--site", "-s", help="Only this site.")] = None,
    stocks: Annotated[bool, typer.Option("--stocks", help="Stocks per year instead of sinks per period.")] = False,
    classes: Annotated[bool, typer.Option("--classes", help="Area per year and carbon class, mapped and adjusted "
                                          "for map error (docs/methods.md §8).")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv, json, or a GIS layer of the sites (gpkg or "
                                     "geoparquet, with --out).")] = "table",
    scenario: Annotated[str | None, typer.Option("--scenario", help="An analyst's scenario instead of the official "
                                                 "estimate (names: carbon-sink history).")] = None,
    layer_out: Annotated[Path | None, typer.Option("--out", "-o", help="The file of a gpkg or geoparquet layer: one "
                                                   "feature per site with its current full-period sink.")] = None,
) -> None:
    """Current official estimates from the ledger (the latest successful official run of each
    site), or with --scenario the latest run of that scenario."""
    from carbon.rules import dating  # noqa: PLC0415
    from carbon.rules.vocabulary import POOLS  # noqa: PLC0415

    if fmt not in ("table", "csv", "json", "gpkg", "geoparquet"):
        _fail(ValueError(f"--format must be table, csv, json, gpkg or geoparquet, not {fmt!r}"))
    if (fmt in ("gpkg", "geoparquet")) != (layer_out is not None):
        _fail(ValueError("--out goes with --format gpkg or geoparquet (a GIS layer of the sites), and they with it"))
    if layer_out is not None and (stocks or classes or scenario is not None):
        _fail(ValueError("a GIS layer holds each site's current official full-period sink: no --stocks, --classes "
                         "or --scenario"))
    cfg = _load(config)
    ledger = _ledger(cfg)
    if site is not None:
        _require_site(cfg, site)
    if layer_out is not None:
        _write_layer(cfg, ledger, site, layer_out, fmt)
        return
    if scenario is not None and scenario not in (known := ledger.scenarios()):
        _fail(ValueError(f"no scenario {scenario!r} in the ledger; scenarios: {', '.join(map(repr, known)) or 'none'}"),
              EXIT_INPUT)
    if classes:
        df = ledger.current("class_areas", site, scenario)
        cols = ["site_id", "year", "carbon_class", "area_ha", "area_adjusted_ha", "area_adjusted_ha_lower95",
                "area_adjusted_ha_upper95", "adjusted", "run_id"]
        if fmt != "table":
            cols.insert(-1, "accuracy_sample")
        title = "Area by carbon class (ha): mapped, and adjusted for map error with its 95% interval"
        if not df.empty and not df["adjusted"].any():
            console.print("note: no accuracy sample in the catalog: the adjusted areas are the mapped areas",
                          markup=False, highlight=False)
    elif stocks:
        df = ledger.current("stocks", site, scenario)
        cols = ["site_id", "year", "area_ha", "stock_tc", "stock_tc_lower90", "stock_tc_upper90", "stock_tc_u90_pct",
                *[f"stock_{p}_tc" for p in POOLS], "method", "run_id"]
        if fmt != "table":
            cols[7:7] = ["stock_tc_mean", "stock_tc_median", "stock_tc_lower95", "stock_tc_upper95",
                         "stock_tc_u95_pct", "stock_tc_u95_pct_approach1", "uncertainty_method"]
        title = "Carbon stocks (t C)"
    else:
        df = ledger.current("sinks", site, scenario)
        map_stocks = ledger.current("stocks", site, scenario)
        df = dating.with_map_gaps(df, map_stocks)
        for warning in dating.gap_warnings(df[df["is_full_period"]], map_stocks):
            console.print(f"warning: {warning}", markup=False, highlight=False)
        for site_id, method_text in df.groupby("site_id")["uncertainty_method"].first().items():
            for part in str(method_text).split("; ")[1:]:  # which SDs were defaulted or are unknown
                console.print(f"note: site {site_id}: {part}", markup=False, highlight=False)
        cols = [*SINK_COLUMNS, "map_gap_years", "sink_tco2e_lower90", "sink_tco2e_upper90", "sink_tco2e_u90_pct",
                "conservative_sink_tco2e", "is_full_period", "method", "run_id"]
        if fmt != "table":
            cols += ["sink_tco2e_mean", "sink_tco2e_median", "sink_tco2e_lower95", "sink_tco2e_upper95",
                     "sink_tco2e_u95_pct", "sink_tco2e_u95_pct_approach1", "conservative_rule", "uncertainty_method",
                     "nodata_ha", "coefficient_set"]
        title = "Sinks (t CO2e; removals positive)"
    df = df[cols]
    if fmt == "json":
        sys.stdout.write(json.dumps(json.loads(df.to_json(orient="records")), indent=2) + "\n")
    elif fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
    else:
        if df.empty:
            console.print("no results in the ledger yet: run `carbon-sink run` first", markup=False)
        _print_table(df, title)


def _write_layer(cfg: Config, ledger: Ledger, site: str | None, path: Path, fmt: str) -> None:
    from carbon.io.layers import site_layer, write_layer  # noqa: PLC0415
    from carbon.io.sites import load_sites  # noqa: PLC0415

    try:
        layer = site_layer(ledger, load_sites(cfg.sites), [site] if site else None)
        written = write_layer(layer, path, fmt)
    except CarbonSinkError as exc:
        _fail(exc)
    console.print(f"wrote {written}: {len(layer)} site(s), {layer.crs.to_string() if layer.crs else 'no CRS'}",
                  markup=False, highlight=False)


@app.command()
def history(config: ConfigOpt = None,
            site: Annotated[str, typer.Option("--site", "-s", help="The site.")] = ...,  # type: ignore[assignment]
            fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table") -> None:
    """Every version of a site, oldest first (the ledger is append-only): its map years, method,
    coefficient set, full-period sink, and whether it is the official estimate or a scenario."""
    from carbon.pipeline.versions import site_versions  # noqa: PLC0415

    if fmt not in ("table", "csv", "json"):
        _fail(ValueError(f"--format must be table, csv or json, not {fmt!r}"))
    cfg = _load(config)
    _require_site(cfg, site)
    df = _ledger(cfg).history(site)
    if df.empty:
        console.print(f"no run of site {site!r} in the ledger", markup=False)
        raise typer.Exit(1)
    versions = site_versions(df)
    if fmt == "json":
        sys.stdout.write(json.dumps(json.loads(versions.to_json(orient="records")), indent=2) + "\n")
    elif fmt == "csv":
        sys.stdout.write(versions.to_csv(index=False))
    else:
        _print_table(versions[["site_run_id", "created_at", "status", "estimate", "scenario", "years", "method",
                               "coefficient_set", "period", "sink_tco2e", "sink_tco2e_lower90", "sink_tco2e_upper90",
                               "error"]], f"History of {site}")


@app.command()
def export(
    registry: Annotated[str, typer.Option("--registry", "-r", help="ccer, verra or json.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the export file and its manifest.")],
    config: ConfigOpt = None,
    site: Annotated[list[str] | None, typer.Option("--site", "-s", help="Only this site (repeatable).")] = None,
    period: Annotated[str | None, typer.Option("--period", help="Monitoring period START:END (map years); "
                                               "default: each site's full period.")] = None,
) -> None:
    """Export current ledger results for a carbon registry, with deductions, vintages and a manifest."""
    from carbon.pipeline.export import export as run_export  # noqa: PLC0415

    cfg = _load(config)
    span = None
    if period:
        try:
            a, b = (int(x) for x in period.split(":"))
        except ValueError:
            _fail(ValueError(f"--period must be START:END in years, e.g. 2018:2024, not {period!r}"))
        span = (a, b)
    try:
        paths = run_export(cfg, registry, out, site or None, span)
    except CarbonSinkError as exc:
        _fail(exc)
    for p in paths:
        console.print(f"wrote {p}", markup=False)
    manifest = json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))
    for warning in manifest.get("warnings", []):
        console.print(f"warning: {warning}", markup=False, highlight=False)


@app.command()
def report(
    site: Annotated[str, typer.Option("--site", "-s", help="The site.")],
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder (default: <output_dir>/reports/<site>).")] = None,
    lang: Annotated[str | None, typer.Option("--lang", help="Language of the page: zh or en (default: the "
                                             "configuration's report_language, else en).")] = None,
) -> None:
    """A self-contained HTML report of a site (maps, charts, tables, provenance) from the ledger."""
    from carbon.report.i18n import LANGUAGES  # noqa: PLC0415
    from carbon.report.page import site_report  # noqa: PLC0415

    if lang is not None and lang not in LANGUAGES:
        raise typer.BadParameter(f"must be {' or '.join(LANGUAGES)}, not {lang!r}", param_hint="--lang")
    cfg = _load(config)
    _require_site(cfg, site)
    try:
        page = site_report(cfg, site, out, lang=lang)
    except CarbonSinkError as exc:
        _fail(exc)
    console.print(f"wrote {page}", markup=False)


@app.command()
def serve(config: ConfigOpt = None,
          cron: Annotated[str, typer.Option("--cron", help="Schedule (cron, UTC).")] = "0 2 1 * *",
          name: Annotated[str, typer.Option("--name", help="Name of the scheduled metering deployment.")] = "monthly-metering") -> None:
    """Serve the deployments until stopped: metering-run on a schedule (monthly by default),
    site-run and registry-export on demand (docs/operations.md)."""
    _prefect_defaults()
    cfg = _load(config)
    import prefect  # noqa: PLC0415

    served = deployments(str(cfg.path), cron=cron, name=name)
    console.print(f"serving deployments {', '.join(f'{d.flow_name}/{d.name}' for d in served)} (metering-run on cron "
                  f"{cron!r}) with config {cfg.path}", markup=False, highlight=False)
    prefect.serve(*served)


#: Names of the on-demand deployments ``serve`` serves (prefect.yaml deploys the same).
SITE_RUN_DEPLOYMENT = "site-rerun"
EXPORT_DEPLOYMENT = "registry-export"


def deployments(config: str, cron: str = "0 2 1 * *", name: str = "monthly-metering") -> list[Any]:
    """The deployments ``serve`` serves (and prefect.yaml defines): the scheduled ``metering-run``
    (``name`` on ``cron``, UTC), and, run on demand with parameters, ``site-run`` (``site_id``,
    ``years``, ``start_year``, ``coefficients``...) and ``registry-export`` (``registry``,
    ``out``, ``site_ids``, ``period``); each with ``config``. Built here, above the two flow
    modules, which do not import each other."""
    from flows.export import registry_export  # noqa: PLC0415
    from flows.metering import metering_run, site_run  # noqa: PLC0415

    return [
        metering_run.to_deployment(name=name, cron=cron, parameters={"config": config},
                                   description="Meter every site; unchanged sites are skipped."),
        site_run.to_deployment(name=SITE_RUN_DEPLOYMENT, parameters={"config": config},
                               description="Re-run one site (site_id) with an analyst's parameters."),
        registry_export.to_deployment(name=EXPORT_DEPLOYMENT, parameters={"config": config},
                                      description="Export current results for a registry (registry, out)."),
    ]


ledger_app = typer.Typer(no_args_is_help=True, help="The ledger database: its schema revision.")
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("upgrade")
def ledger_upgrade(config: ConfigOpt = None) -> None:
    """Upgrade the ledger (SQLite or PostgreSQL) in place to this carbon-sink's schema revision."""
    from carbon.io.ledger import LedgerError, upgrade  # noqa: PLC0415

    cfg = _load(config)
    try:
        before, after = upgrade(cfg.ledger_url)
    except LedgerError as exc:
        _fail(exc)
    url = _ledger_name(cfg)
    if before == after:
        console.print(f"ledger {url} is at revision {after} already: nothing to do", markup=False, highlight=False,
                      soft_wrap=True)
    else:
        console.print(f"ledger {url} upgraded from revision {before or '(empty)'} to {after}", markup=False,
                      highlight=False, soft_wrap=True)


def _ledger_name(cfg: Config) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    return make_url(cfg.ledger_url).render_as_string(hide_password=True)


@app.command()
def verify(
    config: ConfigOpt = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Recompute this run's sites (default: the run that "
                                               "finished last).")] = None,
    chain_only: Annotated[bool, typer.Option("--chain-only", help="Check the hash chain only; recompute "
                                             "nothing.")] = False,
) -> None:
    """Check the ledger's hash chain against its tables, then recompute a run's sites from their
    inputs and compare; print every difference; exit 1 if any."""
    from carbon.pipeline.verify import verify_chain, verify_run  # noqa: PLC0415

    cfg = _load(config)
    _ledger(cfg)
    try:
        chain = verify_chain(cfg.ledger_url)
        recomputed = None if chain_only else verify_run(cfg, run_id)
    except CarbonSinkError as exc:
        _fail(exc)
    for line in chain.lines():
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if recomputed is not None:
        for line in recomputed.lines():
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    n = len(chain.problems) + (len(recomputed.differences) if recomputed is not None else 0)
    if n:
        console.print(f"{n} difference(s) found in ledger {_ledger_name(cfg)}", markup=False, highlight=False,
                      soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"ok: ledger {_ledger_name(cfg)}: the chain is intact"
                  + (f" and run {recomputed.run_id} recomputes to what it published" if recomputed and recomputed.run_id
                     else ""),
                  markup=False, highlight=False, soft_wrap=True)


def _print_table(df: pd.DataFrame, title: str) -> None:
    """A table on stdout that never cuts a number: at its full width when stdout is not a
    terminal; on a terminal too narrow for it, one record per block (field, value)."""
    from rich.measure import Measurement  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    numeric = [df[c].dtype.kind in "if" for c in df.columns]
    cells = [[f"{v:,.2f}" if isinstance(v, float) else escape(str(v)) for v in row]
             for row in df.itertuples(index=False)]
    table = Table(title=title)
    for c, num in zip(df.columns, numeric, strict=True):
        table.add_column(str(c), justify="right" if num else "left", no_wrap=num, overflow="fold")
    for row in cells:
        table.add_row(*row)
    width = Measurement.get(out, out.options.update(max_width=1_000_000), table).maximum
    if width <= out.width:
        out.print(table)
    elif not out.is_terminal:  # a file or a pipe: the whole table, however wide
        Console(file=out.file, width=width, color_system=None, highlight=False).print(table)
    else:
        out.print(f"{escape(title)}: one record per block (the table is wider than the terminal; --format csv or "
                  "json gives it whole)", highlight=False, soft_wrap=False)
        for row in cells:
            block = Table.grid(padding=(0, 2))
            block.add_column(no_wrap=True)
            block.add_column(overflow="fold")
            for c, value in zip(df.columns, row, strict=True):
                block.add_row(escape(str(c)), value)
            out.print(block)
            out.print()


runner_app = typer.Typer(no_args_is_help=True, help="The local runner: a background process that keeps the "
                         "command line's libraries loaded and Prefect's server up (docs/operations.md, Start-up).")
app.add_typer(runner_app, name="runner")


@runner_app.command("start")
def runner_start() -> None:
    """Start the runner of this installation and environment (the first command on a terminal
    starts it too)."""
    from flows import runner as local  # noqa: PLC0415

    paths = local.start()
    if paths is None:
        _fail(RuntimeError(f"the runner did not start; its log: {local.runner_dir()}"), 1)
    console.print(f"runner ready: {paths['sock']} (stops after {os.environ.get(local.IDLE_VAR, '900')} s idle; "
                  "carbon-sink runner stop)", markup=False, highlight=False)


@runner_app.command("stop")
def runner_stop() -> None:
    """Stop every runner of this user."""
    from flows import runner as local  # noqa: PLC0415

    stopped = local.stop_all()
    console.print(f"{len(stopped)} runner(s) stopped", markup=False)


@runner_app.command("status")
def runner_status() -> None:
    """This user's runners: process, commands served, idle time."""
    import time  # noqa: PLC0415

    from flows import runner as local  # noqa: PLC0415

    found = local.runners()
    if not found:
        out.print("no runner (CARBON_SINK_RUNNER=" + os.environ.get(local.MODE_VAR, "auto") + ")", markup=False)
    for r in found:
        idle = f"{time.time() - r['last']:.0f} s" if "last" in r else "?"
        out.print(f"runner {r['fingerprint']}: pid {r['pid']} {'alive' if r['alive'] else 'gone'}"
                  f"{', busy' if r['busy'] else ''}{', this environment' if r['current'] else ''}; "
                  f"{r.get('commands', 0)} command(s) served, idle {idle}", markup=False, highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
