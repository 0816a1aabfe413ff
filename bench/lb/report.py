"""Aggregates bench/lb.sh results (median over rounds) into a markdown table
and writes it as the "## Load balancer" section of BENCHMARKS.md, leaving
every other section alone."""
import collections
import datetime
import os
import platform
import statistics
import subprocess
import sys

results, rss_path, bench_md, duration, rounds = sys.argv[1:6]
TOOLS = ["keepup", "haproxy", "nginx"]
NAMES = {"keepup": "keepup", "haproxy": "HAProxy", "nginx": "nginx"}
SCEN = [
    ("ka64", "keep-alive, 64 conns"),
    ("ka512", "keep-alive, 512 conns"),
    ("close", "new connection per request, 64 conns"),
    ("body16k", "16 KiB body, keep-alive, 64 conns"),
    ("tcp", "TCP mode (L4), keep-alive, 64 conns"),
]

data = collections.defaultdict(list)
for line in open(results):
    w, r, s, t, rps, p50, p99, err, cpu, user = line.rstrip("\n").split("\t")
    data[(w, s, t)].append(
        (float(rps), float(p50), float(p99), int(err), float(cpu), float(user))
    )
rss = {}
for line in open(rss_path):
    w, t, kb = line.split()
    rss[(w, t)] = int(kb)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except Exception:
        return "?"


lines = []
lines.append("## Load balancer")
lines.append("")
lines.append(
    "`bench/lb.sh` on %s, %s UTC: %s s per run, median of %s interleaved rounds "
    "(keepup, HAProxy, nginx, then again), wrk on 127.0.0.1, backends: one nginx worker serving "
    "3 ports per body size (13 bytes, 16 KiB), round-robin, keep-alive to backends, "
    "X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and Forwarded added by every proxy "
    "(bench/lb/configs.sh). With 1 worker the proxy is pinned to core 0 and wrk "
    "plus backends to core 1; with 2 nothing is pinned (the machine has 2 cores, so the 2-worker "
    "rows share cores with wrk and the backends)."
    % (
        platform.node() or "this machine",
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        duration,
        rounds,
    )
)
lines.append("")
lines.append(
    "Versions: %s; %s; %s. Latency in ms (wrk --latency). Ratio = keepup req/s / peer req/s. "
    "CPU µs/req is the proxy's user+system CPU time over the run divided by the requests "
    "(wrk counts), a figure much less sensitive than req/s to other load on the machine."
    % (version(["haproxy", "-v"]), version(["nginx", "-v"]), version(["wrk", "-v"]))
)
lines.append("")
workers = sorted({k[0] for k in data}, key=int)
for w in workers:
    lines.append("### %s worker%s" % (w, "" if w == "1" else "s"))
    lines.append("")
    lines.append(
        "| scenario | keepup req/s | HAProxy req/s | nginx req/s | vs HAProxy | vs nginx | vs better peer "
        "| keepup p50 / p99 | HAProxy p50 / p99 | nginx p50 / p99 | CPU µs/req k / h / n "
        "| req per CPU-s vs more frugal peer | user CPU µs/req k / h / n | errors k/h/n |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|---|---|")
    for s, label in SCEN:
        row = {}
        for t in TOOLS:
            xs = data.get((w, s, t), [])
            row[t] = (
                med([x[0] for x in xs]),
                med([x[1] for x in xs]),
                med([x[2] for x in xs]),
                sum(x[3] for x in xs),
                med([x[4] for x in xs]),
                med([x[5] for x in xs]),
            )
        k, h, n = row["keepup"][0], row["haproxy"][0], row["nginx"][0]
        ratio = lambda a, b: "%.2f×" % (a / b) if b and b == b and b > 0 else "n/a"
        best = max(h, n)
        lines.append(
            "| %s | %.0f | %.0f | %.0f | %s | %s | %s | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f | %.1f / %.1f / %.1f | %s | %.1f / %.1f / %.1f | %d/%d/%d |"
            % (
                label,
                k,
                h,
                n,
                ratio(k, h),
                ratio(k, n),
                ratio(k, best),
                row["keepup"][1],
                row["keepup"][2],
                row["haproxy"][1],
                row["haproxy"][2],
                row["nginx"][1],
                row["nginx"][2],
                row["keepup"][4],
                row["haproxy"][4],
                row["nginx"][4],
                ratio(min(row["haproxy"][4], row["nginx"][4]), row["keepup"][4]),
                row["keepup"][5],
                row["haproxy"][5],
                row["nginx"][5],
                row["keepup"][3],
                row["haproxy"][3],
                row["nginx"][3],
            )
        )
    lines.append("")
    lines.append(
        "Peak RSS over all scenarios (VmHWM, summed over the proxy's processes): "
        + ", ".join(
            "%s %.1f MiB" % (NAMES[t], rss.get((w, t), 0) / 1024.0) for t in TOOLS
        )
        + "."
    )
    lines.append("")
