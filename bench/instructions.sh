#!/usr/bin/env bash
# Instruction count of `ferry echo` (or `ferry serve`'s /ws/echo route, or a peer) per echoed
# message and per connection's life, under valgrind's callgrind: a figure that stays put on a
# noisy shared machine where times do not. Informational: it prints the change
# from the committed figure (bench/instructions.tsv) and never fails on it.
#
#   bench/instructions.sh             measure and compare with bench/instructions.tsv
#   UPDATE=1 bench/instructions.sh    measure and write the new figures into that file
#   SERVERS="plain-tcp ferry fastwebsockets tokio-tungstenite" bench/instructions.sh
#                                     the same count for the peers in bench/ (built first), with
#                                     each server's ratio to the plain TCP echo (list plain-tcp
#                                     first): the side-by-side
#                                     comparison that machine noise cannot blur
#   SERVERS="ferry ferry-serve" bench/instructions.sh
#                                     `ferry echo` beside `ferry serve`'s /ws/echo route (the
#                                     path users run; compression off, pings off);
#                                     ferry-serve-1: the same with --threads 1 (the
#                                     single-threaded scheduler `ferry echo` runs on);
#                                     ferry-2: `ferry echo --threads 2`, the multi-threaded
#                                     scheduler `ferry serve` runs on by default
#   WORKLOADS="echo handshake" bench/instructions.sh
#                                     also (or only) the cost of a whole connection: TCP accept,
#                                     the opening handshake, one 20 B echo and the close
#                                     (`ferry bench handshakes`, one at a time), per connection
#   KEEP_PROFILES=DIR bench/instructions.sh
#                                     also keeps each run's callgrind file in DIR, to see where
#                                     the instructions go: callgrind_annotate DIR/callgrind.*
#
# Method: for each payload size, the server runs under callgrind twice, echoing N1 and then N2
# messages on one connection (one in flight, binary, no compression), and the figure is
# (instructions of run 2 - instructions of run 1) / (N2 - N1): start-up, the handshake and the
# shutdown cancel out, leaving the steady-state cost of one echo (read, unmask, assemble, queue,
# encode, write and the runtime's share), user space only. The handshake workload does the same
# with N1 and N2 connections opened, used for one echo and closed one after another.
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
read -r -a WORKLOADS <<<"${WORKLOADS:-echo}"
WORK=$(mktemp -d)

log() { printf '%s\n' "$*" >&2; }
die() { log "bench/instructions.sh: $*"; exit 1; }

command -v valgrind >/dev/null || die "valgrind is needed: apt-get install valgrind"
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building ferry (release)..."
    cargo build --release -p ferry-cli --quiet
    if [[ " ${SERVERS[*]} " =~ \ (plain-tcp|fastwebsockets|tokio-tungstenite)\  ]]; then
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

