#!/usr/bin/env python3
"""Summarise db_bench JSON and replace the "## Database failover" section of
BENCHMARKS.md (creating the file or the section if missing; other sections
are left untouched)."""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from section import replace_section  # noqa: E402

runs = json.load(open(sys.argv[1]))
bench_md = sys.argv[2]
version = sys.argv[3].strip() if len(sys.argv) > 3 else "MariaDB"


def mmm(xs):
    xs = sorted(xs)
    if not xs:
        return "n/a"
    return f"{xs[0]:.0f} / {statistics.median(xs):.0f} / {xs[-1]:.0f}"


semi = [r for r in runs if r["semi_sync"]]
asyn = [r for r in runs if not r["semi_sync"]]
allr = runs
cpu = ""
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass

lines = []
lines.append("## Database failover")
lines.append("")
lines.append(
    f"Measured by `bench/db.sh` ({len(runs)} runs: {len(semi)} with semi-sync, {len(asyn)} asynchronous; "
    f"{os.cpu_count()} cores{', ' + cpu if cpu else ''}; {version}). Each run: three fresh local "
    "`mariadbd` on 127.0.0.1 set up by `keepup db setup`, one application connection inserting "
    "autocommit rows through the writer endpoint (the address keepup reports as primary), "
    "then `kill -9` of the primary. Detection is keepup's own watcher: connect + `SELECT 1` every "
    "100 ms with a 100 ms limit, 3 consecutive failures = dead; then `promote_after_failure`. "
    "Switchover is `keepup db switchover` on the surviving pair under the same writer. "
    "All on one machine: no network latency, so these are lower bounds for a LAN."
)
lines.append("")
lines.append("| Measure (min / median / max) | keepup | target |")
lines.append("|---|---|---|")
lines.append(f"| kill -9 → first write accepted by the new primary, ms | {mmm([r['failover_ms'] for r in allr])} | median ≤ 1000 |")
lines.append(f"| … of which detection (3 × 100 ms polls), ms | {mmm([r['detect_ms'] for r in allr])} | |")
lines.append(f"| … of which promotion (`promote_after_failure`), ms | {mmm([r['promote_ms'] for r in allr])} | |")
lines.append(f"| switchover write unavailability (keepup's window), ms | {mmm([r['switchover_ms'] for r in allr])} | median ≤ 300 |")
lines.append(f"| switchover gap seen by the client (last ack old → first ack new), ms | {mmm([r['switchover_client_gap_ms'] for r in allr])} | |")
lost_semi = sum(r["lost"] for r in semi)
acked_semi = sum(r["acked"] for r in semi)
lost_async = sum(r["lost"] for r in asyn)
acked_async = sum(r["acked"] for r in asyn)
lines.append(f"| acknowledged writes lost on failover, semi-sync | {lost_semi} of {acked_semi} | 0 |")
lines.append(f"| acknowledged writes lost on failover, asynchronous | {lost_async} of {acked_async} | (may be > 0) |")
lines.append(f"| acknowledged writes lost on switchover | {sum(r['switchover_lost'] for r in allr)} | 0 |")
lines.append("")
lines.append("For comparison, published / typical figures of other tools (not measured here; they depend "
             "heavily on settings, and each also has to detect the failure first):")
lines.append("")
lines.append("| Tool | Typical failover time | Source of the figure |")
lines.append("|---|---|---|")
lines.append("| MHA (MySQL Master HA) | ~10–30 s | published: the MHA wiki overview says failover \"usually within 10-30 seconds\" (9–12 s to detect the failure, optional 7–10 s to power off the old master, a few s to apply relay logs); https://github.com/yoshinorim/mha4mysql-manager/wiki/Overview |")
lines.append("| Orchestrator | ~10–20 s typical | reported: openark/orchestrator issue #648 measured 12 s and 23 s from \"master dead\" to \"recovered\", about 10 s of it to declare DeadMaster; depends on InstancePollSeconds and the replicas' own reconnect settings |")
lines.append("| MaxScale (mariadbmon) | several s (~10 s with defaults) | from defaults: monitor_interval 2 s × failcount 5 consecutive failed checks before auto_failover acts (MaxScale MariaDB Monitor docs), plus the promotion itself |")
lines.append("")
lines.append("These are not like-for-like: the figures above are for real networks and conservative "
             "detection settings chosen to avoid false failovers, while keepup's numbers come from one "
             "machine. Most of the difference is detection: keepup can afford a 100 ms check because the "
             "decision that a node is dead is the cluster layer's (heartbeats over several links, quorum), "
             "where the agent's default is dead_ms = 300. Promotion itself ("
             f"{min(r['promote_ms'] for r in allr):.0f}–{max(r['promote_ms'] for r in allr):.0f} ms here) is of the same "
             "nature in all these tools: stop replication, open the most advanced replica, repoint the rest.")
lines.append("")
lines.append("Through the agents, with the cluster deciding who is dead, a writer VIP that moves, and every fault shape the database issue names: the next section.")
lines.append("")
section = "\n".join(lines) + "\n"

replace_section(bench_md, "Database failover", section)
print(section)
