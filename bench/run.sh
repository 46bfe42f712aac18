#!/usr/bin/env bash
# Side by side: `ferry echo` against tokio-tungstenite, fastwebsockets, uWebSockets.js (when npm
# is there) and a plain TCP echo (the floor), measured by `ferry bench`; then `ferry serve`'s
# pub/sub fan-out, and `ferry echo` with permessage-deflate on and off. Writes
# bench/results/latest.md (the report), latest.jsonl (one `ferry bench --json` line per run) and
# latest.machine.tsv.
#
#   bench/run.sh              the full matrix, about 45 minutes
#   QUICK=1 bench/run.sh      a smoke run: fewer cells, 1 s runs, about 5 minutes
#
# Knobs (environment): RUNS (3), DURATION and WARMUP in seconds (5, 1), CONNS ("1 16 100 500"),
# SIZES ("20 1KiB 16KiB 64KiB"), KIND (binary|text), BULK_SIZES ("1MiB 16MiB"), IDLE_CONNS
# (10000), HS_CONNS (16), SERVER_CPU (0), CLIENT_CPU (1), BASE_PORT (9101), SERVERS (all five;
# uwebsockets-js only when npm is installed), SKIP_BUILD=1 (use the binaries as built), FERRY
# (path to the ferry binary), RESULTS (output dir).
# Sections: ECHO=0, BULK=0, HANDSHAKES=0, IDLE=0, FANOUT=0, DEFLATE=0 skip one. Fan-out:
# FANOUT_SUBS ("100 1000" subscribers), FANOUT_SIZES ("20 1KiB"). Deflate: DEFLATE_CONNS (100),
# DEFLATE_SIZES ("1KiB 16KiB"), DEFLATE_IDLE_CONNS (1000).
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
ECHO=${ECHO:-1} BULK=${BULK:-1} HANDSHAKES=${HANDSHAKES:-1} IDLE=${IDLE:-1}
FANOUT=${FANOUT:-1} DEFLATE=${DEFLATE:-1}
if [[ $QUICK == 1 ]]; then
    : "${FANOUT_SUBS:=100}" "${FANOUT_SIZES:=20 1KiB}" "${DEFLATE_SIZES:=1KiB}" "${DEFLATE_IDLE_CONNS:=500}"
fi
FANOUT_SUBS=${FANOUT_SUBS:-100 1000}
FANOUT_SIZES=${FANOUT_SIZES:-20 1KiB}
DEFLATE_CONNS=${DEFLATE_CONNS:-100}
DEFLATE_SIZES=${DEFLATE_SIZES:-1KiB 16KiB}
DEFLATE_IDLE_CONNS=${DEFLATE_IDLE_CONNS:-1000}
UWS_DIR=bench/peers/uws
if [[ -z ${SERVERS:-} ]]; then
    SERVERS="plain-tcp ferry fastwebsockets tokio-tungstenite"
    # uWebSockets.js is optional: it needs Node and npm (its addon is prebuilt in the package).
    if command -v npm >/dev/null && command -v node >/dev/null; then SERVERS="$SERVERS uwebsockets-js"; fi
