"""Verification of what the ledger issued (``carbon-sink verify``).

Two checks:

* **The chain** (``verify_chain``): every record of ``ledger_chain`` links to the one before
  it and hashes to its ``record_hash``, and what it recorded is what the tables hold now: a
  site run's ``site_runs`` row and, per table, each of its rows (by key and digest), a run's
  closing, an export's vintages. Rows that no record covers (written around carbon-sink) are
  named too.
* **A run** (``verify_run``): its sites are computed again, in a temporary folder, from the
  run's configuration and inputs: the inputs are hashed again and compared with the hashes
  the run recorded, the code version with the recorded one, and every published table with
  the ledger's rows (relative tolerance ``RTOL``).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from carbon.errors import CarbonSinkError, InputError
from carbon.io.config import Config, load_config
from carbon.io.ledger import GENESIS, TABLES, Audit, Ledger, canonical, chain_hash, export_content, row_key
from carbon.io.outputs import code_version, read_site_tables
from carbon.io.tables import sha256_file
from carbon.pipeline.key import site_input_key
from carbon.pipeline.loop import RunContext, SiteParams, compute_site_tables, site_inputs

#: Relative tolerance of a recomputed number against the published one.
RTOL = 1e-9
ATOL = 1e-12


# --- the chain -----------------------------------------------------------------------------


@dataclass
class ChainCheck:
    """The chain's records, its head hash, and every problem found (the first broken record first)."""

    n_records: int
    head: str | None
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        if not self.problems:
            return [f"chain: {self.n_records} record(s), intact; head {self.head or GENESIS}"]
        return [f"chain: {self.n_records} record(s); first broken record: {self.problems[0]}",
                *[f"chain: also: {p}" for p in self.problems[1:]]]


def _plain(obj: Any) -> Any:
    """Content as the chain holds it (canonical JSON read back), to compare with a record."""
    return None if obj is None else json.loads(canonical(obj))


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:12] + "…"
    return repr(value)


def _site_problems(recorded: dict[str, Any], now: dict[str, Any] | None) -> list[str]:
    ref = recorded["ref"]
    head = recorded.get("site_run") or {}
    where = f"site {head.get('site_id')}, run {head.get('run_id')}"
    if now is None or now.get("site_run") is None:
        gone = [f"site_runs {ref} ({where}): the row is gone"]
        if now is not None:
            gone.append(f"site_runs {ref} ({where}): its result rows remain without it")
        return gone
    problems = []
    for key in sorted(set(head) | set(now["site_run"])):
        a, b = head.get(key), now["site_run"].get(key)
        if a != b:
            what = "inputs_json changed" if key == "inputs_sha256" else f"{key} recorded {_short(a)}, now {_short(b)}"
            problems.append(f"site_runs {ref} ({where}): {what}")
    for table in sorted(set(recorded["rows"]) | set(now["rows"])):
        was: dict[str, list[str]] = {}
        for k, digest in recorded["rows"].get(table, []):
            was.setdefault(k, []).append(digest)
        is_: dict[str, list[str]] = {}
        for k, digest in now["rows"].get(table, []):
            is_.setdefault(k, []).append(digest)
        site = f"site run {ref}, site {head.get('site_id')}"
        for k in sorted(set(was) | set(is_)):
            if k not in is_:
                problems.append(f"{table} ({site}): row {k} was published and is gone")
            elif k not in was:
                problems.append(f"{table} ({site}): row {k} was added after publication")
            elif sorted(was[k]) != sorted(is_[k]):
                if len(was[k]) != len(is_[k]):
                    problems.append(f"{table} ({site}): row {k}: {len(was[k])} published, {len(is_[k])} now")
                else:
                    problems.append(f"{table} ({site}): row {k} differs from what was published")
    return problems


def _run_problems(ref: str, recorded: dict[str, Any], now: dict[str, Any] | None) -> list[str]:
    if now is None:
        return [f"runs {ref}: the row is gone"]
    was, is_ = recorded["run"], now["run"]
    return [f"runs {ref}: {k} recorded {_short(was.get(k))}, now {_short(is_.get(k))}"
            for k in sorted(set(was) | set(is_)) if was.get(k) != is_.get(k)]


def _vintage(v: dict[str, Any]) -> str:
    return (f"registry {v['registry']}, site {v['site_id']}, vintage {v['vintage_start']}..{v['vintage_end']}, "
            f"site run {v['site_run_id']}")


