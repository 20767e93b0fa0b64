#!/usr/bin/env bash
# Quick start, step 1: make a virtual environment in .venv with the build
# tools, install iocploop into it (cffi compiles the C core, Cython the
# scheduler), build both in place as well, then run the example program on iocploop with
# `python -m iocploop`, from the repository root as the README shows it.
#
# In place as well: `python -m ...` puts the current folder first on
# sys.path, so from the repository root `import iocploop` finds the source
# folder iocploop/ before the installed package; with its compiled core built
# there too (as tools/test.sh builds it), both are complete.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# What the builds need, at the versions tests/requirements.txt pins: cffi for
# the in-place build, setuptools >= 77 (it reads pyproject's `license = "MIT"`;
# a venv starts with an older one, or none) and wheel for
# `tools/wine.py build`, which packs the Windows wheels with them.
.venv/bin/python -m pip install -q -c tests/requirements.txt cffi cython setuptools wheel
.venv/bin/python -m pip install -q .
.venv/bin/python _cffi_build/build_core.py >/dev/null
.venv/bin/python _cffi_build/build_scheduler.py >/dev/null
.venv/bin/python -m iocploop examples/hello.py "$@"
