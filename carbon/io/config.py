"""Run configuration: a TOML file whose paths are relative to the file itself.

Keys: ``sites``, ``landcover`` (catalog CSV), ``legends`` (folder of crosswalks,
optional), ``coefficients`` (coefficient CSV or InVEST pools table), ``output_dir``,
``ledger`` (database URL, default ``sqlite:///<output_dir>/ledger.db``), ``monte_carlo_draws``
(default 10,000), ``conservative_rule`` (``ar_tool14`` or ``lower90``) and
``uncertainty_default_pct`` (the 95% half-width, in % of the mean, given to a coefficient
without an SD: a number for every pool, a table by pool, or ``false`` for none; default 90;
docs/methods.md §10), ``min_site_area_ha`` (smallest site, geodesic ha; default 0.01) and
``max_site_pixels`` (largest window of a site on a raster's grid, in pixels; default 2e9) and
``report_language`` (``en`` or ``zh``: the language of the reports; default ``en``).

``sites``, ``landcover``, ``coefficients`` and ``baseline_landcover`` may be URLs
(``s3://bucket/key``): they are kept as strings (carbon/io/storage.py); local paths are resolved
:class:`Path`s. ``legends`` and ``output_dir`` (and a SQLite ledger) are local folders.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from carbon.errors import InputError
from carbon.io import storage
from carbon.io.resources import DEMO_CONFIG, PACKAGED, demo_output_dir
from carbon.rules.site import SiteLimits
from carbon.rules.uncertainty import SdDefaults
from carbon.rules.vocabulary import BUFFER_BASES, CONSERVATIVE_RULES, POOLS

KEYS = {"sites", "landcover", "legends", "coefficients", "output_dir", "ledger", "monte_carlo_draws",
        "conservative_rule", "buffer_pct", "leakage_pct", "buffer_base", "baseline_landcover",
        "uncertainty_default_pct", "min_site_area_ha", "max_site_pixels", "report_language"}
#: The languages of the reports (carbon/report/i18n.py).
REPORT_LANGUAGES = ("en", "zh")
NUMBER_KEYS = {"monte_carlo_draws", "buffer_pct", "leakage_pct", "uncertainty_default_pct", "min_site_area_ha",
               "max_site_pixels"}


@dataclass(frozen=True)
class Config:
    path: Path
    sites: str | Path  # a local path (resolved) or a URL (carbon/io/storage.py), as the next three
    landcover: str | Path
    coefficients: str | Path
    output_dir: Path
    ledger_url: str
    legends: Path | None = None
    monte_carlo_draws: int = 10_000
    conservative_rule: str = "ar_tool14"
    buffer_pct: float | None = None
    leakage_pct: float | None = None
    buffer_base: str = "net_stock_change"
    baseline_landcover: str | Path | None = None
    sd_defaults: SdDefaults | None = field(default_factory=SdDefaults.ipcc_nominal)
    site_limits: SiteLimits = field(default_factory=SiteLimits)
    report_language: str = "en"


def load_config(path: str | Path | None = None, output_dir: str | Path | None = None) -> Config:
    """The configuration at ``path`` (default: the demo), every problem listed at once.

    ``output_dir`` overrides the file's (and so the default ledger's) output folder. The demo
    run from an installed wheel publishes to ``output/demo`` under the current folder."""
    path = Path(path) if path is not None else DEMO_CONFIG
    if not path.is_file():
        raise InputError("configuration file not found", path=path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"configuration is not valid TOML: {exc}", path=path) from None
    problems = [f"unknown key {k!r} (known: {', '.join(sorted(KEYS))})" for k in raw if k not in KEYS]
    problems += [f"required key {k!r} is missing" for k in ("sites", "landcover", "coefficients", "output_dir") if k not in raw]
    problems += [f"key {k!r} must be a string" for k in (KEYS - NUMBER_KEYS) & raw.keys()
                 if not isinstance(raw[k], str)]
    for k in ("buffer_pct", "leakage_pct"):
        v = raw.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 100):
            problems.append(f"{k} must be a percentage from 0 to 100, not {v!r}")
    if raw.get("buffer_base", BUFFER_BASES[0]) not in BUFFER_BASES:
        problems.append(f"buffer_base must be {' or '.join(map(repr, BUFFER_BASES))}, not {raw['buffer_base']!r}")
    draws = raw.get("monte_carlo_draws", 10_000)
    if not isinstance(draws, int) or isinstance(draws, bool) or not 100 <= draws <= 1_000_000:
        problems.append(f"monte_carlo_draws must be a whole number from 100 to 1,000,000, not {draws!r}")
    rule = raw.get("conservative_rule", "ar_tool14")
    if rule not in CONSERVATIVE_RULES:
        problems.append(f"conservative_rule must be {' or '.join(map(repr, CONSERVATIVE_RULES))}, not {rule!r}")
    language = raw.get("report_language", "en")
    if language not in REPORT_LANGUAGES:
        problems.append(f"report_language must be {' or '.join(map(repr, REPORT_LANGUAGES))}, not {language!r}")
    sd_defaults = _sd_defaults(raw.get("uncertainty_default_pct", DEFAULT_U95), problems)
    limits = _site_limits(raw, problems)
    for k in ("output_dir", "legends"):
        if isinstance(raw.get(k), str) and storage.is_url(raw[k]) and not (k == "output_dir" and output_dir):
            problems.append(f"{k} must be a local folder, not a URL ({raw[k]})")
    if problems:
        raise InputError("configuration is invalid", path=path, problems=problems)
    base = path.resolve().parent

    def rel(key: str) -> str | Path:
        """A path relative to the configuration's folder, or a URL as it is given."""
        return storage.resolve(base, raw[key])

    if output_dir is not None:
        out_dir = Path(output_dir).resolve()
    elif PACKAGED and path.resolve() == DEMO_CONFIG.resolve():
        out_dir = demo_output_dir().resolve()
    else:
        out_dir = (base / raw["output_dir"]).resolve()
    ledger = raw.get("ledger") or f"sqlite:///{out_dir / 'ledger.db'}"
    if ledger.startswith("sqlite:///") and not ledger.startswith("sqlite:////") and not Path(ledger[10:]).is_absolute():
        ledger = f"sqlite:///{(base / ledger[10:]).resolve()}"
    return Config(
        path=path.resolve(),
        sites=rel("sites"),
        landcover=rel("landcover"),
        coefficients=rel("coefficients"),
        output_dir=out_dir,
        ledger_url=ledger,
        legends=(base / raw["legends"]).resolve() if raw.get("legends") else None,
        monte_carlo_draws=draws,
        conservative_rule=rule,
        buffer_pct=None if raw.get("buffer_pct") is None else float(raw["buffer_pct"]),
        leakage_pct=None if raw.get("leakage_pct") is None else float(raw["leakage_pct"]),
        buffer_base=raw.get("buffer_base", "net_stock_change"),
        baseline_landcover=rel("baseline_landcover") if raw.get("baseline_landcover") else None,
        sd_defaults=sd_defaults,
        site_limits=limits,
        report_language=str(language),
    )


