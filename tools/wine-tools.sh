#!/usr/bin/env bash
# What the Wine half of the tests needs on the host: Debian's wine64 and the
# MinGW cross-compiler, installed with apt when missing (as root).
set -euo pipefail
if ! command -v wine >/dev/null || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
    bash "$(dirname "$0")/apt-install.sh" wine64 gcc-mingw-w64-x86-64
fi
