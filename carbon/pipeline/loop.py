"""The site loop: one failure policy for every caller (the Prefect flows, the public API, the
tests and the benchmarks).

A run (``start_run``) validates the inputs every site shares and records itself in the
ledger; each site is then metered by ``meter_site``: input key -> (skip if unchanged) ->
compute and validate -> write its tables -> publish them in one ledger transaction. The
key, publish and record steps are IO and are tried again on transient errors
(``with_retries``); computing never is, and bad input never is. A site that fails is
recorded with its message and fails alone (``attempt``): the other sites go on.
``finish_run`` closes the run with its manifest.
"""

from __future__ import annotations

import datetime as dt
import errno
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from carbon.errors import CarbonSinkError, InputError, OutputValidationError
from carbon.io import storage
from carbon.io.config import Config, load_config
from carbon.io.hashing import cached_sha256
from carbon.io.layers import write_run_layer
from carbon.io.ledger import Ledger, LedgerError
from carbon.io.outputs import (
    MAPS,
    REPORT_MAPS,
    code_version,
    ensure_output_dir,
    inside,
    prune_report_maps,
    write_json_streamed,
    write_site_tables,
    write_sites_tables,
)
from carbon.io.sites import load_per_version, load_sites
from carbon.io.staging import remove_staging
from carbon.io.tables import load_catalog, load_coefficients, sha256_file
from carbon.pipeline.key import keyed_plan
from carbon.pipeline.scan import DEFAULT_MAX_CELLS
from carbon.pipeline.site import compute_site
from carbon.rules import policies
from carbon.rules.coefficients import CatalogEntry, CoefficientSet
from carbon.rules.results import SiteResult
from carbon.rules.site import Site, select_sites
from schemas.outputs import validate_site_results

log = logging.getLogger(__name__)
T = TypeVar("T")

# --- the failure policy -------------------------------------------------------------------

TRANSIENT_ERRNO = {errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.EINTR, errno.EIO, errno.ECONNRESET,
                   errno.ECONNREFUSED}
#: Waits before the retries of an IO step (seconds): 2, 4, 8.
IO_RETRY_DELAYS: tuple[float, ...] = (2.0, 4.0, 8.0)
_sleep = time.sleep  # the wait between tries (a test records it)


def is_transient(exc: BaseException) -> bool:
    """Worth another try: a busy or unreachable database, a file system that hiccups; never
    bad input, a missing folder or a broken contract."""
    if isinstance(exc, LedgerError):
        return exc.transient
    if isinstance(exc, OSError):
        return exc.errno in TRANSIENT_ERRNO
    return False


def with_retries(step: Callable[..., T], *args: Any, delays: tuple[float, ...] | None = None, **kwargs: Any) -> T:
    """``step(*args, **kwargs)``, tried again after each of ``delays`` (default
    ``IO_RETRY_DELAYS``) while it fails with a transient error; any other error, or the
    last transient one, is raised as it is."""
    waits = IO_RETRY_DELAYS if delays is None else delays
    for attempt_no in range(len(waits) + 1):
        try:
            return step(*args, **kwargs)
        except Exception as exc:
            if attempt_no == len(waits) or not is_transient(exc):
                raise
            log.warning("%s failed with a transient error (%s); retry %d of %d in %g s",
                        getattr(step, "__name__", "step"), exc, attempt_no + 1, len(waits), waits[attempt_no])
            _sleep(waits[attempt_no])
    raise AssertionError("unreachable")  # pragma: no cover


def failure_message(exc: BaseException) -> str:
    """What a failed site's record and its caller say: our own errors as they are worded, an
    unforeseen one with its type (its traceback goes to the log), with any notes added to it
    (e.g. that the failure could not be recorded in the ledger)."""
    text = str(exc) if isinstance(exc, CarbonSinkError) else f"unexpected {type(exc).__name__}: {exc}"
    return "\n".join([text, *getattr(exc, "__notes__", [])])


