#!/usr/bin/env bash
# Pub/sub across nodes, side by side in one run: one `ferry serve` with the memory broker
# against three `ferry serve` nodes sharing topics through one redis-server, on the same cores.
# Writes bench/results/cluster.md and cluster.jsonl.
#
#   bench/cluster.sh
#
# 1. Fan-out: 1 publisher to SUBS subscribers (10,000) on one topic, by `ferry bench fanout`;
#    for the cluster the subscribers are spread over the three nodes and the publisher is on the
#    first. Two ways: as fast as the window allows (deliveries/s), and paced at RATE messages/s
#    (latency at a load every setup carries). Setups alternate run by run.
# 2. Redis commands per published message (INFO commandstats), at 100 and at SUBS subscribers.
# 3. Recovery: time for a subscribe with `since` to deliver 1,000 missed messages
#    (bench/target/release/recovery, a tokio-tungstenite client).
#
# Every server (the memory node, the three nodes and Redis) runs on core SERVER_CPU (0), the load
# generator on CLIENT_CPU (1): both setups get the same CPU. Knobs: RUNS (3), DURATION (5),
# WARMUP (1), SUBS (10000), SIZE (20), RATE (20), SKIP_BUILD=1, FERRY (binary).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
SUBS=${SUBS:-10000}
SIZE=${SIZE:-20}
RATE=${RATE:-20}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
FERRY=${FERRY:-target/release/ferry}
RECOVERY=bench/target/release/recovery
OUT=bench/results
mkdir -p "$OUT/logs"
RAW=$OUT/cluster.jsonl
: >"$RAW"

command -v redis-server >/dev/null || { echo "bench/cluster.sh: needs redis-server (apt-get install redis-server)" >&2; exit 2; }
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release -p ferry-cli
    cargo build --release --manifest-path bench/Cargo.toml --bin recovery
fi
# 10,000 subscribers: the generator holds them all, the memory node too.
ulimit -n 20000

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

REDIS_PORT=9301
taskset -c "$SERVER_CPU" redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no \
    >"$OUT/logs/redis.log" 2>&1 &
PIDS+=($!)
REDIS_PID=$!
serve() { # PORT BROKER...
    local port=$1
    shift
    local flags=()
    for b in "$@"; do flags+=(--broker "$b"); done
    taskset -c "$SERVER_CPU" "$FERRY" serve --listen "127.0.0.1:$port" --max-connections 20000 \
        --max-connections-per-ip 0 "${flags[@]}" >"$OUT/logs/serve-$port.log" 2>&1 &
    PIDS+=($!)
}
serve 9311 memory
MEMORY_PID=${PIDS[-1]}
for port in 9321 9322 9323; do serve $port "redis://127.0.0.1:$REDIS_PORT"; done
NODE_PIDS="${PIDS[-3]},${PIDS[-2]},${PIDS[-1]}"
for port in 9311 9321 9322 9323; do
    for _ in $(seq 100); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/readyz") == 200 ]] && break
        sleep 0.1
    done
done

redis_calls() { # COMMAND: calls since Redis started
    redis-cli -p $REDIS_PORT INFO commandstats | tr -d '\r' |
        sed -n "s/^cmdstat_$1:calls=\([0-9]*\),.*/\1/p" | grep . || echo 0
}
topic_messages() { # PORTS...: messages the nodes received on their topic routes (publishes)
    local total=0 n
    for port in "$@"; do
        n=$(curl -s "127.0.0.1:$port/metrics" | sed -n 's/^ferry_messages_received_total{route="topics"} \([0-9]*\)$/\1/p')
        total=$((total + ${n:-0}))
    done
    echo $total
}
cpu_ticks() { # PIDS (comma-separated): utime+stime of them all, in clock ticks
    local total=0
    for p in ${1//,/ }; do
        read -r -a f </proc/"$p"/stat
        total=$((total + f[13] + f[14]))
    done
    echo $total
}

RUN=0
fanout() { # SETUP SUBSCRIBERS [extra bench flags]
    local setup=$1 subs=$2
    shift 2
    RUN=$((RUN + 1))
    local urls=() pids
    if [[ $setup == one-node ]]; then
        urls=(--url "ws://127.0.0.1:9311/ws/topics/bench-$RUN")
        pids=$MEMORY_PID
    else
        for port in 9321 9322 9323; do urls+=(--url "ws://127.0.0.1:$port/ws/topics/bench-$RUN"); done
        pids="$NODE_PIDS,$REDIS_PID"
    fi
    local evalsha_before xadd_before publish_before ticks_before sent_before
    sent_before=$(topic_messages 9321 9322 9323)
    evalsha_before=$(redis_calls evalsha)
    xadd_before=$(redis_calls xadd)
    publish_before=$(redis_calls publish)
    ticks_before=$(cpu_ticks "$pids")
    local out
    out=$(taskset -c "$CLIENT_CPU" "$FERRY" bench fanout "${urls[@]}" --connections "$subs" \
        --size "$SIZE" --duration "${DURATION}s" --warmup "${WARMUP}s" --label "$setup" --json --quiet "$@")
    local ticks=$(($(cpu_ticks "$pids") - ticks_before))
    local evalsha=$(($(redis_calls evalsha) - evalsha_before))
    local xadd=$(($(redis_calls xadd) - xadd_before))
    local publish=$(($(redis_calls publish) - publish_before))
    local sent=$(($(topic_messages 9321 9322 9323) - sent_before))
    printf '{"setup":"%s","subscribers":%s,"server_cpu_ticks":%s,"redis_evalsha":%s,"redis_xadd":%s,"redis_publish":%s,"cluster_publishes":%s,"bench":%s}\n' \
        "$setup" "$subs" "$ticks" "$evalsha" "$xadd" "$publish" "$sent" "$out" >>"$RAW"
    python3 - "$out" "$setup" "$subs" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"{sys.argv[2]:9} {sys.argv[3]:>6} subscribers: {r['per_s']:>12,.0f} deliveries/s, p99 {r['latency_us']['p99'] / 1000:.1f} ms, published {r['fanout']['published']}", file=sys.stderr)
PY
}

