#!/usr/bin/env bash
# Side by side: `ferry echo` against tokio-tungstenite, fastwebsockets and a plain TCP echo (the
# floor), measured by `ferry bench`. Writes bench/results/latest.md (the report),
# latest.jsonl (one `ferry bench --json` line per run) and latest.machine.tsv.
#
#   bench/run.sh              the full matrix, about 30 minutes
#   QUICK=1 bench/run.sh      a smoke run: 4 cells, 1 s runs, about 3 minutes
#
# Knobs (environment): RUNS (3), DURATION and WARMUP in seconds (5, 1), CONNS ("1 16 100 500"),
# SIZES ("20 1KiB 16KiB 64KiB"), KIND (binary|text), BULK_SIZES ("1MiB 16MiB"), IDLE_CONNS
# (10000), HS_CONNS (16), SERVER_CPU (0), CLIENT_CPU (1), BASE_PORT (9101), SERVERS (all four),
# SKIP_BUILD=1 (use the binaries as built), FERRY (path to the ferry binary), RESULTS (output dir).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    : "${CONNS:=1 100}" "${SIZES:=20 16KiB}" "${DURATION:=1}" "${WARMUP:=0.5}"
    : "${BULK_SIZES:=1MiB 16MiB}" "${IDLE_CONNS:=2000}"
fi
RUNS=${RUNS:-3}
CONNS=${CONNS:-1 16 100 500}
SIZES=${SIZES:-20 1KiB 16KiB 64KiB}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
KIND=${KIND:-binary}
BULK_SIZES=${BULK_SIZES:-1MiB 16MiB}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_HOLD=${IDLE_HOLD:-2}
HS_CONNS=${HS_CONNS:-16}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-9101}
RESULTS=${RESULTS:-bench/results}
read -r -a SERVERS <<<"${SERVERS:-plain-tcp ferry fastwebsockets tokio-tungstenite}"

log() { printf '%s\n' "$*" >&2; }
die() { log "bench/run.sh: $*"; exit 1; }

for tool in taskset timeout cargo; do
    command -v "$tool" >/dev/null || die "$tool is needed (taskset and timeout: util-linux, coreutils)"
done
cpus=$(nproc)
((cpus >= 2)) || log "warning: $cpus CPU: server and load generator will share it; numbers mean little"
((SERVER_CPU < cpus && CLIENT_CPU < cpus)) || die "SERVER_CPU=$SERVER_CPU / CLIENT_CPU=$CLIENT_CPU: this machine has CPUs 0-$((cpus - 1))"
[[ $SERVER_CPU != "$CLIENT_CPU" ]] || log "warning: SERVER_CPU = CLIENT_CPU: server and load generator share a core"

# --- build ------------------------------------------------------------------------------------
PEERS=$ROOT/bench/target/release
FERRY=${FERRY:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry}
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building ferry (release) and the peer servers..."
    cargo build --release -p ferry-cli --quiet
    cargo build --release --manifest-path bench/Cargo.toml --target-dir bench/target --quiet
fi
for bin in "$FERRY" "$PEERS/tcp-echo" "$PEERS/tungstenite-echo" "$PEERS/fastwebsockets-echo" "$PEERS/report"; do
    [[ -x $bin ]] || die "$bin is missing; run without SKIP_BUILD=1"
done

# Enough file descriptors for the idle test, on both sides (children inherit the limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < IDLE_CONNS + 256)); then
    log "warning: ulimit -n is $(ulimit -n); idle test lowered to $(($(ulimit -n) - 256)) connections"
    IDLE_CONNS=$(($(ulimit -n) - 256))
fi

