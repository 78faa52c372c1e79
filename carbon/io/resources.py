"""The data shipped with the package: the built-in legend crosswalks, the IPCC Tier 1
coefficient set and the demo (docs/architecture.md).

In a checkout they are the repository's ``data/`` folder; the wheel carries the same folder
as ``carbon/data`` (pyproject.toml, ``force-include``), found with ``importlib.resources``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _data_root() -> tuple[Path, bool]:
    packaged = files("carbon").joinpath("data")
    if packaged.is_dir():
        return Path(str(packaged)), True
    # a checkout (an editable install): data/ beside the package, as the user's layout has it
    return Path(str(files("carbon"))).parent / "data", False


DATA, PACKAGED = _data_root()
#: The built-in legend crosswalks (``<legend>.csv``).
BUILTIN_LEGENDS = DATA / "legends"
#: The built-in coefficient sets.
COEFFICIENTS = DATA / "coefficients"
#: The demo's configuration, used when no ``--config`` is given.
DEMO_CONFIG = DATA / "demo" / "carbon-sink.toml"


def demo_output_dir(cwd: Path | None = None) -> Path:
    """Where the demo publishes when it runs from an installed wheel (its own folder is not
    the user's to write in): ``output/demo`` under the current folder."""
    return (cwd or Path.cwd()) / "output" / "demo"
