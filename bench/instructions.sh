#!/usr/bin/env bash
# Instruction count of `ferry echo` per echoed message, under valgrind's callgrind: a figure that
# stays put on a noisy shared machine where times do not. Informational: it prints the change
# from the committed figure (bench/instructions.tsv) and never fails on it.
#
#   bench/instructions.sh             measure and compare with bench/instructions.tsv
#   UPDATE=1 bench/instructions.sh    measure and write the new figures into that file
#   SERVERS="plain-tcp ferry fastwebsockets tokio-tungstenite" bench/instructions.sh
#                                     the same count for the peers in bench/ (built first), with
#                                     each server's ratio to the plain TCP echo (list plain-tcp
#                                     first): the side-by-side
#                                     comparison that machine noise cannot blur
#   KEEP_PROFILES=DIR bench/instructions.sh
#                                     also keeps each run's callgrind file in DIR, to see where
#                                     the instructions go: callgrind_annotate DIR/callgrind.*
#
# Method: for each payload size, the server runs under callgrind twice, echoing N1 and then N2
# messages on one connection (one in flight, binary, no compression), and the figure is
# (instructions of run 2 - instructions of run 1) / (N2 - N1): start-up, the handshake and the
# shutdown cancel out, leaving the steady-state cost of one echo (read, unmask, assemble, queue,
# encode, write and the runtime's share), user space only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

N1=${N1:-2000}
N2=${N2:-10000}
SIZES=${SIZES:-20 16384}
PORT=${PORT:-9191}
FIGURES=$ROOT/bench/instructions.tsv
FERRY=${FERRY:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry}
PEERS=${PEERS:-$ROOT/bench/target/release}
read -r -a SERVERS <<<"${SERVERS:-ferry}"
WORK=$(mktemp -d)

log() { printf '%s\n' "$*" >&2; }
die() { log "bench/instructions.sh: $*"; exit 1; }

command -v valgrind >/dev/null || die "valgrind is needed: apt-get install valgrind"
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building ferry (release)..."
    cargo build --release -p ferry-cli --quiet
    if [[ " ${SERVERS[*]} " != " ferry " ]]; then
        log "building the peers (bench/, release)..."
        (cd bench && cargo build --release --quiet)
    fi
fi
[[ -x $FERRY ]] || die "$FERRY is missing; run without SKIP_BUILD=1"

SERVER_PID=
cleanup() {
    [[ -z $SERVER_PID ]] || kill -9 "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

listening() { grep -q "$(printf '0100007F:%04X 00000000:0000 0A' "$1")" /proc/net/tcp; }

# instructions SERVER SIZE MESSAGES: total Ir of a callgrind'd server that echoed MESSAGES
# messages.
instructions() {
    local server=$1 size=$2 n=$3 out=$WORK/callgrind.$1.$2.$3 i cmd protocol=ws
    case $server in
        ferry) cmd=("$FERRY" echo --listen "127.0.0.1:$PORT" --threads 1 --no-deflate) ;;
        plain-tcp) cmd=("$PEERS/tcp-echo" --listen "127.0.0.1:$PORT"); protocol=tcp ;;
        fastwebsockets) cmd=("$PEERS/fastwebsockets-echo" --listen "127.0.0.1:$PORT") ;;
        tokio-tungstenite) cmd=("$PEERS/tungstenite-echo" --listen "127.0.0.1:$PORT") ;;
        *) die "unknown server $server (SERVERS takes ferry, plain-tcp, fastwebsockets, tokio-tungstenite)" ;;
    esac
    [[ -x ${cmd[0]} ]] || die "${cmd[0]} is missing; build it (run without SKIP_BUILD=1)"
    valgrind --tool=callgrind --callgrind-out-file="$out" "${cmd[@]}" </dev/null >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for i in $(seq 1 600); do
        listening "$PORT" && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "the server under valgrind exited; see its log: $(tail -n 3 "$WORK/server.log")"
        sleep 0.1
    done
    listening "$PORT" || die "the server under valgrind did not listen on $PORT in 60 s"
    "$FERRY" bench echo --url "ws://127.0.0.1:$PORT/" --protocol "$protocol" --connections 1 \
        --size "$size" --messages "$n" --timeout 300s --quiet >/dev/null ||
        die "ferry bench failed against the server under valgrind"
    # SIGTERM ends the server; callgrind writes its totals on the way out.
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    if [[ -n ${KEEP_PROFILES:-} ]]; then
        mkdir -p "$KEEP_PROFILES"
        cp "$out" "$KEEP_PROFILES/"
    fi
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

declare -A old=()
if [[ -f $FIGURES ]]; then
    while IFS=$'\t' read -r key value _; do
        [[ $key == \#* || -z $key ]] || old[$key]=$value
    done <"$FIGURES"
fi

rows=()
declare -A now=()
printf '%-18s %-12s %12s %12s %9s %12s\n' "server" "workload" "committed" "now" "change" "vs plain TCP"
for server in "${SERVERS[@]}"; do
    for size in $SIZES; do
        a=$(instructions "$server" "$size" "$N1")
        b=$(instructions "$server" "$size" "$N2")
        per=$(((b - a) / (N2 - N1)))
        now[$server.$size]=$per
        # ferry's keys keep their historical names.
        key="echo_${size}B_instructions_per_message"
        [[ $server == ferry ]] || key="${server}_$key"
        rows+=("$key"$'\t'"$per")
        if [[ -n ${old[$key]:-} ]]; then
            change=$(awk -v o="${old[$key]}" -v n="$per" 'BEGIN { printf "%+.1f%%", (n - o) * 100 / o }')
        else
            change="(new)"
        fi
        ratio=-
        if [[ -n ${now[plain-tcp.$size]:-} ]]; then
            ratio=$(awk -v t="${now[plain-tcp.$size]}" -v n="$per" 'BEGIN { printf "%.2f", n / t }')
        fi
        printf '%-18s %-12s %12s %12s %9s %12s\n' "$server" "echo $size B" "${old[$key]:--}" "$per" "$change" "$ratio"
    done
done

if [[ ${UPDATE:-0} == 1 ]]; then
    {
        printf '# Instructions (callgrind Ir, user space) per message echoed by `ferry echo` (keys\n'
        printf '# without a prefix) and by the peers in bench/ (prefixed by their name), one\n'
        printf '# connection, one message in flight, binary, no compression. Measured with\n'
        printf '# SERVERS="%s" bench/instructions.sh (N1=%s, N2=%s)\n' "${SERVERS[*]}" "$N1" "$N2"
        printf '# on %s, %s.\n' "$(date -u +%Y-%m-%d)" "$(rustc -V)"
        printf '%s\n' "${rows[@]}"
    } >"$FIGURES"
    log "wrote $FIGURES"
fi