mkdir -p "$RESULTS/logs"
RAW=$RESULTS/latest.jsonl
MACHINE=$RESULTS/latest.machine.tsv
LOGS=$RESULTS/logs
: >"$RAW"
rm -f "$LOGS"/*.log

# --- servers ----------------------------------------------------------------------------------
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

port_of() {
    local i
    for i in "${!SERVERS[@]}"; do
        [[ ${SERVERS[$i]} == "$1" ]] && { echo $((BASE_PORT + i)); return; }
    done
    die "unknown server $1"
}

# True once something listens on 127.0.0.1:PORT (read from /proc, so nothing connects to it).
listening() {
    local hex
    hex=$(printf '0100007F:%04X 00000000:0000 0A' "$1")
    grep -q "$hex" /proc/net/tcp
}

start_server() {
    local name=$1 port=$2 cmd
    case $name in
        ferry) cmd=("$FERRY" echo --listen "127.0.0.1:$port" --threads 1 --no-deflate
            --max-message-size 64MiB --max-frame-size 64MiB) ;;
        tokio-tungstenite) cmd=("$PEERS/tungstenite-echo" --listen "127.0.0.1:$port") ;;
        fastwebsockets) cmd=("$PEERS/fastwebsockets-echo" --listen "127.0.0.1:$port") ;;
        plain-tcp) cmd=("$PEERS/tcp-echo" --listen "127.0.0.1:$port") ;;
        *) die "unknown server $name" ;;
    esac
    if listening "$port"; then
        log "port $port is already in use; set BASE_PORT to a free range"
        return 1
    fi
    RUST_LOG=warn taskset -c "$SERVER_CPU" "${cmd[@]}" </dev/null >>"$LOGS/$name.log" 2>&1 &
    SERVER_PID=$!
    local i
    for i in $(seq 1 200); do
        listening "$port" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "$name did not start listening on $port; see $LOGS/$name.log"
    stop_server
    return 1
}

stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 40); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

json_escape() { sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/ /g' | tr -d '\n\r'; }

# bench_one SERVER MODE CONNECTIONS SIZE TIME_LIMIT -- extra ferry bench arguments
STEP=0
bench_one() {
    local name=$1 mode=$2 conns=$3 size=$4 limit=$5
    shift 5
    local port url proto out err
    STEP=$((STEP + 1))
    port=$(port_of "$name")
    if [[ $name == plain-tcp ]]; then url=tcp://127.0.0.1:$port proto=tcp; else url=ws://127.0.0.1:$port/ proto=ws; fi
    local what="[$STEP/$TOTAL] $mode $conns × $size $name"
    if ! start_server "$name" "$port"; then
        printf '{"label":"%s","mode":"%s","connections":%s,"size":%s,"error":"server did not start"}\n' \
            "$name" "$mode" "$conns" "$(size_bytes "$size")" >>"$RAW"
        log "$what: server did not start"
        return 0
    fi
    if out=$(timeout --kill-after=5 "$limit" taskset -c "$CLIENT_CPU" "$FERRY" bench "$mode" \
        --url "$url" --protocol "$proto" --connections "$conns" --size "$size" \
        --server-pid "$SERVER_PID" --label "$name" --json --quiet "$@" </dev/null 2>"$LOGS/bench.err"); then
        printf '%s\n' "$out" >>"$RAW"
        local rate='?' cpu='?' rss='?'
        [[ $out =~ \"per_s\":([0-9.]+) ]] && rate=${BASH_REMATCH[1]%.*}
        [[ $out =~ \"cpu_us_per_op\":([0-9]+\.[0-9]{2}) ]] && cpu=${BASH_REMATCH[1]}
        [[ $out =~ \"rss_per_conn_kib\":([0-9-]+\.[0-9]{2}) ]] && rss=${BASH_REMATCH[1]}
        if [[ $mode == idle ]]; then log "$what: $rss KiB/conn"; else log "$what: $rate/s, $cpu µs server CPU each"; fi
    else
        local code=$?
        err=$(tail -n 3 "$LOGS/bench.err" | json_escape)
        [[ $code == 124 || $code == 137 ]] && err="timed out after ${limit}s; $err"
        printf '{"label":"%s","mode":"%s","connections":%s,"size":%s,"error":"%s"}\n' \
            "$name" "$mode" "$conns" "$(size_bytes "$size")" "$err" >>"$RAW"
        log "$what: FAILED: $err"
    fi
    stop_server
}

size_bytes() {
    local s=$1
    case $s in
        *KiB) echo $((${s%KiB} * 1024)) ;;
        *MiB) echo $((${s%MiB} * 1048576)) ;;
        *) echo "$s" ;;
    esac
}

# The servers in rotated order: rotation R of (A B C D) starts at the Rth.
rotated() {
    local r=$1 n=${#SERVERS[@]} i
    for ((i = 0; i < n; i++)); do printf '%s\n' "${SERVERS[$(((r + i) % n))]}"; done
}

# --- machine ----------------------------------------------------------------------------------
lock_version() { awk -v n="$2" '$0 == "name = \"" n "\"" { getline; gsub(/"/, "", $3); print $3; exit }' "$1"; }
cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
[[ -n $cpu_model ]] || cpu_model=$(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -n 1)
governor=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "n/a")
ferry_rev=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
git diff --quiet HEAD 2>/dev/null || ferry_rev="$ferry_rev (with uncommitted changes)"
started=$(date +%s)
{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'quick\t%s\n' "$QUICK"
    printf 'CPUs\t%s × %s (governor: %s)\n' "$cpus" "${cpu_model:-unknown}" "$governor"
    printf 'memory\t%s\n' "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    printf 'kernel\t%s\n' "$(uname -sr)"
    printf 'rustc\t%s\n' "$(rustc -V)"
    printf 'ferry\t%s (release profile of the root Cargo.toml)\n' "$ferry_rev"
    printf 'tokio\t%s (ferry), %s (peers)\n' "$(lock_version Cargo.lock tokio)" "$(lock_version bench/Cargo.lock tokio)"
    printf 'tokio-tungstenite\t%s (tungstenite %s)\n' "$(lock_version bench/Cargo.lock tokio-tungstenite)" "$(lock_version bench/Cargo.lock tungstenite)"
    printf 'fastwebsockets\t%s\n' "$(lock_version bench/Cargo.lock fastwebsockets)"
    printf 'server_cpu\t%s\n' "$SERVER_CPU"
    printf 'client_cpu\t%s\n' "$CLIENT_CPU"
    printf 'settings\t%s runs per cell; echo: connections {%s} × payload {%s}, %s, %ss measured after %ss warmup; bulk {%s}; handshakes: %s loops; idle: %s connections held %ss\n' \
        "$RUNS" "$CONNS" "$SIZES" "$KIND" "$DURATION" "$WARMUP" "$BULK_SIZES" "$HS_CONNS" "$IDLE_CONNS" "$IDLE_HOLD"
    printf 'load average at start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'busiest other processes at start\t%s\n' "$(ps -eo pcpu=,comm= --sort=-pcpu 2>/dev/null | head -n 3 | awk '{ printf "%s%s %s%%", sep, $2, $1; sep = ", " }')"
} >"$MACHINE"

# --- the runs ---------------------------------------------------------------------------------
read -r -a conns_list <<<"$CONNS"
read -r -a sizes_list <<<"$SIZES"
read -r -a bulk_list <<<"$BULK_SIZES"
nserv=${#SERVERS[@]}
TOTAL=$(((${#conns_list[@]} * ${#sizes_list[@]} + ${#bulk_list[@]} + 2) * RUNS * nserv))
limit=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 60 }')
log "$TOTAL runs; results in $RESULTS/"

cell=0
for c in "${conns_list[@]}"; do
    for s in "${sizes_list[@]}"; do
        for ((r = 0; r < RUNS; r++)); do
            while read -r name; do
                bench_one "$name" echo "$c" "$s" "$limit" --kind "$KIND" \
                    --duration "${DURATION}s" --warmup "${WARMUP}s"
            done < <(rotated $((r + cell)))
        done
        cell=$((cell + 1))
    done
done
for s in "${bulk_list[@]}"; do
    for ((r = 0; r < RUNS; r++)); do
        while read -r name; do
            bench_one "$name" bulk 1 "$s" "$limit" --pipeline 4 --duration "${DURATION}s" --warmup "${WARMUP}s"
        done < <(rotated $((r + cell)))
    done
    cell=$((cell + 1))
done
for ((r = 0; r < RUNS; r++)); do
    while read -r name; do
        bench_one "$name" handshakes "$HS_CONNS" 20 "$limit" --duration "${DURATION}s" --warmup "${WARMUP}s"
    done < <(rotated $((r + cell)))
done
cell=$((cell + 1))
for ((r = 0; r < RUNS; r++)); do
    while read -r name; do
        bench_one "$name" idle "$IDLE_CONNS" 20 120 --hold "${IDLE_HOLD}s"
    done < <(rotated $((r + cell)))
done

{
    printf 'load average at end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'wall time\t%s min\n' "$((($(date +%s) - started + 30) / 60))"
} >>"$MACHINE"
"$PEERS/report" "$RAW" "$MACHINE" >"$RESULTS/latest.md"
log "report: $RESULTS/latest.md"
