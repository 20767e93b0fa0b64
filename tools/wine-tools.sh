#!/usr/bin/env bash
# What the Wine half of the tests needs on the host: Debian's wine64 and the
# MinGW cross-compiler, installed with apt when missing (as root).
set -euo pipefail
if ! command -v wine >/dev/null || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wine64 gcc-mingw-w64-x86-64 >/dev/null
    else
        echo "wine64 and gcc-mingw-w64-x86-64 are needed: sudo apt-get install wine64 gcc-mingw-w64-x86-64" >&2
        exit 1
    fi
fi
