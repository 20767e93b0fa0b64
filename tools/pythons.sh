#!/usr/bin/env bash
# The Linux suite on the newer Pythons (3.13 and 3.14 by default), which the
# machine's Debian does not ship: Debian's sid suite does (python3.X with
# -dev and -venv), so a debootstrap chroot under .cache/sid holds them and
# leaves the host alone.  The first run makes it (about three minutes);
# later runs reuse it.  Needs root (debootstrap, chroot, mounts).
#   bash tools/pythons.sh [pytest args...]
#   IOCPLOOP_LINUX_PYTHONS="3.13" bash tools/pythons.sh
# The tree is copied into the chroot (git's files plus the working changes)
# and built there in place for each version: the host's own in-place
# build is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
versions=${IOCPLOOP_LINUX_PYTHONS:-3.13 3.14}
root=$PWD/.cache/sid
packages=gcc,libc6-dev,ca-certificates
for v in $versions; do packages+=",python$v,python$v-dev,python$v-venv"; done

if [ "$(id -u)" != 0 ]; then
    echo "tools/pythons.sh needs root (debootstrap and chroot)" >&2
    exit 1
fi
missing=0
for v in $versions; do [ -x "$root/usr/bin/python$v" ] || missing=1; done
if [ "$missing" = 1 ]; then
    command -v debootstrap >/dev/null || bash tools/apt-install.sh debootstrap
    # The same Debian mirror the host's apt uses.
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null \
             || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
    rm -rf "$root.new" && mkdir -p "$(dirname "$root")"
    echo "=== making a Debian sid chroot for Python $versions (debootstrap) ==="
    debootstrap --variant=minbase --include="$packages" sid "$root.new" "$mirror" \
        >"$PWD/.cache/debootstrap.log" 2>&1 || { tail -20 "$PWD/.cache/debootstrap.log"; exit 1; }
    rm -rf "$root" && mv "$root.new" "$root"
fi

# The host's view of the network: name service, and the certificate
# authorities it trusts (pip in the chroot reaches PyPI as the host does).
cp /etc/resolv.conf "$root/etc/resolv.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
mounted=()
cleanup() {
    for ((i=${#mounted[@]}-1; i>=0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
for fs in proc sys dev dev/pts; do
    mkdir -p "$root/$fs"
    if ! mountpoint -q "$root/$fs"; then
        case $fs in
            proc) mount -t proc proc "$root/proc" ;;
            *) mount --rbind "/$fs" "$root/$fs" ;;
        esac
        mounted+=("$root/$fs")
    fi
done

rm -rf "$root/src" && mkdir -p "$root/src"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$root/src"

status=0
for v in $versions; do
    echo "=== Linux, Python $v (Debian sid chroot): build in place, run the tests ==="
    chroot "$root" /bin/sh -ec "
        cd /src
        [ -x /venv$v/bin/python ] || python$v -m venv /venv$v
        /venv$v/bin/python -m pip install -q --upgrade pip
        /venv$v/bin/python -m pip install -q -r tests/requirements.txt
        /venv$v/bin/python _cffi_build/build_core.py >/tmp/build-$v.log 2>&1 &&
            /venv$v/bin/python _cffi_build/build_scheduler.py >>/tmp/build-$v.log 2>&1 ||
            { cat /tmp/build-$v.log; exit 1; }
        exec /venv$v/bin/python -m pytest -p no:cacheprovider tests $*
    " </dev/null || status=$?
done
exit $status
