#!/usr/bin/env bash
# Install Debian packages a tool needs, once, whoever asks first:
#   bash tools/apt-install.sh PACKAGE...
# As root: apt-get under a lock, so that scripts run side by side (.ci/run's
# two lanes) never meet on dpkg's own lock.  Otherwise: says what to run.
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "needed: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
exec 9>/tmp/iocploop-apt.lock
flock 9
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