@dataclass
class Outcome:
    """What became of one site: ``succeeded``, ``skipped`` or ``failed`` (with ``error``)."""

    site_id: str
    status: str
    error: str | None = None
    value: Any = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)


def attempt(site_id: str, step: Callable[[], T]) -> Outcome:
    """``step()`` for one site, whose failure fails that site alone."""
    try:
        return Outcome(site_id, "succeeded", value=step())
    except Exception as exc:  # noqa: BLE001 - the failure policy: the site fails alone, named
        if not isinstance(exc, CarbonSinkError):  # a bug, not bad input: say so at error level
            log.error("site %s failed with an unexpected %s: %s", site_id, type(exc).__name__, exc)
        log.debug("site %s failed", site_id, exc_info=True)  # the traceback, for a debug log
        return Outcome(site_id, "failed", error=failure_message(exc), exception=exc)


def for_each_site(site_ids: Iterable[str], step: Callable[[str], T],
                  on_status: Callable[[str, str], None] | None = None) -> list[Outcome]:
    """The site loop: ``step(site_id)`` for every site in order, each under ``attempt``."""
    outcomes = []
    for site_id in site_ids:
        if on_status is not None:
            on_status(site_id, "started")
        outcome = attempt(site_id, functools.partial(step, site_id))
        if isinstance(outcome.value, Outcome):  # the step decided the outcome (e.g. skipped)
            outcome = outcome.value
        outcomes.append(outcome)
        if on_status is not None:
            on_status(site_id, outcome.status)
    return outcomes


# --- computing sites without publishing them ----------------------------------------------


