"""Prefect wiring: tasks that call carbon/pipeline, flows that wire the tasks, and the CLI.

The ``carbon`` package logs through the standard ``logging`` module; Prefect routes those
records to the flow's and the task's logs in its UI (``PREFECT_LOGGING_EXTRA_LOGGERS``),
unless the environment already names the loggers to route.
"""

import os

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "carbon")
# records logged outside a flow run (a notebook, the tests) stay local, without a warning
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
