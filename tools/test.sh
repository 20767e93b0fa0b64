#!/usr/bin/env bash
# The test command (README): the suite natively on Linux, then the same suite
# on Windows CPython 3.11, 3.12 and 3.13 under Wine.
#   bash tools/test.sh            both
#   bash tools/test.sh --linux    Linux only
#   bash tools/test.sh --wine     Windows under Wine only
# Extra arguments after the flag go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
what=all
case "${1:-}" in
    --linux) what=linux; shift ;;
    --wine) what=wine; shift ;;
esac
source tools/venv.sh
status=0

if [ "$what" != wine ]; then
    echo "=== Linux: build the io_uring core and the scheduler in place, run the tests ==="
    { "$PY" _cffi_build/build_core.py && "$PY" _cffi_build/build_scheduler.py; } \
        >/tmp/iocploop-build.log 2>&1 || { cat /tmp/iocploop-build.log; exit 1; }
    "$PY" -m pytest -p no:cacheprovider tests "$@" || status=$?
fi

if [ "$what" != linux ]; then
    echo "=== Windows under Wine: fetch Windows CPython, build with MinGW, run the tests ==="
    bash tools/wine-tools.sh
    "$PY" tools/wine.py all "$@" || status=$?
fi
exit $status
