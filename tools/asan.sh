#!/usr/bin/env bash
# Run the Linux test suite against an AddressSanitizer build of the C core.
# Any use-after-free, overflow or double free of operation records or of
# memory the kernel still owns aborts the run with a report.
#   bash tools/asan.sh [pytest args...]
# Leak checking is off: CPython itself keeps memory until exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/venv.sh
stage=build/asan
rm -rf "$stage" && mkdir -p "$stage"
cp -r iocploop "$stage/iocploop"
rm -f "$stage"/iocploop/_ioc.*
"$PY" _cffi_build/build_core.py --sanitize "$stage/iocploop" >/dev/null
libasan=$(gcc -print-file-name=libasan.so)
# -P keeps the source tree's iocploop (no sanitizer) off sys.path; children
# started by the tests inherit PYTHONPATH and the preload.
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 LD_PRELOAD="$libasan" PYTHONPATH="$stage" \
    "$PY" -P -m pytest -p no:cacheprovider tests "$@"
