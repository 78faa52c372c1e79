#!/usr/bin/env bash
# InVEST Carbon (natcap-invest 3.20.2) in its own virtual environment, for the side-by-side
# benchmark (benchmarks/run.py --invest-python VENV/bin/python). Debian/Ubuntu, run as root:
#   bash benchmarks/invest/install.sh /tmp/invest-venv
# natcap-invest and pygeoprocessing have no Linux wheels: they are built against the system GDAL.
set -euo pipefail
VENV=${1:-/tmp/invest-venv}
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgdal-dev gdal-bin >/dev/null
python3 -m venv "$VENV"
export PATH="$VENV/bin:$PATH"                 # the natcap-invest build calls pybabel from PATH
pip install -q --upgrade pip setuptools wheel numpy
pip install -q --no-build-isolation "GDAL==$(gdal-config --version)"
pip install -q "cython>=3.0,<3.3" "setuptools_scm>=8.0" babel   # pygeoprocessing 2.4.11 does not build with Cython 3.3
pip install -q --no-build-isolation pygeoprocessing==2.4.11
pip install -q --no-build-isolation natcap-invest==3.20.2
python -c "import natcap.invest.carbon; print('natcap.invest', natcap.invest.__version__)"
