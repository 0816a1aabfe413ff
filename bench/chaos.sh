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
#
# Usage (as root): bench/chaos.sh --minutes 10 [--cases 200]
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=10
cases=200
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --cases) cases="$2"; shift 2 ;;
        *) echo "usage: bench/chaos.sh --minutes N [--cases C]" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" != 0 ]; then
    echo "bench/chaos.sh: needs root (network namespaces, nftables)" >&2
    exit 1
fi
. scripts/packages.sh
ensure_packages "ip iproute2" "nft nftables" "faketime faketime"

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
[ "$failed" -eq 0 ]
