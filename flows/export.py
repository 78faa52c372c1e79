"""Export flow: the registry export of a configuration's current ledger results."""

from __future__ import annotations

from prefect import flow, task

from carbon.io.config import load_config
from carbon.io.resources import DEMO_CONFIG
from carbon.pipeline.export import export
from flows.tasks import IO


@task(name="export-registry", **IO)
def export_registry(config: str, registry: str, out: str, site_ids: list[str] | None,
                    period: tuple[int, int] | None) -> list[str]:
    """Validate and write the export (all files or none); returns their paths."""
    return [str(p) for p in export(load_config(config), registry, out, site_ids, period)]


@flow(name="registry-export")
def registry_export(registry: str, out: str, config: str | None = None, site_ids: list[str] | None = None,
                    period: tuple[int, int] | None = None) -> list[str]:
    """Export current ledger results in a registry's shape (ccer, verra or json)."""
    return export_registry(str(config or DEMO_CONFIG), registry, out, site_ids, period)
