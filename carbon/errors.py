"""Errors raised by the accounting engine.

Every error names what was wrong and where: the file, the site, the row or the field.
Bad input never surfaces as a GDAL traceback and never as a silently wrong number.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class CarbonSinkError(Exception):
    """Base class of every error the project raises on purpose."""


class InputError(CarbonSinkError):
    """An input (file, table, raster, polygon, parameter) is unusable.

    ``problems`` lists every problem found, each a self-contained sentence, so that a
    caller (the CLI's ``validate``, a flow's failure report) can print all of them at once.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        site_id: str | None = None,
        problems: Iterable[str] = (),
    ) -> None:
        self.path = str(path) if path is not None else None
        self.site_id = site_id
        self.problems = list(problems)
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.site_id is not None:
            where.append(f"site {self.site_id!r}")
        if self.path is not None:
            where.append(f"file {self.path}")
        head = f"{self.message}" + (f" ({', '.join(where)})" if where else "")
        if not self.problems:
            return head
        shown = self.problems[:50]
        lines = [head] + [f"  - {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        return "\n".join(lines)


class OutputValidationError(CarbonSinkError):
    """A computed table broke its contract: a bug, never published."""

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        self.problems = list(problems)
        text = message + "".join(f"\n  - {p}" for p in self.problems[:50])
        super().__init__(text)
