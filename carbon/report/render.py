"""The Jinja2 environment of the report's pages (``carbon/report/templates/*.html.j2``)."""

from __future__ import annotations

import math
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from carbon.report.i18n import Messages


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _fmt(v: Any, digits: int = 2) -> str:
    return f"{float(v):,.{digits}f}"


def _repr(v: Any) -> str:
    return repr(float(v))


@cache
def environment() -> Environment:
    env = Environment(loader=PackageLoader("carbon.report", "templates"), autoescape=select_autoescape(["j2", "html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(finite=_finite, fmt=_fmt, repr_float=_repr)
    return env


def render(template: str, lang: str, **context: Any) -> str:
    """A page in ``lang``: ``_`` gives its messages (HTML of the catalog kept, arguments
    escaped), ``m`` the catalog itself (pools, classes, methods)."""
    msg = Messages(lang)

    def _(key: str, **kw: Any) -> Markup:
        return Markup(msg(key)).format(**kw) if kw else Markup(msg(key))

    return environment().get_template(template).render(_=_, m=msg, lang=lang, **context)
