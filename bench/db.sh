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
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
RUNS="${RUNS:-20}"

. "$repo/scripts/packages.sh"
ensure_packages "mariadbd mariadb-server mariadb-client"

echo "building the benchmark (release)"
(cd "$repo" && cargo build --release -q -p keepup-db --example db_bench)

mkdir -p "$here/out"
out="$here/out/db-$(date -u +%Y%m%dT%H%M%SZ).json"
"$repo/target/release/examples/db_bench" "$RUNS" "$out"
python3 "$here/db/report.py" "$out" "$repo/BENCHMARKS.md" "$(mariadbd --version 2>/dev/null || /usr/sbin/mariadbd --version)"
