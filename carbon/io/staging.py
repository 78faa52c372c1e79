"""Temporary files a run leaves behind when it is killed: a site's tables are written to a
hidden folder beside their final one (``runs/<run_id>/sites/.<site_id>-*``, renamed into place
when complete) and a manifest to ``manifest.tmp``. Once a run is known to be dead (marked
stale in the ledger) they are of no use and are removed; a live run's are never touched."""

from __future__ import annotations

import shutil
from pathlib import Path


def remove_staging(output_dir: Path, run_id: str) -> list[Path]:
    """Remove the temporary folders and files a dead run left in its folder under
    ``output_dir``; returns what was removed (nothing if the run left none)."""
    root = Path(output_dir).resolve()
    run_dir = (root / "runs" / run_id).resolve()
    if not run_dir.is_relative_to(root / "runs") or run_dir == root / "runs" or not run_dir.is_dir():
        return []
    removed = []
    sites = run_dir / "sites"
    for tmp in sorted(sites.glob(".*")) if sites.is_dir() else []:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    manifest = run_dir / "manifest.tmp"
    if manifest.is_file():
        manifest.unlink(missing_ok=True)
        removed.append(manifest)
    return removed
