#!/usr/bin/env bash
# Failover benchmark: keepup against keepalived (VRRPv2 advert_int 1, VRRPv3
# advert_int 0.1) and Heartbeat 3 in the same network-namespace lab.
# For each tool and setting it kills the owner (kill -9), cuts its network and
# stops it cleanly, N times each, and prints min/median/max of "failure ->
# first successful HTTP reply through the floating IP from the new owner",
# the failback gap, keepup's ratio to each peer, and a soak of keepup's fast
# setting with both cores saturated. Results: BENCHMARKS.md, raw: bench/out/.
#
# Usage (as root):
#   bench/failover.sh                         # N=5, 300 s soak
#   bench/failover.sh --runs 3 --soak-seconds 60
#   bench/failover.sh --only keepup-fast,keepalived-v3 --scenarios kill,cut
#   (tools: keepup-default keepup-fast keepalived-v2 keepalived-v3 heartbeat soak;
#    --fast-heartbeat-ms / --fast-dead-ms change keepup's fast setting)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench/failover.sh: needs root (network namespaces, nftables)" >&2
    exit 1
fi

. scripts/packages.sh
ensure_packages "ip iproute2" "nft nftables" "curl curl" "unshare util-linux" \
    "keepalived keepalived" "stress-ng stress-ng" "/usr/libexec/heartbeat/heartbeat heartbeat"

cargo build --release -p keepup -p keepup-bench
target="${CARGO_TARGET_DIR:-target}/release"
mkdir -p bench/out
exec "$target/failover" --keepup "$target/keepup" --out bench/out "$@"
