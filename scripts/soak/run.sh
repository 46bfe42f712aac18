#!/usr/bin/env bash
# A soak of `ferry serve` (not run by CI: it takes half an hour). One server, on loopback, with
# at once:
#   - IDLE connections that receive one message every 5 s and otherwise only answer the server's
#     keepalive pings (subscribers of a quiet topic: `ferry bench idle` holds its connections
#     without reading, so the server's pings would close them);
#   - ECHO connections echoing without pause, every byte and the order checked (ferry bench echo);
#   - FANOUT_SUBS subscribers of one topic fed RATE messages a second (ferry bench fanout),
#     every delivery checked;
#   - CHURN connections a second that open, echo one line and leave (ferry connect).
# Every 10 s it samples the server's RSS, open files and CPU, and the p99 of a short echo probe.
# It fails if RSS or open files grow after the warm-up, or if any load generator reports a lost,
# altered or reordered message (they exit non-zero on that). Writes docs/soak.md (a table) and
# docs/images/soak.png (a plot, with matplotlib in a virtualenv under target/).
#
#   scripts/soak/run.sh                   30 minutes, 19,000 connections in all
#   DURATION=300 WARMUP=60 IDLE=2000 scripts/soak/run.sh    a short check of the script
#
# Knobs: DURATION (1800 s), WARMUP (300 s), IDLE (16000), ECHO (200), FANOUT_SUBS (2600),
# RATE (20 messages/s), CHURN (5 connections/s), PORT (9501), FERRY (target/release/ferry),
# OUT (docs). The machine's open-file limit is 20,000 per process; each generator is a process.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-1800}
WARMUP=${WARMUP:-300}
IDLE=${IDLE:-16000}
ECHO=${ECHO:-200}
FANOUT_SUBS=${FANOUT_SUBS:-2600}
RATE=${RATE:-20}
CHURN=${CHURN:-5}
PORT=${PORT:-9501}
FERRY=${FERRY:-target/release/ferry}
OUT=${OUT:-docs}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferry-soak.XXXXXX")
SAMPLES=$WORK/samples.tsv

[ -x "$FERRY" ] || cargo build --release -p ferry-cli
ulimit -n 20000

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$FERRY" serve --listen "127.0.0.1:$PORT" --max-connections 20000 --max-connections-per-ip 0 \
    --ping-interval 10s --ping-timeout 10s >"$WORK/serve.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
URL=ws://127.0.0.1:$PORT
echo "soak: ferry serve pid $SERVER; $IDLE idle, $ECHO echoing, $FANOUT_SUBS subscribers at $RATE/s, $CHURN new connections/s, ${DURATION}s"

"$FERRY" bench fanout --url "$URL/ws/topics/quiet" --connections "$IDLE" --size 64 --rate 0.2 \
    --duration "${DURATION}s" --warmup 1s --json --quiet >"$WORK/idle.json" 2>"$WORK/idle.err" &
IDLE_PID=$!
"$FERRY" bench echo --url "$URL/ws/echo" --connections "$ECHO" --size 256 --duration "${DURATION}s" \
    --warmup 1s --json --quiet >"$WORK/echo.json" 2>"$WORK/echo.err" &
ECHO_PID=$!
"$FERRY" bench fanout --url "$URL/ws/topics/soak" --connections "$FANOUT_SUBS" --size 64 --rate "$RATE" \
    --duration "${DURATION}s" --warmup 1s --json --quiet >"$WORK/fanout.json" 2>"$WORK/fanout.err" &
