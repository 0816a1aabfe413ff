"""Turns one wrk --latency output into a TSV line:
workers, round, scenario, tool, req/s, p50, p99, errors (non-2xx + socket
errors), proxy CPU microseconds per request, and of those the user-space
part (from the clock ticks given: all, user)."""
import os
import re
import sys

path, workers, rnd, scenario, tool, ticks, user_ticks = sys.argv[1:8]
text = open(path, errors="replace").read()


def dur(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s)
    if not m:
        return float("nan")
    v = float(m.group(1))
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
errors = 0
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if m:
    errors += int(m.group(1))
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if m:
    # Reads that end because the server closes (Connection: close) are not failures.
    errors += int(m.group(1)) + int(m.group(3)) + int(m.group(4))
m = re.search(r"(\d+) requests in", text)
total = int(m.group(1)) if m else 0
per_req = lambda t: (
    "%.2f" % (int(t) * 1e6 / os.sysconf("SC_CLK_TCK") / total) if total else "nan"
)
cpu_per_req = per_req(ticks)
user_per_req = per_req(user_ticks)
print(
    "\t".join(
        [
            workers,
            rnd,
            scenario,
            tool,
            rps.group(1) if rps else "0",
            "%.3f" % dur(p50.group(1)) if p50 else "nan",
            "%.3f" % dur(p99.group(1)) if p99 else "nan",
            str(errors),
            cpu_per_req,
            user_per_req,
        ]
    )
)
