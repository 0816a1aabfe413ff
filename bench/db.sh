#!/usr/bin/env bash
# Database failover benchmark: keepup's MariaDB failover and switchover.
#
#   bench/db.sh           # 20 runs (10 semi-sync, 10 async), about 2 minutes
#   RUNS=6 bench/db.sh    # quicker
#
# Each run starts three fresh local mariadbd servers on 127.0.0.1 (primary +
# two replicas, `keepup_db::setup`), writes one autocommit row at a time
# through the writer endpoint (the address keepup reports as primary), then:
#   failover   kill -9 of the primary; keepup's watcher polls the primary every
#              100 ms (connect + SELECT 1, 100 ms limit), 3 consecutive failures
#              = dead, then promote_after_failure; the writer follows the new
#              primary. Measured: kill -> first write acknowledged by the new primary.
#   lost       acknowledged writes missing on the new primary afterwards.
#   switchover keepup db switchover on the surviving pair, under the same
#              writer: keepup's measured write-unavailability window.
# Results go to bench/out/db-<time>.json and into BENCHMARKS.md under
# "## Database failover" (only that section is replaced).
#
# Second part, through the agents (ROUNDS=5 by default; ROUNDS=0 skips it):
# the Jepsen-style test crates/keepup/tests/db_faults.rs in release mode,
# ROUNDS rounds of its nine faults in strict semi-sync (kill -9 of the
# primary's mariadbd, its link to one replica cut first, every replica cut
# longer than the semi-sync timeout, SIGSTOP of the primary's agent, ...),
# then the scenarios where relaxed semi-sync differs, in relaxed mode.
# Results: bench/out/dbfaults-<time>-{strict,relaxed}.jsonl and BENCHMARKS.md
# "## Database faults through the agents". Needs root (namespaces).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
RUNS="${RUNS:-20}"

. "$repo/scripts/packages.sh"
ensure_packages "mariadbd mariadb-server mariadb-client" "ip iproute2" "nft nftables"
ROUNDS="${ROUNDS:-5}"

echo "building the benchmark (release)"
(cd "$repo" && cargo build --release -q -p keepup-db --example db_bench)

mkdir -p "$here/out"
out="$here/out/db-$(date -u +%Y%m%dT%H%M%SZ).json"
"$repo/target/release/examples/db_bench" "$RUNS" "$out"
python3 "$here/db/report.py" "$out" "$repo/BENCHMARKS.md" "$(mariadbd --version 2>/dev/null || /usr/sbin/mariadbd --version)"

if [ "$ROUNDS" -gt 0 ]; then
  echo "database faults through the agents: $ROUNDS rounds (strict), then relaxed"
  (cd "$repo" && cargo build --release -q -p keepup && cargo test --release -q -p keepup --test db_faults --no-run)
  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  strict="$here/out/dbfaults-$stamp-strict.jsonl"
  relaxed="$here/out/dbfaults-$stamp-relaxed.jsonl"
  load0="$(cut -d' ' -f1-3 /proc/loadavg)"
  (cd "$repo" && CI=true KEEPUP_DB_FAULT_ROUNDS="$ROUNDS" KEEPUP_DB_FAULT_REPORT="$strict" \
    cargo test --release -q -p keepup --test db_faults -- --nocapture)
  (cd "$repo" && CI=true KEEPUP_DB_FAULT_ROUNDS="$ROUNDS" KEEPUP_DB_SEMI_SYNC=relaxed \
    KEEPUP_DB_FAULTS=CutAllReplicasThenKillPrimary,KillPrimaryServer,CutReplicaThenKillPrimary \
    KEEPUP_DB_FAULT_REPORT="$relaxed" \
    cargo test --release -q -p keepup --test db_faults -- --nocapture)
  load1="$(cut -d' ' -f1-3 /proc/loadavg)"
  python3 "$here/db/faults_report.py" "$repo/BENCHMARKS.md" \
    "load average $load0 before, $load1 after (other work on the machine shows here); $(date -u +%Y-%m-%d)" \
    "$strict" "$relaxed"
fi
