#!/usr/bin/env bash
# Load-balancer benchmark: keepup-lb vs HAProxy vs nginx, interleaved.
#
#   bench/lb.sh            # full run (about 15 minutes), writes BENCHMARKS.md
#   DURATION=3 ROUNDS=3 bench/lb.sh   # quicker
#
# Everything runs on 127.0.0.1. The backends are one nginx worker serving
# three ports per body size (a fixed 13-byte body, a 16 KiB file); each proxy
# gets identical settings (round-robin over the same backends, keep-alive to
# backends, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and
# Forwarded added, no health checks, no access log). With one worker the
# proxy is pinned to core 0 and wrk plus the backends to core 1.
# Scenarios: keep-alive at 64 and 512 connections, a new connection per
# request (wrk -H 'Connection: close'), a 16 KiB response body, and TCP mode.
# Results: median of ROUNDS runs; peak RSS is VmHWM summed over the proxy's
# processes after all scenarios.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"
WORKERS_LIST="${WORKERS_LIST:-1 2}"

. "$repo/scripts/packages.sh"
ensure_packages "haproxy haproxy" "nginx nginx" "wrk wrk" "curl curl" \
    "/usr/lib/nginx/modules/ngx_stream_module.so libnginx-mod-stream"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "building keepup-lb (release)"
(cd "$repo" && cargo build --release -q -p keepup-lb --example lb-standalone)
bin="$repo/target/release/examples"

work="$(mktemp -d /tmp/keepup-lb-bench.XXXXXX)"
chmod 755 "$work" # the backends' nginx worker (an unprivileged user) reads www/ in it
pids=()
cleanup() {
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT


# Ports: keepup 181xx, HAProxy 182xx, nginx 183xx; x81 small, x82 big, x83 tcp.
port() { # tool scenario
    local base
    case "$1" in keepup) base=18100 ;; haproxy) base=18200 ;; nginx) base=18300 ;; esac
    case "$2" in ka64 | ka512 | close) echo $((base + 81)) ;; body16k) echo $((base + 82)) ;; tcp) echo $((base + 83)) ;; esac
}

# CPU time (clock ticks) of a process and its children's threads: user +
# system, or user only with a second argument "user".
cpu_ticks() {
    local total=0 q f expr='$14 + $15'
    [ "${2:-}" = user ] && expr='$14'
    for q in "$1" $(pgrep -P "$1" || true); do
        for f in /proc/"$q"/task/*/stat; do
            [ -e "$f" ] && total=$((total + $(awk "{print $expr}" "$f")))
        done
    done
    echo "$total"
}

results="$work/results.tsv"
: >"$results"
rss="$work/rss.tsv"
: >"$rss"

for W in $WORKERS_LIST; do
    echo "== $W worker(s)"
    if [ "$W" = 1 ]; then PIN_PROXY="taskset -c 0"; PIN_WRK="taskset -c 1"; WRK_T=1; else PIN_PROXY=""; PIN_WRK=""; WRK_T=2; fi
    "$here/lb/configs.sh" "$work" "$W"
    $PIN_WRK nginx -c "$work/backends.conf" -p "$work" >"$work/backends.log" 2>&1 & bp=$!
    pids+=($bp)
    $PIN_PROXY "$bin/lb-standalone" "$work/keepup.toml" >"$work/keepup.log" 2>&1 & kp=$!
    pids+=($kp)
    $PIN_PROXY haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 & hp=$!
    pids+=($hp)
    $PIN_PROXY nginx -c "$work/nginx.conf" -p "$work" >"$work/nginx.log" 2>&1 & np=$!
    pids+=($np)
    sleep 1
    for t in keepup haproxy nginx; do
        for s in ka64 body16k tcp; do
            code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(port $t $s)/" || true)
            [ "$code" = 200 ] || { echo "$t $s answers ${code:-nothing}, not 200; see $work/*.log"; exit 1; }
        done
    done
    for round in $(seq 1 "$ROUNDS"); do
        for s in ka64 ka512 close body16k tcp; do
            for t in keepup haproxy nginx; do
                conns=64; extra=()
                [ "$s" = ka512 ] && conns=512
                [ "$s" = close ] && extra=(-H "Connection: close")
                out="$work/wrk-$W-$round-$s-$t.txt"
                case $t in keepup) p=$kp ;; haproxy) p=$hp ;; nginx) p=$np ;; esac
                c0=$(cpu_ticks "$p")
                u0=$(cpu_ticks "$p" user)
                $PIN_WRK wrk -t"$WRK_T" -c"$conns" -d"${DURATION}s" --latency "${extra[@]}" \
                    "http://127.0.0.1:$(port $t $s)/" >"$out" 2>&1 || true
                c1=$(cpu_ticks "$p")
                u1=$(cpu_ticks "$p" user)
                python3 "$here/lb/parse_wrk.py" "$out" "$W" "$round" "$s" "$t" "$((c1 - c0))" "$((u1 - u0))" >>"$results"
                tail -1 "$results" | awk -F'\t' '{printf "  w%s r%s %-8s %-8s %10.0f req/s  p50 %-8s p99 %-8s errors %-4s cpu/req %s us (user %s)\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10}'
            done
        done
    done
    for t in keepup haproxy nginx; do
        case $t in keepup) p=$kp ;; haproxy) p=$hp ;; nginx) p=$np ;; esac
        total=0
        for q in $p $(pgrep -P "$p" || true); do
            kb=$(awk '/VmHWM/ {print $2}' "/proc/$q/status" 2>/dev/null || echo 0)
            total=$((total + ${kb:-0}))
        done
        printf '%s\t%s\t%s\n' "$W" "$t" "$total" >>"$rss"
    done
    kill "$kp" "$hp" 2>/dev/null || true
    kill -QUIT "$np" "$bp" 2>/dev/null || true
    wait "$kp" "$hp" "$np" "$bp" 2>/dev/null || true
done

python3 "$here/lb/report.py" "$results" "$rss" "$repo/BENCHMARKS.md" "$DURATION" "$ROUNDS"
echo "raw output in $work"
