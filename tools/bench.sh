#!/usr/bin/env bash
# The benchmark tool (docs/performance.md): install what it needs (uvloop,
# rloop, httptools and matplotlib from benchmarks/requirements.txt, OpenSSL's
# headers for the TLS load generator), build the core in place, run
# `python -m benchmarks`.
#   bash tools/bench.sh [--quick] [--suites ...] [--runs N] ...   (Linux)
# Results: build/bench/report/ (a table per suite, results.json, chart.png).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/venv.sh
pip_install -r benchmarks/requirements.txt
# OpenSSL's headers, for the TLS load generator.
[ -f /usr/include/openssl/ssl.h ] || bash tools/apt-install.sh libssl-dev
"$PY" _cffi_build/build_core.py >/tmp/iocploop-build.log 2>&1 \
    || { cat /tmp/iocploop-build.log; exit 1; }
PYTHONPATH=. exec "$PY" -m benchmarks "$@"
