"""carbon-sink tests: shared helpers (conftest.py, rasters.py) here, tests in unit/ and integration/."""
