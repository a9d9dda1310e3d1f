#!/usr/bin/env bash
# Prepares, once per machine, what `deno task test:windows` needs: a Debian 13
# (trixie) folder with Wine 10 (Debian 12's Wine 8 cannot run deno.exe), and
# the Windows deno.exe of the same version as the Linux deno, from npm.
# Cached under $BROKER_WINE_HOME (default /var/cache/protheus-broker-wine),
# outside the repository, and reused when present.
#
# Prints the cache folder on its last line. Exit 3 when the environment
# cannot be prepared here (no root, a mirror unreachable): callers report
# that as SKIPPED with the reason printed just before.
set -euo pipefail

HOME_DIR=${BROKER_WINE_HOME:-/var/cache/protheus-broker-wine}
ROOTFS=$HOME_DIR/trixie
MIRROR=${BROKER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DENO_VERSION=$(deno --version | head -n 1 | awk '{print $2}')

skip() {
  echo "Cannot prepare the Wine environment: $*" >&2
  exit 3
}

if [ -f "$ROOTFS/.wine-ready" ] && [ -f "$HOME_DIR/deno-$DENO_VERSION/deno.exe" ]; then
  echo "$HOME_DIR"
  exit 0
fi

[ "$(id -u)" = 0 ] || skip "it needs root (debootstrap and a chroot)"
mkdir -p "$HOME_DIR"

if [ ! -f "$ROOTFS/.wine-ready" ]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "Installing debootstrap" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap) >&2 ||
      skip "apt-get could not install debootstrap"
  fi
  if [ ! -x "$ROOTFS/usr/bin/apt-get" ]; then
    echo "debootstrap trixie into $ROOTFS (about a minute)" >&2
    rm -rf "$ROOTFS"
    debootstrap --variant=minbase trixie "$ROOTFS" "$MIRROR" >&2 || skip "debootstrap from $MIRROR failed"
  fi
  echo "Installing Wine 10 in the trixie folder (about a minute, ~1 GB)" >&2
  cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
  chroot "$ROOTFS" /bin/sh -c "dpkg --add-architecture i386 >/dev/null 2>&1 || true; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wine64 wine >/dev/null" >&2 ||
    skip "apt-get install wine in the trixie folder failed"
  touch "$ROOTFS/.wine-ready"
fi

if [ ! -f "$HOME_DIR/deno-$DENO_VERSION/deno.exe" ]; then
  echo "Fetching the Windows deno.exe $DENO_VERSION from npm" >&2
  work=$(mktemp -d)
  (cd "$work" && npm pack "@deno/win32-x64@$DENO_VERSION" >/dev/null 2>&1) || skip "npm pack @deno/win32-x64@$DENO_VERSION failed"
  mkdir -p "$HOME_DIR/deno-$DENO_VERSION"
  tar -xzf "$work"/deno-win32-x64-*.tgz -C "$work"
  mv "$work/package/deno.exe" "$HOME_DIR/deno-$DENO_VERSION/deno.exe"
  rm -rf "$work"
fi
echo "$HOME_DIR"
