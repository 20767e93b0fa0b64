#!/usr/bin/env bash
# The integration suite (tests/integration/): aiohttp, websockets, httpx,
# uvicorn + Starlette, redis-py and asyncpg with their real network code on
# iocploop, natively on Linux, then with Windows CPython under Wine.
#   bash tools/integration.sh            both
#   bash tools/integration.sh --linux    Linux only
#   bash tools/integration.sh --wine     Windows under Wine only
# Extra arguments after the flag go to pytest.  Installs the pinned
# tests/integration/requirements.txt into the venv and, as root, Debian's
# redis-server and postgresql: the tests start their own servers on free
# ports and stop them.  Under Wine, tools/wine.py starts the host's
# redis-server for the Redis tests; the PostgreSQL tests are Linux only.
# The Windows Pythons are tools/wine.py's (IOCPLOOP_WINE_PYTHONS).
set -euo pipefail
cd "$(dirname "$0")/.."
what=all
case "${1:-}" in
    --linux) what=linux; shift ;;
    --wine) what=wine; shift ;;
esac
source tools/venv.sh
pip_install -r tests/integration/requirements.txt

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || command -v postgres >/dev/null \
    || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    bash tools/apt-install.sh "${missing[@]}"
fi
status=0

if [ "$what" != wine ]; then
    echo "=== Linux: build the io_uring core in place, run the integration suite ==="
    "$PY" _cffi_build/build_core.py >/tmp/iocploop-build.log 2>&1 \
        || { cat /tmp/iocploop-build.log; exit 1; }
    "$PY" -m pytest -p no:cacheprovider tests/integration "$@" || status=$?
fi

if [ "$what" != linux ]; then
    echo "=== Windows under Wine: the integration suite on the Windows wheel ==="
    bash tools/wine-tools.sh
    "$PY" tools/wine.py all --timeout 600 tests/integration "$@" || status=$?
fi
exit $status
