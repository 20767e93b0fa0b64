#!/usr/bin/env bash
# Run the Linux test suite against an AddressSanitizer build of the C core
# and of the compiled scheduler.
# Any use-after-free, overflow or double free of operation records or of
# memory the kernel still owns aborts the run with a report.
#   bash tools/asan.sh [pytest args...]
# LeakSanitizer runs too: every process of the suite writes its leak report
# under build/asan/leaks, and tools/lsan_check.py fails the run if a leaked
# block was allocated by the core (CPython's own memory kept until exit is
# reported as well, and ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/venv.sh
stage=build/asan
rm -rf "$stage" && mkdir -p "$stage"
cp -r iocploop "$stage/iocploop"
rm -f "$stage"/iocploop/_ioc.* "$stage"/iocploop/_scheduler.*.so
"$PY" _cffi_build/build_core.py --sanitize "$stage/iocploop" >/dev/null
"$PY" _cffi_build/build_scheduler.py --sanitize "$stage/iocploop" >/dev/null
libasan=$(gcc -print-file-name=libasan.so)
# -P keeps the source tree's iocploop (no sanitizer) off sys.path; children
# started by the tests inherit PYTHONPATH and the preload.
leaks=$PWD/$stage/leaks
mkdir -p "$leaks"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:log_path=$leaks/report LSAN_OPTIONS=exitcode=0 \
    LD_PRELOAD="$libasan" PYTHONPATH="$stage" \
    "$PY" -P -m pytest -p no:cacheprovider tests "$@" && rc=0 || rc=$?
# The reports also hold any memory error (the aborting process wrote it there).
"$PY" tools/lsan_check.py "$leaks" || rc=1
exit $rc