echo "fan-out, as fast as the window allows" >&2
for ((r = 0; r < RUNS; r++)); do
    if ((r % 2)); then order="cluster one-node"; else order="one-node cluster"; fi
    for setup in $order; do fanout "$setup" "$SUBS"; done
done
echo "fan-out, paced at $RATE messages/s" >&2
for ((r = 0; r < RUNS; r++)); do
    if ((r % 2)); then order="cluster one-node"; else order="one-node cluster"; fi
    for setup in $order; do fanout "$setup" "$SUBS" --rate "$RATE"; done
done
echo "Redis commands per publish at 100 subscribers" >&2
fanout cluster 100

echo "recovery of 1,000 missed messages" >&2
"$RECOVERY" ws://127.0.0.1:9311/ws/control 1000 20 100 >"$OUT/logs/recovery-memory.txt"
"$RECOVERY" ws://127.0.0.1:9321/ws/control 1000 20 100 >"$OUT/logs/recovery-redis.txt"
tail -n1 "$OUT/logs/recovery-memory.txt" "$OUT/logs/recovery-redis.txt" >&2

python3 - "$RAW" "$OUT/logs/recovery-memory.txt" "$OUT/logs/recovery-redis.txt" "$RATE" "$SUBS" >"$OUT/cluster.md" <<'PY'
import json, statistics, sys, subprocess, datetime
raw, rec_mem, rec_redis, rate, subs = sys.argv[1:6]
rows = [json.loads(l) for l in open(raw)]
def med(xs): return statistics.median(xs) if xs else float("nan")
def pick(setup, paced, n):
    return [r for r in rows if r["setup"] == setup and r["subscribers"] == int(n)
            and (r["bench"]["fanout"]["rate"] is not None) == paced]
print("# Pub/sub across nodes (bench/cluster.sh)\n")
print(f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, ferry {subprocess.run(['git','describe','--always','--dirty'],capture_output=True,text=True).stdout.strip()}; "
      "every server (one memory node; or three nodes and redis-server) on one core, the generator on the other.\n")
print(f"| 1 publisher → {int(subs):,} subscribers | one node, memory | three nodes + Redis | ratio |")
print("|---|---:|---:|---:|")
for paced, what in [(False, "as fast as the window allows"), (True, f"paced at {rate} messages/s")]:
    one, three = pick("one-node", paced, subs), pick("cluster", paced, subs)
    d1 = med([r["bench"]["per_s"] for r in one]); d3 = med([r["bench"]["per_s"] for r in three])
    p1 = med([r["bench"]["latency_us"]["p99"] for r in one]) / 1000
    p3 = med([r["bench"]["latency_us"]["p99"] for r in three]) / 1000
    c1 = med([r["server_cpu_ticks"] * 1e4 / max(r["bench"]["fanout"]["deliveries_total"], 1) for r in one])
    c3 = med([r["server_cpu_ticks"] * 1e4 / max(r["bench"]["fanout"]["deliveries_total"], 1) for r in three])
    print(f"| {what}: deliveries/s (median of {len(one)}, {len(three)}) | {d1:,.0f} | {d3:,.0f} | {d3 / d1:.2f} |")
    print(f"| {what}: p99 latency, ms | {p1:.1f} | {p3:.1f} | {p3 / p1:.2f} |")
    print(f"| {what}: server CPU per delivery, µs (all server processes) | {c1:.3f} | {c3:.3f} | {c3 / c1:.2f} |")
print("\nRedis commands per published message over a whole run (INFO commandstats deltas over the messages the nodes' topic routes received, warm-up and sync messages included; PUBLISH also counts each node's probe, one a second per node):\n")
print("| subscribers | messages published | EVALSHA / message | XADD / message | PUBLISH / message |")
print("|---:|---:|---:|---:|---:|")
for n in sorted({r["subscribers"] for r in rows if r["setup"] == "cluster"}):
    for r in [r for r in rows if r["setup"] == "cluster" and r["subscribers"] == n][:1]:
        p = max(r["cluster_publishes"], 1)
        print(f"| {n:,} | {p:,} | {r['redis_evalsha'] / p:.3f} | {r['redis_xadd'] / p:.3f} | {r['redis_publish'] / p:.3f} |")
print("\nRecovery of 1,000 missed messages of 100 B (subscribe with since → last message; 20 repeats):\n")
for name, path in [("one node, memory", rec_mem), ("three nodes + Redis", rec_redis)]:
    print(f"- {name}: {open(path).read().strip().splitlines()[-1]}")
PY
cat "$OUT/cluster.md"
