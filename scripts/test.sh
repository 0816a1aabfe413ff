#!/usr/bin/env bash
# Runs every keepup test. Installs the Debian packages the tests need when
# they are missing (as root), then runs the whole workspace's tests.
# Namespace, netlink and MariaDB tests need root: without it they print
# "SKIPPED <test>: needs root" locally, and fail under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

# program -> Debian package (gcc: the C compiler `ring` builds with and
# the linker rustc calls; procps: the `kill` the tests run)
need=(
  "cc gcc"
  "kill procps"
  "ip iproute2"
  "nft nftables"
  "ping iputils-ping"
  "curl curl"
  "arping iputils-arping"
  "mariadbd mariadb-server"
  "mariadb mariadb-client"
  "mariadb-backup mariadb-backup"
  "chromium chromium"
)
missing=()
for pair in "${need[@]}"; do
  read -r prog pkg <<<"$pair"
  if ! command -v "$prog" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$prog" ] && [ ! -x "/sbin/$prog" ]; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "not root: cannot install ${missing[*]}; tests that need them will say SKIPPED" >&2
  fi
fi
# mariadb-server's package may start a system server; keepup's tests start their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop mariadb >/dev/null 2>&1 || true; fi

cargo test --workspace "$@"
