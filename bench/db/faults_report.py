#!/usr/bin/env python3
"""Summarise the database fault runs (JSON lines written by
crates/keepup/tests/db_faults.rs through KEEPUP_DB_FAULT_REPORT) and replace
the "## Database faults through the agents" section of BENCHMARKS.md.

usage: faults_report.py BENCHMARKS.md NOISE_TEXT strict.jsonl [relaxed.jsonl]"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from section import replace_section  # noqa: E402

bench_md, noise = sys.argv[1], sys.argv[2]
files = sys.argv[3:]


def load(path):
    faults, totals = [], None
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        v = json.loads(line)
        if "fault" in v:
            faults.append(v)
        else:
            totals = v
    return faults, totals


def mmm(xs):
    xs = sorted(xs)
    if not xs:
        return "n/a"
    return f"{xs[0]:.0f} / {statistics.median(xs):.0f} / {xs[-1]:.0f}"


runs = [load(f) for f in files]
order = []
for faults, _ in runs:
    for f in faults:
        if f["fault"] not in order:
            order.append(f["fault"])

what = {
    "HeartbeatOnlyCut": "heartbeat port cut between the primary's node and another (MariaDB reachable)",
    "KillPrimaryServer": "kill -9 of the primary's mariadbd",
    "DatabaseOnlyCut": "MariaDB port cut between the primary and one replica",
    "PausePrimaryAgent": "SIGSTOP of the primary's agent for 3 s",
    "CutReplicaThenKillPrimary": "the next node's replica cut from the primary, then kill -9 of the primary",
    "KillPrimaryAgent": "kill -9 of the primary's agent",
    "PartitionPrimary": "the primary's node partitioned for 4 s (every packet dropped)",
    "CutAllReplicasThenKillPrimary": "every replica cut from the primary for 3 s, then kill -9 of the primary",
    "PowerOffPrimary": "power failure of the primary's node (link down, agent and mariadbd killed)",
}

lines = ["## Database faults through the agents", ""]
lines.append(
    "Measured by `bench/db.sh` (its second part) with the Jepsen-style test "
    "`crates/keepup/tests/db_faults.rs` in release mode: three node namespaces a, b, c, each "
    "with a real `mariadbd` and a keepup agent (three voters), `db-primary` plus a writer VIP, "
    "three clients in the client namespace inserting autocommit rows through the VIP (a "
    "connect unanswered after 250 ms is retried, as a pool would) and recording every "
    "acknowledgement, a sampler reading every server's `read_only` every 20 ms. After each "
    "fault the lab is healed as an operator would (restart what died, `keepup db setup`, "
    "`--reseed` when setup says a returned server diverged). The checker: every acknowledged "
    "row on the final primary, each client's rows in commit order, equal checksums on every "
    "server, never two servers known writable at once. Write gap: the longest stretch "
    "without any acknowledged write that overlaps the fault, as the clients saw it."
)
lines.append("")
lines.append(f"Machine: {os.cpu_count()} cores; {noise}")
lines.append("")
modes = []
for faults, totals in runs:
    mode = totals["semi_sync"] if totals else (faults[0]["semi_sync"] if faults else "?")
    modes.append(mode)
head = "| Fault | " + " | ".join(f"write gap ms, {m} (min / median / max) | lost, {m}" for m in modes) + " |"
lines.append(head)
lines.append("|---|" + "---|---|" * len(modes))
for name in order:
    cells = []
    for faults, _ in runs:
        xs = [f["write_gap_ms"] for f in faults if f["fault"] == name]
        lost = sum(f["lost"] for f in faults if f["fault"] == name)
        cells.append(mmm(xs) if xs else "—")
        cells.append(str(lost) if xs else "—")
    lines.append(f"| {what.get(name, name)} | " + " | ".join(cells) + " |")
lines.append("")
for mode, (_, t) in zip(modes, runs):
    if not t:
        continue
    lines.append(
        f"- {mode}: {t['acked']} acknowledged writes, {t['indeterminate']} indeterminate "
        f"(failed or timed out: may or may not exist), {t['lost']} acknowledged lost, "
        f"{t['reordered']} out of order, {t['duplicated']} duplicated, {t['diverged']} servers "
        f"diverged, {t['two_writable']} stretches with two writable servers, {t['samples']} "
        f"read_only samples, {t['reseeds']} re-seeds of a returned server, {t['seconds']:.0f} s."
    )
lines.append("")
lines.append(
    "Targets (issue #10): kill -9 → first write median ≤ 1 s; 0 acknowledged writes lost in "
    "every strict-mode scenario. Relaxed mode (`semi_sync_relaxed = true`, 500 ms timeout) is "
    "run only for the scenarios where the difference shows: after the timeout the primary "
    "acknowledges writes no replica has, and a failover loses them (strict mode blocks writes "
    "instead, which is the long write gap above). No peer runs here yet: of the "
    "failover managers only MHA is a Debian package (mha4mysql-manager 0.58), and it drives "
    "failover over SSH (it copies binlog and relay-log differences between the hosts, and its "
    "GTID mode is MySQL's), so a same-run comparison needs sshd and keys in every lab node, "
    "not built yet; Orchestrator and MaxScale are not "
    "packaged (see the published figures above).")
lines.append("")
section = "\n".join(lines) + "\n"
replace_section(bench_md, "Database faults through the agents", section, before="Cluster failover")
print(section)
