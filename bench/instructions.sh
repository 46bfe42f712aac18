#!/usr/bin/env bash
# Instruction count of `ferry echo` per echoed message, under valgrind's callgrind: a figure that
# stays put on a noisy shared machine where times do not. Informational: it prints the change
# from the committed figure (bench/instructions.tsv) and never fails on it.
#
#   bench/instructions.sh             measure and compare with bench/instructions.tsv
#   UPDATE=1 bench/instructions.sh    measure and write the new figures into that file
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
WORK=$(mktemp -d)

log() { printf '%s\n' "$*" >&2; }
die() { log "bench/instructions.sh: $*"; exit 1; }

command -v valgrind >/dev/null || die "valgrind is needed: apt-get install valgrind"
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building ferry (release)..."
    cargo build --release -p ferry-cli --quiet
fi
[[ -x $FERRY ]] || die "$FERRY is missing; run without SKIP_BUILD=1"

SERVER_PID=
cleanup() {
    [[ -z $SERVER_PID ]] || kill -9 "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

listening() { grep -q "$(printf '0100007F:%04X 00000000:0000 0A' "$1")" /proc/net/tcp; }

# instructions SIZE MESSAGES: total Ir of a callgrind'd server that echoed MESSAGES messages.
instructions() {
    local size=$1 n=$2 out=$WORK/callgrind.$1.$2 i
    valgrind --tool=callgrind --callgrind-out-file="$out" "$FERRY" echo \
        --listen "127.0.0.1:$PORT" --threads 1 --no-deflate </dev/null >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for i in $(seq 1 600); do
        listening "$PORT" && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "the server under valgrind exited; see its log: $(tail -n 3 "$WORK/server.log")"
        sleep 0.1
    done
    listening "$PORT" || die "the server under valgrind did not listen on $PORT in 60 s"
    "$FERRY" bench echo --url "ws://127.0.0.1:$PORT/" --connections 1 --size "$size" \
        --messages "$n" --timeout 300s --quiet >/dev/null ||
        die "ferry bench failed against the server under valgrind"
    # SIGTERM ends the server; callgrind writes its totals on the way out.
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

declare -A old=()
if [[ -f $FIGURES ]]; then
    while IFS=$'\t' read -r key value _; do
        [[ $key == \#* || -z $key ]] || old[$key]=$value
    done <"$FIGURES"
fi

rows=()
printf '%-28s %14s %14s %9s\n' "workload" "committed" "now" "change"
for size in $SIZES; do
    a=$(instructions "$size" "$N1")
    b=$(instructions "$size" "$N2")
    per=$(((b - a) / (N2 - N1)))
    key="echo_${size}B_instructions_per_message"
    rows+=("$key"$'\t'"$per")
    if [[ -n ${old[$key]:-} ]]; then
        change=$(awk -v o="${old[$key]}" -v n="$per" 'BEGIN { printf "%+.1f%%", (n - o) * 100 / o }')
    else
        change="(new)"
    fi
    printf '%-28s %14s %14s %9s\n' "echo ${size} B" "${old[$key]:--}" "$per" "$change"
done

if [[ ${UPDATE:-0} == 1 ]]; then
    {
        printf '# Instructions (callgrind Ir, user space) per message echoed by `ferry echo`, one\n'
        printf '# connection, one message in flight, binary, no compression. Measured with\n'
        printf '# bench/instructions.sh (N1=%s, N2=%s) on %s, %s.\n' "$N1" "$N2" "$(date -u +%Y-%m-%d)" "$(rustc -V)"
        printf '%s\n' "${rows[@]}"
    } >"$FIGURES"
    log "wrote $FIGURES"
fi
