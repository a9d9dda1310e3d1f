#!/usr/bin/env bash
# `deno task test:windows`: runs the test suite with the Windows build of
# Deno under Wine 10 (prepared by tools/windows_env.sh). The repository is
# bind-mounted into the Wine folder, so Wine sees it as Z:\repo.
#
# Exit: the Windows test run's code; 0 with a SKIPPED line when the Wine
# environment cannot be prepared on this machine.
# Arguments are passed to `deno test` (e.g. a test file to run alone).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

env_log=$(mktemp)
if ! home=$(bash tools/windows_env.sh 2>"$env_log" | tail -n 1); then
  status=$?
  reason=$(grep -E '^Cannot prepare' "$env_log" | tail -n 1)
  cat "$env_log" >&2
  rm -f "$env_log"
  if [ "$status" = 3 ]; then
    echo "SKIPPED: Windows tests (${reason:-the Wine environment could not be prepared})"
    exit 0
  fi
  exit "$status"
fi
rm -f "$env_log"
ROOTFS=$home/trixie
# One run at a time per machine: runs share the Wine folder and its mounts.
exec 9>"$home/.test-lock"
flock -w 1800 9 || { echo "Another Windows test run holds $home/.test-lock" >&2; exit 1; }
DENO_VERSION=$(deno --version | head -n 1 | awk '{print $2}')
DENO_EXE=$home/deno-$DENO_VERSION/deno.exe

mounts=()
cleanup() {
  chroot "$ROOTFS" /bin/sh -c 'WINEPREFIX=/root/.wine-broker /usr/lib/wine/wineserver -k' >/dev/null 2>&1 || true
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mount_into() { # source target [options...]
  local target=$ROOTFS$2
  mkdir -p "$target"
  mount "${@:3}" "$1" "$target" && mounts+=("$target")
}
mount_into proc /proc -t proc
mount_into sysfs /sys -t sysfs
mount_into /dev /dev --bind
mount_into devpts /dev/pts -t devpts
mount_into tmpfs /dev/shm -t tmpfs
mount_into "$REPO" /repo --bind
mkdir -p "$ROOTFS/opt/deno" && cp -f "$DENO_EXE" "$ROOTFS/opt/deno/deno.exe"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
# deno.exe fetches the npm packages itself: give it the host's trusted CAs.
ca_env=""
for ca in "${DENO_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [ -n "$ca" ] && [ -f "$ca" ]; then
    mkdir -p "$ROOTFS/etc/ssl/certs"
    cp -f "$ca" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    ca_env="export DENO_CERT='Z:\\etc\\ssl\\certs\\ca-certificates.crt'"
    break
  fi
done

# Wine's background processes hold pipes open: write to a file, never a pipe.
out=$ROOTFS/tmp/windows-test.log
rm -f "$out"
args="${*:-tests/}"
chroot "$ROOTFS" /bin/bash -c "
  export WINEDEBUG=-all WINEPREFIX=/root/.wine-broker NO_COLOR=1
  # Wine's socket layer slows to a crawl past ~100 sockets in one process: the
  # heavy tests run at reduced scale here (full scale on Linux and real Windows).
  export INTEGRITY_SESSIONS=\${INTEGRITY_SESSIONS:-4} INTEGRITY_MIB=\${INTEGRITY_MIB:-4} BALANCE_SESSIONS=\${BALANCE_SESSIONS:-30} FUZZ_CASES=\${FUZZ_CASES:-2000} SLOWLORIS_LINKS=\${SLOWLORIS_LINKS:-200}
  export ENDINGS_CROWD_SESSIONS=\${ENDINGS_CROWD_SESSIONS:-20} ROAMING_RACE_SESSIONS=\${ROAMING_RACE_SESSIONS:-10} SIM_WORLDS=\${SIM_WORLDS:-200} TAKEOVER_SESSIONS=\${TAKEOVER_SESSIONS:-10}
  # Wine's socket layer now and then drops bytes it already reported as sent
  # when megabytes wait for a slow reader (seen in the TLS test at 4 MiB, 3
  # times in 229 runs; the broker had written every byte): 1 MiB each way here.
  export TLS_TEST_MIB=\${TLS_TEST_MIB:-1} FLOW_TEST_MIB=\${FLOW_TEST_MIB:-2}
  $ca_env
  cd /repo
  # The whole suite takes about a minute here: a hung test fails the run after
  # 10 minutes instead of holding CI for half an hour.
  timeout ${WINDOWS_TEST_TIMEOUT:-600} /usr/lib/wine/wine64 'Z:\\opt\\deno\\deno.exe' test --v8-flags=--expose-gc -A $args > /tmp/windows-test.log 2>&1 < /dev/null
  echo \$? > /tmp/windows-test.code
"
cat "$out"
code=$(cat "$ROOTFS/tmp/windows-test.code" 2>/dev/null || echo 1)
summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$out" | tail -n 1)
[ "$code" = 124 ] && summary="no summary: stopped after ${WINDOWS_TEST_TIMEOUT:-600} s (WINDOWS_TEST_TIMEOUT); the last test above hung"
echo "Windows (deno.exe $DENO_VERSION under Wine): ${summary:-no summary} (exit $code)"
exit "$code"
