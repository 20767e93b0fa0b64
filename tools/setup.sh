#!/usr/bin/env bash
# Quick start, step 1: make a virtual environment in .venv, build and install
# iocploop into it (cffi compiles the C core), then run the example program
# on iocploop with `python -m iocploop`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q .
# Run from outside the source tree so the installed package is the one used.
cd examples
../.venv/bin/python -m iocploop hello.py "$@"