# instructions SERVER WORKLOAD SIZE COUNT: total Ir of a callgrind'd server that echoed COUNT
# messages (WORKLOAD echo) or served COUNT connections (WORKLOAD handshake).
instructions() {
    local server=$1 workload=$2 size=$3 n=$4 out=$WORK/callgrind.$1.$2.$3.$4 i cmd protocol=ws path=/
    case $server in
        ferry) cmd=("$FERRY" echo --listen "127.0.0.1:$PORT" --threads 1 --no-deflate) ;;
        ferry-2) cmd=("$FERRY" echo --listen "127.0.0.1:$PORT" --threads 2 --no-deflate) ;;
        ferry-serve)
            cmd=("$FERRY" serve --listen "127.0.0.1:$PORT" --no-deflate --ping-interval 0)
            path=/ws/echo
            ;;
        ferry-serve-1)
            cmd=("$FERRY" serve --listen "127.0.0.1:$PORT" --no-deflate --ping-interval 0 --threads 1)
            path=/ws/echo
            ;;
        plain-tcp) cmd=("$PEERS/tcp-echo" --listen "127.0.0.1:$PORT"); protocol=tcp ;;
        fastwebsockets) cmd=("$PEERS/fastwebsockets-echo" --listen "127.0.0.1:$PORT") ;;
        tokio-tungstenite) cmd=("$PEERS/tungstenite-echo" --listen "127.0.0.1:$PORT") ;;
        *) die "unknown server $server (SERVERS takes ferry, ferry-2, ferry-serve, ferry-serve-1, plain-tcp, fastwebsockets, tokio-tungstenite)" ;;
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
    local mode=echo
    [[ $workload == handshake ]] && mode=handshakes
    "$FERRY" bench "$mode" --url "ws://127.0.0.1:$PORT$path" --protocol "$protocol" --connections 1 \
        --size "$size" --messages "$n" --timeout 300s --quiet >/dev/null ||
        die "ferry bench $mode failed against $server under valgrind"
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
# Handshakes are slower under valgrind than echoes; fewer of them give the same precision.
HN1=${HN1:-200}
HN2=${HN2:-1000}
for server in "${SERVERS[@]}"; do
  for workload in "${WORKLOADS[@]}"; do
    sizes=$SIZES n1=$N1 n2=$N2
    if [[ $workload == handshake ]]; then
        sizes=20 n1=$HN1 n2=$HN2
    fi
    for size in $sizes; do
        a=$(instructions "$server" "$workload" "$size" "$n1")
        b=$(instructions "$server" "$workload" "$size" "$n2")
        per=$(((b - a) / (n2 - n1)))
        now[$server.$workload.$size]=$per
        # ferry's keys keep their historical names.
        if [[ $workload == handshake ]]; then
            key="connection_instructions_per_handshake_echo_close"
        else
            key="echo_${size}B_instructions_per_message"
        fi
        [[ $server == ferry ]] || key="${server}_$key"
        rows+=("$key"$'\t'"$per")
        if [[ -n ${old[$key]:-} ]]; then
            change=$(awk -v o="${old[$key]}" -v n="$per" 'BEGIN { printf "%+.1f%%", (n - o) * 100 / o }')
        else
            change="(new)"
        fi
        ratio=-
        if [[ -n ${now[plain-tcp.$workload.$size]:-} ]]; then
            ratio=$(awk -v t="${now[plain-tcp.$workload.$size]}" -v n="$per" 'BEGIN { printf "%.2f", n / t }')
        fi
        label="echo $size B"
        [[ $workload == handshake ]] && label="connection"
        printf '%-18s %-12s %12s %12s %9s %12s\n' "$server" "$label" "${old[$key]:--}" "$per" "$change" "$ratio"
    done
  done
done

if [[ ${UPDATE:-0} == 1 ]]; then
    {
        printf '# Instructions (callgrind Ir, user space) per message echoed (echo_*: one connection,\n'
        printf '# one message in flight, binary, no compression) and per connection (connection_*:\n'
        printf '# accept, handshake, one 20 B echo, close, one connection at a time), by `ferry echo`\n'
        printf '# (keys without a prefix), `ferry serve`s /ws/echo (ferry-serve_) and the peers in\n'
        printf '# bench/ (prefixed by their name). Measured with\n'
        printf '# SERVERS="%s" WORKLOADS="%s" bench/instructions.sh (N1=%s, N2=%s; HN1=%s, HN2=%s)\n' \
            "${SERVERS[*]}" "${WORKLOADS[*]}" "$N1" "$N2" "$HN1" "$HN2"
        printf '# on %s, %s.\n' "$(date -u +%Y-%m-%d)" "$(rustc -V)"
        printf '# Figures this run did not measure are kept from the file as it was.\n'
        printf '%s\n' "${rows[@]}"
        declare -A measured=()
        for row in "${rows[@]}"; do measured[${row%%$'\t'*}]=1; done
        for key in "${!old[@]}"; do
            [[ -n ${measured[$key]:-} ]] || printf '%s\t%s\n' "$key" "${old[$key]}"
        done | sort
    } >"$FIGURES"
    log "wrote $FIGURES"
fi