def check_chain(audit: Audit) -> ChainCheck:
    """The checks of ``verify_chain`` on what ``Ledger.audit`` read."""
    problems: list[str] = []
    sites_now = {k: _plain(v) for k, v in audit.site_runs.items()}
    runs_now = {k: _plain(v) for k, v in audit.runs.items()}
    exported_now: dict[str, dict[str, Any]] = {}
    for row in audit.exported:
        v = _plain(export_content(row["registry"], [row])["vintages"][0])
        exported_now[canonical({k: x for k, x in v.items() if k != "issuable_tco2e"})] = v
    latest_run = {str(r["ref"]): r["seq"] for r in audit.chain if r["kind"] == "run"}
    chained_sites: set[int] = set()
    chained_runs: set[str] = set()
    chained_vintages: set[str] = set()
    prev = GENESIS
    for rec in audit.chain:
        label = f"ledger_chain {rec['seq']} ({rec['kind']} {rec['ref']}" + (
            f", site {rec['site_id']})" if rec["site_id"] else ")")
        if rec["prev_hash"] != prev:
            problems.append(f"{label}: does not follow the record before it (its previous hash is "
                            f"{_short(rec['prev_hash'])}, that record's hash {_short(prev)}): a record was removed, "
                            "inserted or reordered")
        if chain_hash(rec["prev_hash"], rec["content"]) != rec["record_hash"]:
            problems.append(f"{label}: its content does not hash to its record_hash: the chain record was edited")
        prev = rec["record_hash"]
        try:
            content = json.loads(rec["content"])
        except ValueError:
            problems.append(f"{label}: its content is not JSON")
            continue
        if rec["kind"] == "site_run":
            chained_sites.add(int(rec["ref"]))
            problems += _site_problems(content, sites_now.get(int(rec["ref"])))
        elif rec["kind"] == "run":
            chained_runs.add(str(rec["ref"]))
            if latest_run[str(rec["ref"])] == rec["seq"]:  # a run's latest closing is its state now
                problems += _run_problems(str(rec["ref"]), content, runs_now.get(str(rec["ref"])))
        elif rec["kind"] == "export":
            for v in content["vintages"]:
                key = canonical({k: x for k, x in v.items() if k != "issuable_tco2e"})
                chained_vintages.add(key)
                found = exported_now.get(key)
                if found is None:
                    problems.append(f"exported_vintages ({_vintage(v)}), exported in {label}: the row is gone")
                elif found["issuable_tco2e"] != v["issuable_tco2e"]:
                    problems.append(f"exported_vintages ({_vintage(v)}): issuable_tco2e recorded "
                                    f"{v['issuable_tco2e']}, now {found['issuable_tco2e']}")
        else:
            problems.append(f"{label}: unknown kind of record")
    for site_run_id in sorted(set(sites_now) - chained_sites):
        head = sites_now[site_run_id].get("site_run") or {}
        problems.append(f"site_runs {site_run_id} (site {head.get('site_id')}, run {head.get('run_id')}): in no chained "
                        "record (written around carbon-sink?)")
    for run_id in sorted(set(runs_now) - chained_runs):
        run = (runs_now[run_id] or {}).get("run") or {}
        if run.get("status") != "running":
            problems.append(f"runs {run_id}: {run.get('status')}, but its closing is in no chained record")
    for key in sorted(set(exported_now) - chained_vintages):
        problems.append(f"exported_vintages ({_vintage(exported_now[key])}): in no chained export")
    return ChainCheck(n_records=len(audit.chain), head=prev if audit.chain else None, problems=problems)


def verify_chain(ledger_url: str) -> ChainCheck:
    """Check the ledger's whole hash chain against its tables."""
    return check_chain(Ledger(ledger_url).audit())


# --- recomputing a run ---------------------------------------------------------------------


@dataclass
class RunCheck:
    """A run recomputed: what was compared, notes, and every difference found."""

    run_id: str
    status: str
    n_sites: int = 0
    notes: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        if not self.run_id:
            return [f"note: {n}" for n in self.notes]
        out = [f"run {self.run_id} ({self.status}): {self.n_sites} published site(s) recomputed"]
        out += [f"note: {n}" for n in self.notes]
        out += [f"difference: {d}" for d in self.differences]
        if not self.differences:
            out.append(f"run {self.run_id}: inputs, code version and every published table match (relative "
                       f"tolerance {RTOL:g})")
        return out


def _flatten(obj: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(obj, dict) and obj:
        out: dict[tuple[str, ...], Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, (*path, str(k))))
        return out
    return {path: obj}


def _input_name(path: tuple[str, ...]) -> str:
    if len(path) == 4 and path[0] == "years" and path[2] == "rasters":
        return f"raster {path[3]} ({path[1]})"
    if len(path) == 3 and path[0] == "years" and path[2] == "crosswalk_sha256":
        return f"legend crosswalk of {path[1]}"
    if path == ("code_version",):
        return "code version"
    return "input " + ".".join(path)


def input_differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Each input whose hash or value differs between a run's record and now."""
    was, is_ = _flatten(recorded), _flatten(json.loads(json.dumps(now, sort_keys=True, default=str)))
    out = []
    for path in sorted(set(was) | set(is_)):
        if path not in is_:
            out.append(f"{_input_name(path)}: recorded {_short(was[path])}, no longer an input")
        elif path not in was:
            out.append(f"{_input_name(path)}: {_short(is_[path])} is an input now, not recorded by the run")
        elif was[path] != is_[path]:
            out.append(f"{_input_name(path)} changed: recorded {_short(was[path])}, now {_short(is_[path])}")
    return out


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _same(a: Any, b: Any) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    a = a.item() if hasattr(a, "item") else a
    b = b.item() if hasattr(b, "item") else b
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return bool(a == b)
    try:
        return math.isclose(float(a), float(b), rel_tol=RTOL, abs_tol=ATOL)
    except (TypeError, ValueError):
        return bool(a == b)


