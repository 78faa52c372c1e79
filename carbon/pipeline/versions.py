"""A site's versions as an analyst reads them: every site run of the ledger with its map years,
method, coefficient set and full-period sink, and which one is the official estimate."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

#: The columns of ``site_versions``.
VERSION_COLUMNS = ["site_run_id", "run_id", "created_at", "status", "estimate", "scenario", "years", "start_year",
                   "method", "coefficient_set", "period", "sink_tco2e", "sink_tco2e_lower90", "sink_tco2e_upper90",
                   "conservative_sink_tco2e", "parameters", "error"]


def site_versions(history: pd.DataFrame) -> pd.DataFrame:
    """One row per site run (``Ledger.history``), oldest first. ``estimate`` says ``official
    (current)`` for the site run whose tables are the official estimate now, ``official
    (earlier)`` for the official runs it replaced, ``scenario`` for an analyst's scenario (never
    official), and ``none`` for a failed or skipped run (no tables)."""
    rows = []
    official = history[(history["status"] == "succeeded") & history["scenario"].isna()]
    current = int(official["site_run_id"].max()) if not official.empty else None
    for r in history.itertuples():
        inputs: dict[str, Any] = json.loads(r.inputs_json) if isinstance(r.inputs_json, str) else {}
        years = sorted(int(y) for y in inputs.get("years", {}))
        if r.status != "succeeded":
            estimate = "none"
        elif isinstance(r.scenario, str):
            estimate = "scenario"
        else:
            estimate = "official (current)" if r.site_run_id == current else "official (earlier)"
        has_sink = pd.notna(r.sink_tco2e)
        rows.append({
            "site_run_id": int(r.site_run_id), "run_id": r.run_id, "created_at": str(r.created_at),
            "status": r.status, "estimate": estimate, "scenario": r.scenario if isinstance(r.scenario, str) else "",
            "years": ",".join(map(str, years)),
            "start_year": int(r.period_start) if has_sink else None,
            "method": inputs.get("site", {}).get("method", ""),
            "coefficient_set": r.coefficient_set or "",
            "period": f"{int(r.period_start)}-{int(r.period_end)}" if has_sink else "",
            "sink_tco2e": float(r.sink_tco2e) if has_sink else None,
            "sink_tco2e_lower90": float(r.sink_tco2e_lower90) if has_sink else None,
            "sink_tco2e_upper90": float(r.sink_tco2e_upper90) if has_sink else None,
            "conservative_sink_tco2e": float(r.conservative_sink_tco2e) if has_sink else None,
            "parameters": r.parameters_json if isinstance(r.parameters_json, str) else "",
            "error": str(r.error).split("\n")[0] if isinstance(r.error, str) else "",
        })
    return pd.DataFrame(rows, columns=VERSION_COLUMNS)
