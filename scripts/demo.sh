#!/usr/bin/env bash
# Builds keepup and runs `keepup demo` (root needed: it builds network
# namespaces). Installs the Debian packages the demo uses when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "keepup demo needs root (it builds network namespaces): sudo $0 $*" >&2
  exit 1
fi
. scripts/packages.sh
ensure_packages "ip iproute2" "nft nftables" "mariadbd mariadb-server mariadb-client"
cargo build --release -q -p keepup
exec ./target/release/keepup demo "$@"