def _show(v: Any) -> str:
    v = v.item() if hasattr(v, "item") else v
    return f"{v:.12g}" if isinstance(v, float) else repr(v)


def table_differences(name: str, published: pd.DataFrame, recomputed: pd.DataFrame) -> list[str]:
    """Each row and value of a site's table that differs between the ledger and a recomputation."""
    cols = [c.name for c in TABLES[name].columns if c.name not in ("site_run_id", "site_id")]

    def keyed(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
        return {row_key(name, r): r for r in df.to_dict("records")} if not df.empty else {}

    a, b = keyed(published), keyed(recomputed)
    out = [f"{name} {k}: in the ledger, not recomputed" for k in sorted(a.keys() - b.keys())]
    out += [f"{name} {k}: recomputed, not in the ledger" for k in sorted(b.keys() - a.keys())]
    for k in sorted(a.keys() & b.keys()):
        for col in cols:
            va, vb = a[k].get(col), b[k].get(col)
            if not _same(va, vb):
                out.append(f"{name} {k}, {col}: ledger {_show(va)}, recomputed {_show(vb)}")
    return out


def _run_config(cfg: Config, run: dict[str, Any]) -> Config:
    path = Path(str(run["config_path"]))
    if path.resolve() == cfg.path:
        return cfg
    try:
        return load_config(path)
    except CarbonSinkError as exc:
        raise InputError(f"cannot recompute run {run['run_id']}: its configuration cannot be read: {exc}") from None


def verify_run(cfg: Config, run_id: str | None = None) -> RunCheck:
    """Recompute a run's published sites (default: the run that finished last) in a temporary
    folder and compare inputs, code version and tables with what the ledger holds."""
    ledger = Ledger(cfg.ledger_url)
    run = ledger.run(run_id) if run_id else ledger.latest_finished_run()
    if run is None and run_id:
        raise InputError(f"no run {run_id!r} in ledger {ledger.safe_url}")
    if run is None:
        return RunCheck(run_id="", status="", notes=["no finished run in the ledger: nothing to recompute"])
    check = RunCheck(run_id=str(run["run_id"]), status=str(run["status"]))
    rcfg = _run_config(cfg, run)
    manifest = cfg.output_dir / "runs" / check.run_id / "manifest.json"
    if manifest.is_file():
        recorded = json.loads(manifest.read_text(encoding="utf-8")).get("config_sha256")
        if recorded and rcfg.path.is_file() and sha256_file(rcfg.path) != recorded:
            check.differences.append(f"configuration {rcfg.path} changed since the run: sha256 recorded "
                                     f"{_short(recorded)}, now {_short(sha256_file(rcfg.path))}")
    now_code = code_version()
    with tempfile.TemporaryDirectory(prefix="carbon-sink-verify-") as tmp:
        ctx = RunContext(run_id=check.run_id, config=replace(rcfg, output_dir=Path(tmp)), site_ids=(),
                         code_version=now_code)
        for sr in ledger.run_site_runs(check.run_id):
            site_id = str(sr["site_id"])
            if sr["status"] != "succeeded":
                check.notes.append(f"site {site_id} {sr['status']} in this run: nothing published to compare")
                continue
            check.n_sites += 1
            check.differences += [f"site {site_id}: {d}" for d in _recompute_site(ctx, sr, ledger)]
    return check


def _recompute_site(ctx: RunContext, sr: dict[str, Any], ledger: Ledger) -> list[str]:
    site_id = str(sr["site_id"])
    try:
        inputs = json.loads(sr["inputs_json"] or "")
        params = inputs["parameters"]
        method = inputs["site"]["method"]
        inputs["years"]  # noqa: B018 - recorded by a metering run
    except (ValueError, KeyError, TypeError):
        return [f"site run {sr['site_run_id']} recorded no input hashes (not published by a metering run): it "
                "cannot be recomputed"]
    cfg = ctx.config
    years = params.get("years")
    start_year = params.get("start_year")
    out = []
    try:
        site, catalog, coefficients = site_inputs(cfg, site_id)
        _, now = site_input_key(site, catalog, coefficients, cfg.legends, years=years, start_year=start_year,
                                method=method, hash_file=sha256_file, code=ctx.code_version,
                                uncertainty={"draws": cfg.monte_carlo_draws, "rule": cfg.conservative_rule,
                                             "sd_defaults": None if cfg.sd_defaults is None else cfg.sd_defaults.key()})
        out += input_differences(inputs, now)
        site_dir = compute_site_tables(ctx, site_id, SiteParams(years=tuple(years) if years else None,
                                                                start_year=start_year, method=method), maps=False)
    except CarbonSinkError as exc:
        return [*out, f"cannot be recomputed: {exc}"]
    except OSError as exc:
        return [*out, f"cannot be recomputed: {exc}"]
    recomputed = read_site_tables(site_dir)
    published = ledger.site_run_tables(int(sr["site_run_id"]))
    for name in TABLES:
        out += table_differences(name, published[name], recomputed.get(name, pd.DataFrame()))
    return out
