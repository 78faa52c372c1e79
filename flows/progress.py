"""A hook through which a caller in the same process (the CLI's progress bar) hears of sites."""

from __future__ import annotations

from collections.abc import Callable

_listeners: list[Callable[[str, str], None]] = []


def subscribe(fn: Callable[[str, str], None]) -> Callable[[], None]:
    _listeners.append(fn)
    return lambda: _listeners.remove(fn)


def emit(site_id: str, status: str) -> None:
    for fn in list(_listeners):
        fn(site_id, status)