# A plain summary computed from the table, so it cannot drift from it.
rows = met = cpu_met = p99_met = user_met = 0
for w in workers:
    for sc, _ in SCEN:
        k = med([x[0] for x in data.get((w, sc, "keepup"), [])])
        best = max(
            med([x[0] for x in data.get((w, sc, "haproxy"), [])]),
            med([x[0] for x in data.get((w, sc, "nginx"), [])]),
        )
        kc = med([x[4] for x in data.get((w, sc, "keepup"), [])])
        bc = min(
            med([x[4] for x in data.get((w, sc, "haproxy"), [])]),
            med([x[4] for x in data.get((w, sc, "nginx"), [])]),
        )
        kp99 = med([x[2] for x in data.get((w, sc, "keepup"), [])])
        bp99 = min(
            med([x[2] for x in data.get((w, sc, "haproxy"), [])]),
            med([x[2] for x in data.get((w, sc, "nginx"), [])]),
        )
        rows += 1
        met += k >= 1.1 * best
        cpu_met += bc >= 1.1 * kc
        ku = med([x[5] for x in data.get((w, sc, "keepup"), [])])
        bu = min(
            med([x[5] for x in data.get((w, sc, "haproxy"), [])]),
            med([x[5] for x in data.get((w, sc, "nginx"), [])]),
        )
        user_met += ku < bu
        p99_met += kp99 <= bp99
mem_rows = mem_met = 0
for w in workers:
    mem_rows += 1
    mem_met += rss.get((w, "keepup"), 0) <= min(rss.get((w, "haproxy"), 0), rss.get((w, "nginx"), 0))
lines.append("### Reading the numbers")
lines.append("")
lines.append(
    "Against the targets (computed from the tables above): keepup ≥ 1.1× the better peer in "
    "req/s in %d of %d rows; ≥ 1.1× the more frugal peer in requests per proxy CPU-second in "
    "%d of %d rows; p99 no higher than both peers' in %d of %d rows; peak memory no larger than "
    "either peer's in %d of %d runs; keepup's own (user-space) CPU per request below both "
    "peers' in %d of %d rows. Other work on this 2-core machine moves req/s by several "
    "per cent between rounds (see the spread of the rounds in the raw output), so ratios within "
    "±5 %% are noise; the CPU µs/req column is the steadier measure."
    % (met, rows, cpu_met, rows, p99_met, rows, mem_met, mem_rows, user_met, rows)
)
lines.append("")
notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes.md")
if os.path.exists(notes):
    lines.append(open(notes).read().strip())
    lines.append("")
section = "\n".join(lines).rstrip() + "\n"

text = open(bench_md).read() if os.path.exists(bench_md) else "# Benchmarks\n"
start = text.find("\n## Load balancer")
if text.startswith("## Load balancer"):
    start = 0
if start == -1:
    text = text.rstrip() + "\n\n" + section
else:
    s0 = start + (0 if start == 0 else 1)
    nxt = text.find("\n## ", s0 + 3)
    end = len(text) if nxt == -1 else nxt + 1
    text = text[:s0] + section + ("\n" + text[end:] if end < len(text) else "")
open(bench_md, "w").write(text)
print(section)
