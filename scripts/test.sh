#!/usr/bin/env bash
# Runs every keepup test. Installs the Debian packages the tests need when
# they are missing (as root), then runs the whole workspace's tests.
# Namespace, netlink and MariaDB tests need root: without it they print
# "SKIPPED <test>: needs root" locally, and fail under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

# "program package" (gcc: the C compiler `ring` builds with and
# the linker rustc calls; procps: the `kill` the tests run)
. scripts/packages.sh
ensure_packages \
  "cc gcc" \
  "kill procps" \
  "ip iproute2" \
  "nft nftables" \
  "ping iputils-ping" \
  "curl curl" \
  "arping iputils-arping" \
  "mariadbd mariadb-server" \
  "mariadb mariadb-client" \
  "mariadb-backup mariadb-backup" \
  "chromium chromium" \
  "faketime faketime" \
  "man man-db" \
  "readelf binutils" \
  "systemd-analyze systemd" \
  "python3 python3" \
  "git git" \
  "setpriv util-linux" ||
  echo "tests that need them will say SKIPPED" >&2
# mariadb-server's package may start a system server; keepup's tests start their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop mariadb >/dev/null 2>&1 || true; fi

# The previous release's binary, for the rolling-upgrade test (built once,
# kept in target/previous).
KEEPUP_PREVIOUS_BIN=$(./scripts/build-previous.sh)
export KEEPUP_PREVIOUS_BIN

cargo test --workspace "$@"

# The Debian package, built and unpacked into a fresh tree (no arguments:
# a filtered `scripts/test.sh NAME` run skips it).
if [ "$#" -eq 0 ]; then
  ./scripts/test-package.sh
fi
