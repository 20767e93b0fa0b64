#!/usr/bin/env bash
# Peer suites (issue #8): uvloop's own tests and CPython's test.test_asyncio,
# each run on iocploop and on stock asyncio on this machine, natively on
# Linux and with Windows CPython 3.11 under Wine; then peer/report.py prints
# and writes a report.md and fails if any test that ran on iocploop
# did not pass there while it passed on stock asyncio (test by test; tests
# of the iocploop run that ran on asyncio's own loops are not counted).
# Results and report.md per platform in build/peer/linux/ and build/peer/wine/.
# Neither suite is in this repository:
# uvloop's comes from its pinned sdist on PyPI, CPython's from the
# interpreter (see peer/uvloop_suite.py, peer/cpython_suite.py).
#   bash tools/peer.sh            Linux and Wine
#   bash tools/peer.sh --linux    Linux only
#   bash tools/peer.sh --wine     Wine only
#   PEER_SUITES=cpython bash tools/peer.sh   one suite
# PEER_SUITES picks the suites (default: both).
# Needs what tools/test.sh sets up (the venv; for Wine the Windows Pythons).
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/venv.sh
platforms="linux wine"
case "${1:-}" in
    --linux) platforms=linux ;;
    --wine) platforms=wine ;;
esac
suites=${PEER_SUITES:-cpython uvloop}
if [[ $platforms == *wine* ]]; then
    "$PY" tools/wine.py build --pythons 3.11 >/dev/null || exit 1
fi
status=0
for platform in $platforms; do
    # One directory per platform: .ci/run runs the two side by side.
    out=build/peer/$platform
    rm -rf "$out" && mkdir -p "$out"
    for suite in $suites; do
        for target in asyncio iocploop; do
            echo "=== peer suite: $suite on $platform, target $target ==="
            # A runner's own status says whether any test failed, on either
            # target; the gate is the comparison below.
            "$PY" "peer/${suite}_suite.py" --platform "$platform" --target "$target" \
                --out "$out" >"$out/$suite-$target.out" 2>&1
            tail -n 3 "$out/$suite-$target.out"
        done
    done
    "$PY" peer/report.py --dir "$out" || status=1
done
exit $status