fi
read -r -a SERVERS <<<"$SERVERS"

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
has_server() { [[ " ${SERVERS[*]} " == *" $1 "* ]]; }
if has_server uwebsockets-js; then
    # The exact version in package-lock.json; no install scripts are needed (the addon is
    # prebuilt) and the package's optional native helpers for its JS fallback are left out.
    if [[ ${SKIP_BUILD:-0} != 1 || ! -d $UWS_DIR/node_modules ]]; then
        log "installing uWebSockets.js (npm ci in $UWS_DIR)..."
        (cd "$UWS_DIR" && npm ci --ignore-scripts --omit=optional --no-audit --no-fund --loglevel=error) >&2 ||
            die "npm ci in $UWS_DIR failed; drop uwebsockets-js from SERVERS to run without it"
    fi
    node -e "require('$ROOT/$UWS_DIR/node_modules/@trufflesuite/uws-js-unofficial/binaries/uws_' + process.platform + '_' + process.arch + '_' + process.versions.modules + '.node')" ||
        die "the uWebSockets.js addon does not load with this Node ($(node --version)); drop uwebsockets-js from SERVERS"
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
    case $1 in
        # The servers of the fan-out and deflate sections, after those of the echo matrix.
        ferry-serve) echo $((BASE_PORT + 10)); return ;;
        ferry-deflate) echo $((BASE_PORT + 11)); return ;;
    esac
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
        uwebsockets-js) cmd=(node "$UWS_DIR/echo.js" --listen "127.0.0.1:$port") ;;
        # Pub/sub: no per-IP limit (every subscriber comes from 127.0.0.1), room for them all.
        ferry-serve) cmd=("$FERRY" serve --listen "127.0.0.1:$port" --max-connections-per-ip 0
            --max-connections 100000) ;;
        # ferry echo as it ships: permessage-deflate on, with its default settings.
        ferry-deflate) cmd=("$FERRY" echo --listen "127.0.0.1:$port" --threads 1
            --max-message-size 64MiB --max-frame-size 64MiB) ;;
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
# LABEL=NAME bench_one ... labels the result NAME instead of SERVER.
STEP=0
bench_one() {
    local name=$1 mode=$2 conns=$3 size=$4 limit=$5 label=${LABEL:-$1}
    shift 5
    local port url proto out err
    STEP=$((STEP + 1))
    port=$(port_of "$name")
    case $name in
        plain-tcp) url=tcp://127.0.0.1:$port proto=tcp ;;
        ferry-serve) url=ws://127.0.0.1:$port/ws/topics/bench proto=ws ;;
        *) url=ws://127.0.0.1:$port/ proto=ws ;;
    esac
    local what="[$STEP/$TOTAL] $mode $conns × $size $label"
    if ! start_server "$name" "$port"; then
        printf '{"label":"%s","mode":"%s","connections":%s,"size":%s,"error":"server did not start"}\n' \
            "$label" "$mode" "$conns" "$(size_bytes "$size")" >>"$RAW"
        log "$what: server did not start"
        return 0
    fi
    if out=$(timeout --kill-after=5 "$limit" taskset -c "$CLIENT_CPU" "$FERRY" bench "$mode" \
        --url "$url" --protocol "$proto" --connections "$conns" --size "$size" \
        --server-pid "$SERVER_PID" --label "$label" --json --quiet "$@" </dev/null 2>"$LOGS/bench.err"); then
        printf '%s\n' "$out" >>"$RAW"
        local rate='?' cpu='?' rss='?'
        [[ $out =~ \"per_s\":([0-9.]+) ]] && rate=${BASH_REMATCH[1]%.*}
        [[ $out =~ \"cpu_us_per_op\":([0-9]+\.[0-9]{2}) ]] && cpu=${BASH_REMATCH[1]}
        [[ $out =~ \"rss_per_conn_kib\":([0-9-]+\.[0-9]{2}) ]] && rss=${BASH_REMATCH[1]}
        if [[ $mode == idle ]]; then log "$what: $rss KiB/conn"; else log "$what: $rate/s, $cpu µs server CPU each"; fi
        if [[ $out =~ \"warnings\":\[\"([^\"]{0,200}) ]]; then log "$what: warning: ${BASH_REMATCH[1]}"; fi
    else
        local code=$?
        err=$(tail -n 3 "$LOGS/bench.err" | json_escape)
        [[ $code == 124 || $code == 137 ]] && err="timed out after ${limit}s; $err"
        printf '{"label":"%s","mode":"%s","connections":%s,"size":%s,"error":"%s"}\n' \
            "$label" "$mode" "$conns" "$(size_bytes "$size")" "$err" >>"$RAW"
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
    if has_server uwebsockets-js; then
        printf 'uWebSockets.js\t%s (@trufflesuite/uws-js-unofficial, prebuilt addon) on Node %s\n' \
            "$(node -p "require('$ROOT/$UWS_DIR/node_modules/@trufflesuite/uws-js-unofficial/package.json').version")" "$(node --version)"
    fi
    printf 'server_cpu\t%s\n' "$SERVER_CPU"
    printf 'client_cpu\t%s\n' "$CLIENT_CPU"
    printf 'settings\t%s runs per cell; echo: connections {%s} × payload {%s}, %s, %ss measured after %ss warmup; bulk {%s}; handshakes: %s loops; idle: %s connections held %ss; fanout: 1 publisher × {%s} subscribers × {%s}; deflate: %s connections × {%s}, idle %s\n' \
        "$RUNS" "$CONNS" "$SIZES" "$KIND" "$DURATION" "$WARMUP" "$BULK_SIZES" "$HS_CONNS" "$IDLE_CONNS" "$IDLE_HOLD" "$FANOUT_SUBS" "$FANOUT_SIZES" "$DEFLATE_CONNS" "$DEFLATE_SIZES" "$DEFLATE_IDLE_CONNS"
    printf 'sections\techo %s, bulk %s, handshakes %s, idle %s, fanout %s, deflate %s\n' "$ECHO" "$BULK" "$HANDSHAKES" "$IDLE" "$FANOUT" "$DEFLATE"
    printf 'load average at start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'busiest other processes at start\t%s\n' "$(ps -eo pcpu=,comm= --sort=-pcpu 2>/dev/null | head -n 3 | awk '{ printf "%s%s %s%%", sep, $2, $1; sep = ", " }')"
} >"$MACHINE"

# --- the runs ---------------------------------------------------------------------------------
read -r -a conns_list <<<"$CONNS"
read -r -a sizes_list <<<"$SIZES"
read -r -a bulk_list <<<"$BULK_SIZES"
read -r -a fanout_subs <<<"$FANOUT_SUBS"
read -r -a fanout_sizes <<<"$FANOUT_SIZES"
read -r -a deflate_sizes <<<"$DEFLATE_SIZES"
nserv=${#SERVERS[@]}
on() { [[ $1 != 0 ]]; }
TOTAL=0
on "$ECHO" && TOTAL=$((TOTAL + ${#conns_list[@]} * ${#sizes_list[@]} * RUNS * nserv))
on "$BULK" && TOTAL=$((TOTAL + ${#bulk_list[@]} * RUNS * nserv))
on "$HANDSHAKES" && TOTAL=$((TOTAL + RUNS * nserv))
on "$IDLE" && TOTAL=$((TOTAL + RUNS * nserv))
on "$FANOUT" && TOTAL=$((TOTAL + ${#fanout_subs[@]} * ${#fanout_sizes[@]} * RUNS))
on "$DEFLATE" && TOTAL=$((TOTAL + (${#deflate_sizes[@]} + 1) * 2 * RUNS))
limit=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 60 }')
log "$TOTAL runs; results in $RESULTS/"

cell=0
if on "$ECHO"; then
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
fi
if on "$BULK"; then
    for s in "${bulk_list[@]}"; do
        for ((r = 0; r < RUNS; r++)); do
            while read -r name; do
                bench_one "$name" bulk 1 "$s" "$limit" --pipeline 4 --duration "${DURATION}s" --warmup "${WARMUP}s"
            done < <(rotated $((r + cell)))
        done
        cell=$((cell + 1))
    done
fi
if on "$HANDSHAKES"; then
    for ((r = 0; r < RUNS; r++)); do
        while read -r name; do
            bench_one "$name" handshakes "$HS_CONNS" 20 "$limit" --duration "${DURATION}s" --warmup "${WARMUP}s"
        done < <(rotated $((r + cell)))
    done
    cell=$((cell + 1))
fi
if on "$IDLE"; then
    for ((r = 0; r < RUNS; r++)); do
        while read -r name; do
            bench_one "$name" idle "$IDLE_CONNS" 20 120 --hold "${IDLE_HOLD}s"
        done < <(rotated $((r + cell)))
    done
fi

# Fan-out: ferry serve alone (no peer here has pub/sub). One publisher, N subscribers on one
# topic; the window is ferry bench's default (a quarter of serve's 1 MiB --send-queue), so the
# slow-subscriber policy never fires. Server CPU is per delivery.
if on "$FANOUT"; then
    for n in "${fanout_subs[@]}"; do
        for s in "${fanout_sizes[@]}"; do
            for ((r = 0; r < RUNS; r++)); do
                bench_one ferry-serve fanout "$n" "$s" "$limit" --duration "${DURATION}s" --warmup "${WARMUP}s"
            done
        done
    done
fi

# Deflate: one ferry echo with permessage-deflate on (its defaults), offered (ferry-deflate) or
# not (ferry-plain) by the client, the same JSON-like payload either way; alternated run by run.
# Then idle memory with 1 KiB echoed once, so that a connection with deflate has compressed.
if on "$DEFLATE"; then
    for s in "${deflate_sizes[@]}"; do
        for ((r = 0; r < RUNS; r++)); do
            for variant in $( ((r % 2)) && echo "plain deflate" || echo "deflate plain"); do
                if [[ $variant == deflate ]]; then flag=--deflate; else flag="--payload json"; fi
                # shellcheck disable=SC2086 # $flag is one or two words on purpose
                LABEL=ferry-$variant bench_one ferry-deflate echo "$DEFLATE_CONNS" "$s" "$limit" $flag \
                    --duration "${DURATION}s" --warmup "${WARMUP}s"
            done
        done
    done
    for ((r = 0; r < RUNS; r++)); do
        for variant in $( ((r % 2)) && echo "plain deflate" || echo "deflate plain"); do
            if [[ $variant == deflate ]]; then flag=--deflate; else flag="--payload json"; fi
            # shellcheck disable=SC2086
            LABEL=ferry-$variant bench_one ferry-deflate idle "$DEFLATE_IDLE_CONNS" 1KiB 120 $flag --hold "${IDLE_HOLD}s"
        done
    done
fi

{
    printf 'load average at end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'wall time\t%s min\n' "$((($(date +%s) - started + 30) / 60))"
} >>"$MACHINE"
"$PEERS/report" "$RAW" "$MACHINE" >"$RESULTS/latest.md"
log "report: $RESULTS/latest.md"
