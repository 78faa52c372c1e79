"""A report drawn in the metering process (one site, or a caller that may not start
processes) first gives back the heap the metering's threads freed, so that the report's memory
does not add to all the metering held."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from carbon.report import pool as report_pool

#: Run in a fresh interpreter: in the test session's own process, the arenas of earlier tests
#: make what the threads hold, and so what a release gives back, depend on the tests before.
PROBE = """
import json, threading
from pathlib import Path
import numpy as np
from carbon.report import pool as report_pool

def rss_mib():
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20

def work():  # small blocks (below malloc's mmap threshold), in the thread's own arena
    blocks = [np.ones(1000) for _ in range(20_000)]  # about 160 MB
    del blocks

rss0 = rss_mib()
threads = [threading.Thread(target=work) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
rss1 = rss_mib()
report_pool.release_freed_memory()
print(json.dumps([rss0, rss1, rss_mib()]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim, /proc")
def test_the_heap_freed_by_other_threads_is_given_back() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2], check=True)
    rss0, rss1, rss2 = json.loads(done.stdout.strip().splitlines()[-1])
    held = rss1 - rss0
    assert held > 100, (rss0, rss1)  # freed by the threads, still held by their arenas
    assert rss2 < rss0 + held / 2, (rss0, rss1, rss2)  # given back by the release


def test_reports_drawn_in_this_process_come_after_the_heap_is_given_back(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(report_pool, "release_freed_memory", lambda: calls.append("release"))
    monkeypatch.setattr(report_pool, "_report_or_failure", lambda cfg, s, maps_dir=None: calls.append(s) or s)
    monkeypatch.setattr(report_pool, "_portfolio_or_failure", lambda cfg: "index.html")
    with report_pool.ReportPool(object(), workers=1) as p:  # type: ignore[arg-type]
        p.submit("a")
        p.submit("b")
        assert p.pages() == {"a": "a", "b": "b"}
    assert calls == ["release", "a", "b"]