def _site_limits(raw: dict[str, object], problems: list[str]) -> SiteLimits:
    """``min_site_area_ha`` (a number >= 0; 0 accepts any area above zero) and
    ``max_site_pixels`` (a number >= 1, e.g. ``5e9``)."""
    default = SiteLimits()
    area = raw.get("min_site_area_ha", default.min_area_ha)
    if isinstance(area, bool) or not isinstance(area, int | float) or not 0 <= area < float("inf"):
        problems.append(f"min_site_area_ha must be a number of hectares >= 0, not {area!r}")
        area = default.min_area_ha
    pixels = raw.get("max_site_pixels", default.max_pixels)
    if isinstance(pixels, bool) or not isinstance(pixels, int | float) or not 1 <= pixels < float("inf"):
        problems.append(f"max_site_pixels must be a number of pixels >= 1 (e.g. 5e9), not {pixels!r}")
        pixels = default.max_pixels
    return SiteLimits(min_area_ha=float(area), max_pixels=float(pixels))


DEFAULT_U95 = SdDefaults.ipcc_nominal().u95_pct[POOLS[0]]


def _sd_defaults(value: object, problems: list[str]) -> SdDefaults | None:
    """``uncertainty_default_pct``: a percentage for every pool, a table of them by pool, or
    false (no default: a coefficient without an SD has an unknown uncertainty)."""
    if value is False:
        return None
    what = "uncertainty_default_pct must be a percentage above 0 (up to 500), a table of them by pool, or false"
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(POOLS))
        if unknown:
            problems.append(f"uncertainty_default_pct: unknown pool(s) {', '.join(unknown)} (pools: {', '.join(POOLS)})")
        pcts = {str(k): v for k, v in value.items() if k in POOLS}
    else:
        pcts = {p: value for p in POOLS}
    bad = [v for v in pcts.values() if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 500]
    if bad:
        problems.append(f"{what}, not {bad[0]!r}")
        return None
    if pcts == SdDefaults.ipcc_nominal().u95_pct:
        return SdDefaults.ipcc_nominal()
    return SdDefaults({p: float(v) for p, v in pcts.items() if isinstance(v, int | float)},
                      source=f"default: 95% interval of ±{', '.join(f'{p} {v:g}%' for p, v in pcts.items())} of the "
                             "mean (uncertainty_default_pct of the configuration)")
