#!/usr/bin/env bash
# Builds keepup and runs `keepup demo` (root needed: it builds network
# namespaces). Installs the Debian packages the demo uses when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "keepup demo needs root (it builds network namespaces): sudo $0 $*" >&2
  exit 1
fi
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server mariadb-client)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release -q -p keepup
exec ./target/release/keepup demo "$@"
