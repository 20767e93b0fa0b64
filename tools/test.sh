#!/usr/bin/env bash
# The test command (README): the suite natively on Linux and the same suite
# on Windows CPython 3.11, 3.12 and 3.13 under Wine, side by side (the Wine
# half spends most of its time waiting on Wine); lines marked [linux]/[wine].
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

if [ "$what" = all ]; then
    bash tools/test.sh --wine "$@" > >(sed -u 's/^/[wine] /') 2>&1 &
    wine_half=$!
    bash tools/test.sh --linux "$@" > >(sed -u 's/^/[linux] /') 2>&1 || status=$?
    wait "$wine_half" || status=$?
    sleep 0.2   # the last prefixed lines
    [ "$status" = 0 ] && echo "=== tests: Linux and Wine passed ===" \
        || echo "=== tests: FAILED (exit $status): see the [linux] and [wine] lines above ==="
    exit $status
fi

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
