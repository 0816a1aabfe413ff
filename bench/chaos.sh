#!/usr/bin/env bash
# Long chaos run for the cluster-safety promise (never two holders of a
# group; a holder again soon after the faults end).
#
# Repeats, until --minutes have passed:
#   - the simulator's property tests (crates/keepup-cluster/tests/safety.rs):
#     random schedules of partitions of every shape (pair cuts, one-way loss,
#     isolation, rings), crashes, restarts with clock offsets and drift,
#     pauses, failed stops, with the real core, raft-rs engine and codec;
#   - the namespace chaos test (crates/keepup/tests/chaos.rs): real agents,
#     nftables cuts, SIGSTOP/SIGCONT, a failing stop, kill -9, a restart with
#     the wall clock an hour behind, checked over a CLOCK_MONOTONIC history.
# Prints the schedules run and the violations found (0 expected); a failing
# simulated schedule prints its seed and faults, and replays exactly.
# Then the peer: keepup and keepalived (VRRPv3, advert_int 0.1) through the
# same partitions (a<->b cut with both still reaching the client and, for
# keepup, the witness; b deaf to a; the holder SIGSTOPped), --peer-runs
# times each, counting the time the floating IP was on both nodes
# (crates/keepup-bench/src/partition.rs).
#
# Usage (as root): bench/chaos.sh --minutes 10 [--cases 200] [--peer-runs 5]
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=10
cases=200
peer_runs=5
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --cases) cases="$2"; shift 2 ;;
        --peer-runs) peer_runs="$2"; shift 2 ;;
        *) echo "usage: bench/chaos.sh --minutes N [--cases C] [--peer-runs R]" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" != 0 ]; then
    echo "bench/chaos.sh: needs root (network namespaces, nftables)" >&2
    exit 1
fi
. scripts/packages.sh
ensure_packages "ip iproute2" "nft nftables" "faketime faketime" "keepalived keepalived"

cargo test --no-run -q -p keepup-cluster --test safety
cargo test --no-run -q -p keepup --test chaos
mkdir -p bench/out
log="bench/out/chaos-$(date +%Y%m%d-%H%M%S).log"
end=$((SECONDS + minutes * 60))
sim=0 lab=0 failed=0 rounds=0
while [ "$SECONDS" -lt "$end" ]; do
    rounds=$((rounds + 1))
    # Two properties, $cases random schedules each.
    if PROPTEST_CASES="$cases" cargo test -q -p keepup-cluster --test safety no_overlap >>"$log" 2>&1; then
        sim=$((sim + 2 * cases))
    else
        failed=$((failed + 1)); echo "round $rounds: simulated schedule FAILED (see $log)"
    fi
    if CI=true cargo test -q -p keepup --test chaos >>"$log" 2>&1; then
        lab=$((lab + 1))
    else
        failed=$((failed + 1)); echo "round $rounds: namespace chaos run FAILED (see $log)"
    fi
    echo "after $((SECONDS / 60)) min: $sim simulated schedules, $lab namespace runs, failures $failed"
done
echo "chaos: $minutes min, $sim simulated schedules (no overlap, bounded recovery), $lab namespace chaos runs (7 fault kinds each), violations/failures: $failed"
if [ "$peer_runs" -gt 0 ]; then
    cargo build -q --release -p keepup -p keepup-bench
    target="${CARGO_TARGET_DIR:-target}/release"
    "$target/failover" --keepup "$target/keepup" --out bench/out --runs 0 --soak-seconds 0 \
        --partitions "$peer_runs" --only keepup-default,keepalived-v3 | sed -n '/### Partitions/,$p'
fi
[ "$failed" -eq 0 ]