@dataclass
class RunResult:
    """Results of several sites: the ones that computed, and the error of each that failed."""

    results: dict[str, SiteResult]
    errors: dict[str, str]

    def table(self, name: str) -> pd.DataFrame:
        frames = [r.tables()[name] for r in self.results.values()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def compute_config(config: Config | str | Path | None, site_ids: list[str] | None = None, *, maps: bool = False,
                   method: str | None = None, max_cells: int = DEFAULT_MAX_CELLS) -> RunResult:
    """Validated tables for every site of a configuration (or the listed ones), published
    nowhere. Inputs shared by all sites (sites file, catalog, coefficients) must be valid or
    nothing runs; a site whose own inputs are bad fails alone and is reported."""
    cfg = config if isinstance(config, Config) else load_config(config)
    sites = {s.site_id: s for s in select_sites(load_sites(cfg.sites), site_ids)}
    catalog = load_catalog(cfg.landcover)
    coefficients = load_coefficients(cfg.coefficients)

    def step(site_id: str) -> SiteResult:
        return compute_site(
            sites[site_id], catalog, coefficients, legends_dir=cfg.legends, method=method,
            draws=cfg.monte_carlo_draws, conservative_rule=cfg.conservative_rule, sd_defaults=cfg.sd_defaults,
            maps_dir=cfg.output_dir / "maps" / site_id if maps else None, max_cells=max_cells,
            limits=cfg.site_limits,
        )

    outcomes = for_each_site(list(sites), step)
    return RunResult(results={o.site_id: o.value for o in outcomes if o.status == "succeeded"},
                     errors={o.site_id: o.error or "" for o in outcomes if o.status == "failed"})


# --- metering: computing and publishing ---------------------------------------------------


@dataclass(frozen=True)
class SiteParams:
    """How the sites of a run are computed: map years, period start and method (None: what the
    configuration and the site's properties give), maps written, recompute when unchanged."""

    years: tuple[int, ...] | None = None
    start_year: int | None = None
    method: str | None = None
    maps: bool = False
    force: bool = False
    scenario: str | None = None  # an analyst's name for the run (it is then a scenario whatever its parameters)


@dataclass(frozen=True)
class RunContext:
    """A metering run: its id, its configuration (read once), the sites it meters and the
    version of the code that meters them."""

    run_id: str
    config: Config
    site_ids: tuple[str, ...]
    code_version: str
    flow_run_id: str | None = None
    coefficients_override: str | None = None  # a coefficient set other than the configured one

    @property
    def run_dir(self) -> Path:
        return inside(self.config.output_dir, "runs", self.run_id)


def run_config(config: Config | str | Path | None, coefficients: str | Path | None = None,
               output_dir: str | Path | None = None) -> Config:
    """The configuration of a run, with its coefficient set and output folder if the run chose
    others."""
    cfg = config if isinstance(config, Config) else load_config(config, output_dir=output_dir)
    return replace(cfg, coefficients=storage.location(coefficients)) if coefficients else cfg


def start_run(config: Config | str | Path | None, site_ids: list[str] | None = None,
              coefficients: str | Path | None = None, flow_run_id: str | None = None,
              output_dir: str | Path | None = None) -> RunContext:
    """Validate the shared inputs, check the output folder and the ledger, and record the run."""
    configured = run_config(config, None, output_dir)
    cfg = run_config(configured, coefficients)
    sites = select_sites(load_sites(cfg.sites), site_ids)
    load_catalog(cfg.landcover)
    load_coefficients(cfg.coefficients)
    ensure_output_dir(cfg.output_dir)
    override = str(cfg.coefficients) if str(cfg.coefficients) != str(configured.coefficients) else None
    ctx = RunContext(run_id=str(uuid.uuid4()), config=cfg, site_ids=tuple(s.site_id for s in sites),
                     code_version=code_version(), flow_run_id=flow_run_id, coefficients_override=override)
    ledger = Ledger(cfg.ledger_url)
    for stale in ledger.mark_stale_runs():  # runs killed mid-way: marked, their temporary folders removed
        removed = remove_staging(cfg.output_dir, stale["run_id"])
        log.warning("run %s (started %s) marked stale: %s; %d temporary folder(s) removed", stale["run_id"],
                    f"{stale['started_at']:%Y-%m-%d %H:%M:%S} UTC", stale["reason"], len(removed))
    ledger.start_run(ctx.run_id, config_path=str(cfg.path), code_version=ctx.code_version, flow_run_id=flow_run_id)
    return ctx


def site_inputs(cfg: Config, site_id: str) -> tuple[Site, list[CatalogEntry], CoefficientSet]:
    """The site, the land-cover catalog and the coefficient set, each file read and validated
    once per process (sites) or thread (catalog, coefficients) and file version."""
    site = _site(load_sites(cfg.sites), site_id)
    return (site, list(load_per_version(load_catalog, cfg.landcover)),
            load_per_version(load_coefficients, cfg.coefficients))


_SITE_INDEX: dict[int, tuple[Sequence[Site], dict[str, Site]]] = {}


def _site(sites: Sequence[Site], site_id: str) -> Site:
    """A site of the (cached) sites file by its id, through an index built once per version of
    the file (a run of 10,000 sites looks each one up three times)."""
    index = _SITE_INDEX.get(id(sites))
    if index is None or index[0] is not sites:
        index = (sites, {s.site_id: s for s in sites})
        _SITE_INDEX.clear()
        _SITE_INDEX[id(sites)] = index
    found = index[1].get(site_id)
    return found if found is not None else select_sites(sites, [site_id])[0]  # the error naming the known ones


def maps_dir(ctx: RunContext, site_id: str, *, kept: bool) -> Path:
    """Where a run writes a site's density maps: ``maps`` (asked for: an output of the run) or
    ``report-maps`` (written for the site's report, which draws them; only the latest
    published run's are kept, ``finish_run``)."""
    return inside(ctx.config.output_dir, "runs", ctx.run_id, MAPS if kept else REPORT_MAPS, site_id)


def site_years(site: Site, params: SiteParams) -> list[int] | None:
    """The map years of a site run: the run's, else the site's ``years`` property, else all."""
    years = params.years or policies.configured_years(site)
    return list(years) if years else None


def site_scenario(ctx: RunContext, site_id: str, params: SiteParams) -> tuple[str | None, dict[str, Any]]:
    """(None, {}) for the site's official estimate, else (the scenario's name, its parameters)."""
    site, _, coefficients = site_inputs(ctx.config, site_id)
    return policies.scenario_of(site, coefficients, years=params.years, start_year=params.start_year,
                                method=params.method, coefficients_override=ctx.coefficients_override,
                                name=params.scenario)


def refuse_future_maps(ctx: RunContext, site_id: str, inputs: dict[str, Any]) -> None:
    """The official estimate rests on observed maps only: a catalog year after the current year
    fails the site, naming the catalog, the year and its rasters (a scenario may use it)."""
    this_year = dt.date.today().year
    future = policies.future_years([int(y) for y in inputs["years"]], this_year)
    if future:
        rows = [f"{ctx.config.landcover}: map year {y} ({', '.join(inputs['years'][str(y)]['rasters'])}) is after the "
                f"current year ({this_year})" for y in future]
        raise InputError("maps of the future cannot make the official estimate (a 2099 map would publish decades of "
                         "extrapolated growth); leave them out of the site's years, or run them as a scenario "
                         f"(carbon-sink run --site {site_id} --years ... --scenario NAME)", site_id=site_id,
                         problems=rows)


def site_key(ctx: RunContext, site_id: str, params: SiteParams) -> dict[str, Any]:
    """The content key of everything the site's result depends on, and its last published key."""
    cfg = ctx.config
    site, catalog, coefficients = site_inputs(cfg, site_id)
    ledger = Ledger(cfg.ledger_url)

    def hash_file(path: str) -> str:
        return cached_sha256(ledger, path)

    key, inputs, plan = keyed_plan(site, catalog, coefficients, cfg.legends,
                                 years=site_years(site, params), start_year=params.start_year,
                                 method=params.method, hash_file=hash_file,
                                 uncertainty={"draws": cfg.monte_carlo_draws, "rule": cfg.conservative_rule,
                                              "sd_defaults": None if cfg.sd_defaults is None else cfg.sd_defaults.key()},
                                 code=ctx.code_version, limits=cfg.site_limits)
    return {"key": key, "inputs": inputs, "last_key": ledger.last_success_key(site_id), "plan": plan}


def compute_site_result(ctx: RunContext, site_id: str, params: SiteParams, maps: bool,
                        validate: bool = True, plan: dict[int, Any] | None = None) -> SiteResult:
    """Compute a site (density maps when ``maps``: kept with the run when the run asked for
    maps, else for the report); ``validate=False`` leaves its contract check to the caller
    (a batch checks its sites together, ``meter_sites``); ``plan``: the site's plan made for its
    input key with the same parameters (``site_key``), used once."""
    cfg = ctx.config
    site, catalog, coefficients = site_inputs(cfg, site_id)
    return compute_site(site, catalog, coefficients, legends_dir=cfg.legends,
                        years=site_years(site, params), start_year=params.start_year,
                        method=params.method, draws=cfg.monte_carlo_draws,
                        conservative_rule=cfg.conservative_rule, sd_defaults=cfg.sd_defaults,
                        maps_dir=maps_dir(ctx, site_id, kept=params.maps) if maps else None,
                        limits=cfg.site_limits, validate=validate, year_plan=plan)


def site_dir_of(ctx: RunContext, site_id: str) -> Path:
    """Where a run writes a site's tables (CSV, Parquet, provenance.json)."""
    return inside(ctx.config.output_dir, "runs", ctx.run_id, "sites", site_id)


def compute_site_tables(ctx: RunContext, site_id: str, params: SiteParams, maps: bool) -> Path:
    """Compute and validate a site's tables and write them under the run's folder; returns
    the site's folder."""
    site_dir = site_dir_of(ctx, site_id)
    write_site_tables(compute_site_result(ctx, site_id, params, maps), site_dir)
    return site_dir


def _publication(ctx: RunContext, site_id: str, tables: dict[str, pd.DataFrame], key: dict[str, Any],
                 scenario: tuple[str | None, dict[str, Any]]) -> dict[str, Any]:
    inputs = key["inputs"]
    return dict(run_id=ctx.run_id, flow_run_id=ctx.flow_run_id, site_id=site_id, tables=tables,
                input_key=key["key"], inputs=inputs, coefficient_set=inputs["coefficient_set"],
                coefficient_sha256=inputs["coefficient_sha256"], code_version=ctx.code_version,
                scenario=scenario[0], parameters=scenario[1] if scenario[0] is not None else None)


def _record(ctx: RunContext, site_id: str, status: str, error: str | None = None, input_key: str | None = None,
            scenario: tuple[str | None, dict[str, Any]] = (None, {})) -> dict[str, Any]:
    return dict(run_id=ctx.run_id, flow_run_id=ctx.flow_run_id, site_id=site_id, status=status,
                code_version=ctx.code_version, error=error, input_key=input_key, scenario=scenario[0],
                parameters=scenario[1] if scenario[0] is not None else None)


def meter_site(ctx: RunContext, site_id: str, params: SiteParams, *, report_maps: bool = False) -> Outcome:
    """One site: ``meter_sites`` on a batch of one. Raises the site's error after recording it
    in the ledger; ``attempt`` turns it into the site's outcome."""
    (outcome,) = meter_sites(ctx, [site_id], params, report_maps=report_maps)
    if outcome.status == "failed":
        assert outcome.exception is not None
        raise outcome.exception
    return outcome


@dataclass
class _Computed:
    site_id: str
    key: dict[str, Any]
    scenario: tuple[str | None, dict[str, Any]]
    result: SiteResult


def meter_sites(ctx: RunContext, site_ids: list[str], params: SiteParams, *,
                report_maps: bool = False) -> list[Outcome]:
    """A batch of sites, each: input key -> (skip if unchanged) -> compute; then the computed
    sites' tables checked against their contracts together, written, and published in one
    ledger transaction, and the skipped and failed sites recorded in another. Every site's
    outcome, in order.

    A site fails alone: its bad input, its broken contract, even a ledger error on its rows
    (the batch is then published site by site) fail that site, and the ledger records it.
    ``report_maps``: also write the density maps the sites' reports draw."""
    outcomes: dict[str, Outcome] = {}
    records: list[dict[str, Any]] = []
    computed: list[_Computed] = []

    def fail(site_id: str, exc: BaseException, scenario: tuple[str | None, dict[str, Any]] = (None, {})) -> None:
        if not isinstance(exc, CarbonSinkError):  # a bug, not bad input: say so at error level
            log.error("site %s failed with an unexpected %s: %s", site_id, type(exc).__name__, exc)
        log.debug("site %s failed", site_id, exc_info=exc)
        outcomes[site_id] = Outcome(site_id, "failed", error=failure_message(exc), exception=exc)
        records.append(_record(ctx, site_id, "failed", error=failure_message(exc), scenario=scenario))

    for site_id in site_ids:
        scenario: tuple[str | None, dict[str, Any]] = (None, {})
        try:
            scenario = site_scenario(ctx, site_id, params)
            key = with_retries(site_key, ctx, site_id, params)
            if scenario[0] is None:
                refuse_future_maps(ctx, site_id, key["inputs"])
            unchanged = scenario[0] is None and key["last_key"] == key["key"]  # a scenario is always computed
            if not params.force and not params.maps and unchanged:  # maps asked for: compute
                log.info("site %s unchanged since its last published run: skipped", site_id)
                outcomes[site_id] = Outcome(site_id, "skipped", value={"input_key": key["key"]})
                records.append(_record(ctx, site_id, "skipped", input_key=key["key"]))
                continue
            result = compute_site_result(ctx, site_id, params, params.maps or report_maps, validate=False,
                                         plan=key.pop("plan"))
            computed.append(_Computed(site_id, key, scenario, result))
        except Exception as exc:  # noqa: BLE001 - the failure policy: the site fails alone, named
            fail(site_id, exc, scenario)

    broken = validate_site_results([c.result for c in computed])
    sound: list[_Computed] = []
    for c in computed:
        if c.site_id in broken:
            fail(c.site_id, OutputValidationError(f"computed tables of site {c.site_id!r} fail their contracts",
                                                  broken[c.site_id]), c.scenario)
        else:
            sound.append(c)
    placed: list[tuple[_Computed, Path]] = []
    for c in sound:
        try:
            placed.append((c, site_dir_of(ctx, c.site_id)))
        except Exception as exc:  # noqa: BLE001 - as above
            fail(c.site_id, exc, c.scenario)
    not_written = write_sites_tables([c.result for c, _ in placed], [d for _, d in placed])
    ready: list[tuple[_Computed, Path]] = []
    for c, site_dir in placed:
        if c.site_id in not_written:
            fail(c.site_id, not_written[c.site_id], c.scenario)
        else:
            ready.append((c, site_dir))

    ledger = Ledger(ctx.config.ledger_url)
    publications = [_publication(ctx, c.site_id, c.result.tables(), c.key, c.scenario) for c, _ in ready]
    try:
        ids = with_retries(ledger.publish_sites, publications) if publications else []
    except Exception as exc:  # noqa: BLE001 - one site's rows may be the cause: publish them one by one
        ids, kept = [], []
        if len(ready) == 1:
            fail(ready[0][0].site_id, exc, ready[0][0].scenario)
        else:
            log.warning("publishing %d sites together failed (%s); publishing them one by one", len(ready), exc)
            for (c, site_dir), publication in zip(ready, publications, strict=True):
                try:
                    ids.append(with_retries(ledger.publish_sites, [publication])[0])
                    kept.append((c, site_dir))
                except Exception as one:  # noqa: BLE001 - as above
                    fail(c.site_id, one, c.scenario)
        ready = kept
    for (c, site_dir), site_run_id in zip(ready, ids, strict=True):
        log.info("site %s published (site run %s%s)", c.site_id, site_run_id,
                 "" if c.scenario[0] is None else f", scenario {c.scenario[0]!r}: not the official estimate")
        outcomes[c.site_id] = Outcome(c.site_id, "succeeded", value={
            "site_run_id": site_run_id, "site_dir": str(site_dir), "input_key": c.key["key"],
            "inputs": c.key["inputs"], "scenario": c.scenario[0]})
    if records:
        try:
            with_retries(ledger.record_sites, records)
        except Exception as not_recorded:  # noqa: BLE001 - the sites' own errors are the ones to report
            for rec in records:
                o = outcomes[rec["site_id"]]
                if o.status == "failed" and o.exception is not None:
                    o.exception.add_note(f"the failure could not be recorded in the ledger: {not_recorded}")
                    o.error = failure_message(o.exception)
    return [outcomes[s] for s in site_ids]


def record_failures(ctx: RunContext, failures: dict[str, str]) -> None:
    """Sites failed outside ``meter_sites`` (their process died: carbon/pipeline/isolate.py),
    recorded in the ledger with their messages, one transaction."""
    if failures:
        with_retries(Ledger(ctx.config.ledger_url).record_sites,
                     [_record(ctx, site_id, "failed", error=error) for site_id, error in failures.items()])


def outcome_record(o: Outcome) -> dict[str, Any]:
    """An outcome as the run manifest and the flows' results show it."""
    rec: dict[str, Any] = {"site_id": o.site_id, "status": o.status}
    if o.error is not None:
        rec["error"] = o.error
    if isinstance(o.value, dict):
        rec.update(o.value)
    return rec


def batch_records(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """The records of a batch's outcomes for the run's process, without each site's ``inputs``:
    its site run in the ledger holds them (``finish_run`` reads them back for the manifest), and
    the run's process keeps a few hundred bytes a site (docs/operations.md, "Many sites")."""
    return [{k: v for k, v in outcome_record(o).items() if k != "inputs"} for o in outcomes]


#: Sites whose inputs ``finish_run`` reads from the ledger in one query (and holds at once).
MANIFEST_CHUNK = 500


def outcome_from_record(record: dict[str, Any]) -> Outcome:
    """The outcome an ``outcome_record`` describes (a record sent back by another process)."""
    rec = dict(record)
    site_id = rec.pop("site_id")
    return Outcome(site_id, rec.pop("status"), error=rec.pop("error", None), value=rec)


def finish_run(ctx: RunContext, outcomes: list[Outcome], reports: dict[str, str] | None = None) -> dict[str, Any]:
    """Close the run: its ledger status and its manifest (JSON); returns the run's summary."""
    cfg = ctx.config
    ledger = Ledger(cfg.ledger_url)
    failed = [o for o in outcomes if o.status == "failed"]
    skipped = [o for o in outcomes if o.status == "skipped"]
    status = "completed" if not failed else ("failed" if len(failed) == len(outcomes) else "partial")
    run_dir = ctx.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "run_id": ctx.run_id,
        "flow_run_id": ctx.flow_run_id,
        "config": str(cfg.path),
        "config_sha256": sha256_file(cfg.path),
        "ledger": ledger.safe_url,
        "code_version": ctx.code_version,
        "status": status,
        "reports": reports or {},
    }
    missing: list[str] = []

    def sites() -> Iterator[tuple[str, dict[str, Any]]]:  # a chunk at a time, in site order (a site named twice: once)
        ordered = sorted({o.site_id: o for o in outcomes}.values(), key=lambda o: o.site_id)
        for i in range(0, len(ordered), MANIFEST_CHUNK):
            recs = [{k: v for k, v in outcome_record(o).items() if k != "site_id"} for o in ordered[i:i + MANIFEST_CHUNK]]
            wanted = [int(r["site_run_id"]) for r in recs if r["status"] == "succeeded" and "inputs" not in r
                      and r.get("site_run_id") is not None]
            recorded = ledger.site_runs_inputs(wanted) if wanted else {}  # batches leave the inputs there
            for o, rec in zip(ordered[i:i + MANIFEST_CHUNK], recs, strict=True):
                if rec["status"] == "succeeded" and "inputs" not in rec:
                    text = recorded.get(int(rec["site_run_id"])) if rec.get("site_run_id") is not None else None
                    if text:
                        rec["inputs"] = json.loads(text)
                    else:
                        missing.append(o.site_id)
                yield o.site_id, rec

    write_json_streamed(run_dir / "manifest.json", manifest, "sites", sites())
    if missing:
        log.error("the manifest of run %s lacks the input records of %d published sites: %s%s", ctx.run_id,
                  len(missing), ", ".join(missing[:5]), ", ..." if len(missing) > 5 else "")
    write_run_layer(cfg.ledger_url, cfg.sites, run_dir)  # sites.gpkg: each site's polygon and current sink
    # a site published now: the maps earlier runs wrote for its report are of an older estimate
    prune_report_maps(cfg.output_dir, ctx.run_id, [o.site_id for o in outcomes if o.status == "succeeded"])
    ledger.finish_run(ctx.run_id, status=status, n_sites=len(outcomes), n_failed=len(failed),
                      n_skipped=len(skipped))
    return {"run_id": ctx.run_id, "status": status, "n_sites": len(outcomes), "n_failed": len(failed),
            "n_skipped": len(skipped), "reports": reports or {}, "manifest": str(run_dir / "manifest.json"),
            "failures": {o.site_id: o.error for o in failed}}