FANOUT_PID=$!
PIDS+=("$IDLE_PID" "$ECHO_PID" "$FANOUT_PID")
(
    end=$((SECONDS + DURATION))
    while [ $SECONDS -lt $end ]; do
        for _ in $(seq "$CHURN"); do
            (echo churn | timeout 5 "$FERRY" connect --linger 50ms "$URL/ws/echo" >/dev/null 2>&1 || echo fail >>"$WORK/churn.fail") &
        done
        sleep 1
    done
    wait
) &
PIDS+=($!)

ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER/stat"; }
printf 't_s\trss_kib\topen_files\tcpu_pct\tprobe_p99_us\tconnections_open\n' >"$SAMPLES"
start=$SECONDS
last_ticks=$(ticks)
hz=$(getconf CLK_TCK)
while [ $((SECONDS - start)) -lt "$DURATION" ]; do
    sleep 10
    kill -0 "$SERVER" 2>/dev/null || { echo "soak: the server died"; exit 1; }
    now_ticks=$(ticks)
    cpu=$(awk -v d=$((now_ticks - last_ticks)) -v hz="$hz" 'BEGIN { printf "%.1f", 100 * d / hz / 10 }')
    last_ticks=$now_ticks
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER/status")
    fds=$(ls "/proc/$SERVER/fd" | wc -l)
    p99=$("$FERRY" bench echo --url "$URL/ws/echo" --connections 1 --size 64 --duration 1s --warmup 0.2s --json --quiet 2>/dev/null \
        | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["latency_us"]["p99"]))' || echo -1)
    open=$(curl -s "127.0.0.1:$PORT/metrics" | awk '$1 == "ferry_connections_open" { print $2 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' $((SECONDS - start)) "$rss" "$fds" "$cpu" "$p99" "$open" | tee -a "$SAMPLES"
done

failed=0
for name in idle echo fanout; do
    pid_var=$(echo "${name^^}_PID")
    if ! wait "${!pid_var}"; then
        echo "soak: ferry bench $name failed: $(tail -n 3 "$WORK/$name.err")"
        failed=1
    fi
done
churn_failures=0
[ -f "$WORK/churn.fail" ] && churn_failures=$(wc -l <"$WORK/churn.fail")

# Growth after the warm-up: the median of the first three samples after it against the last three.
verdict=$(python3 - "$SAMPLES" "$WARMUP" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
after = [r for r in rows if int(r["t_s"]) >= int(sys.argv[2])]
if len(after) < 6:
    print("too few samples after the warm-up"); sys.exit(0)
def grew(key, slack, ratio):
    first = statistics.median(int(r[key]) for r in after[:3])
    last = statistics.median(int(r[key]) for r in after[-3:])
    return last > first * ratio + slack, first, last
bad = []
for key, slack, ratio in [("rss_kib", 8192, 1.10), ("open_files", 16, 1.01)]:
    g, first, last = grew(key, slack, ratio)
    if g:
        bad.append(f"{key} grew from {first} to {last}")
print("; ".join(bad) if bad else "ok")
PY
)
echo "soak: growth after warm-up: $verdict; churn failures: $churn_failures"
[ "$verdict" = ok ] || failed=1

VENV=target/soak-venv
[ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet matplotlib; }
mkdir -p "$OUT/images"
"$VENV/bin/python" - "$SAMPLES" "$OUT/images/soak.png" "$WARMUP" <<'PY'
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
t = [int(r["t_s"]) / 60 for r in rows]
fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
for ax, key, label in zip(axes, ["rss_kib", "open_files", "cpu_pct", "probe_p99_us"],
                          ["RSS (MiB)", "open files", "server CPU (%)", "echo probe p99 (ms)"]):
    values = [int(r[key]) / 1024 if key == "rss_kib" else float(r[key]) / (1000 if key == "probe_p99_us" else 1) for r in rows]
    ax.plot(t, values)
    ax.set_ylabel(label)
    ax.axvline(int(sys.argv[3]) / 60, color="grey", linestyle=":")
axes[-1].set_xlabel("minutes (dotted: end of warm-up)")
fig.suptitle("ferry serve soak")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=80)
PY

{
    echo "# Soak of \`ferry serve\`"
    echo
    echo "\`scripts/soak/run.sh\` on $(date -u '+%Y-%m-%d %H:%M') UTC, ferry $(git describe --always --dirty): ${DURATION} s;"
    echo "$IDLE idle connections answering pings every 10 s, $ECHO echoing 256 B messages without pause,"
    echo "$FANOUT_SUBS subscribers of one topic at $RATE messages/s, $CHURN short connections a second."
    echo
    echo "Verdict: **$( [ $failed -eq 0 ] && echo passed || echo FAILED )**. Growth after the ${WARMUP} s warm-up: $verdict."
    echo "Churn connections that failed: $churn_failures. Load generators (every message checked):"
    for name in idle echo fanout; do
        python3 -c 'import json,sys
try:
    r = json.load(open(sys.argv[1]))
    conns, msgs, warns = r.get("connections"), r.get("messages", 0), r.get("warnings")
    print(f"- {sys.argv[2]}: {conns} connections, {msgs:,} messages checked, warnings {warns}")
except Exception as e:
    print(f"- {sys.argv[2]}: no report ({e})")' "$WORK/$name.json" "$name"
    done
    echo
    echo "![RSS, open files, CPU and probe latency over the soak](images/soak.png)"
    echo
    echo "| minute | RSS (MiB) | open files | server CPU | probe p99 (ms) | connections |"
    echo "|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' 'NR > 1 && NR % 6 == 2 { printf "| %.1f | %.1f | %s | %s%% | %.2f | %s |\n", $1 / 60, $2 / 1024, $3, $4, $5 / 1000, $6 }' "$SAMPLES"
} >"$OUT/soak.md"
cp "$SAMPLES" "$OUT/soak.tsv"
echo "soak: report in $OUT/soak.md, plot in $OUT/images/soak.png, samples in $OUT/soak.tsv"
exit $failed
