#!/usr/bin/env bash
# Interleaved A/B of two `ferry echo` servers (for `fanout`: two `ferry serve`, on a topic) on
# one `ferry bench` workload: a before/after of a
# change (two binaries), or of a server flag (one binary, two sets of arguments). The two run
# alternately (A B A B ...), each alone on SERVER_CPU with the load generator on CLIENT_CPU, so
# drift on a shared machine hits both alike; it prints every run, then the medians.
#
#   bench/ab.sh OLD_FERRY NEW_FERRY bulk --size 1MiB --pipeline 4
#   A_ARGS="--send-queue 16MiB" bench/ab.sh target/release/ferry target/release/ferry bulk --size 16MiB --pipeline 4
#   CONNECTIONS=1000 bench/ab.sh OLD_FERRY NEW_FERRY fanout --size 20
#
# After the two binaries: the `ferry bench` mode and its arguments (--url, --server-pid, --json
# and --quiet are added). Knobs (environment): RUNS (10), DURATION and WARMUP in seconds (2,
# 0.5), A_ARGS and B_ARGS (extra `ferry echo` arguments per side), CONNECTIONS (1), PORT (9391),
# SERVER_CPU (0), CLIENT_CPU (1), BENCH (the `ferry` that generates load: NEW_FERRY), SERVE=1 (run
# `ferry serve` and load its /ws/echo route, the path users run, instead of `ferry echo`; SERVE=B:
# `ferry echo` as A against `ferry serve`'s /ws/echo as B, e.g. one binary's two paths),
# ECHO_THREADS (`ferry echo --threads`, 1: a single-threaded runtime; `ferry serve` runs a
# multi-threaded one, as `ferry echo` does with 2 or more),
# A_LOAD and B_LOAD (extra `ferry bench` arguments per side: B_LOAD=--http2 compares WebSockets
# over HTTP/2 streams with HTTP/1.1 connections on one server binary).
# Per run: the rate (payload MB/s for bulk, else operations/s), server CPU µs per operation and
# the server's minor page faults over the run (from /proc/PID/stat: how much fresh memory it
# touched).
set -euo pipefail

die() { printf 'bench/ab.sh: %s\n' "$*" >&2; exit 1; }
(($# >= 3)) || die "usage: bench/ab.sh A_FERRY B_FERRY MODE [ferry bench arguments]"
A=$1 B=$2 MODE=$3
shift 3
[[ -x $A ]] || die "$A is not an executable ferry binary"
[[ -x $B ]] || die "$B is not an executable ferry binary"
RUNS=${RUNS:-10} DURATION=${DURATION:-2} WARMUP=${WARMUP:-0.5} CONNECTIONS=${CONNECTIONS:-1}
PORT=${PORT:-9391} SERVER_CPU=${SERVER_CPU:-0} CLIENT_CPU=${CLIENT_CPU:-1} BENCH=${BENCH:-$B}
read -r -a A_ARGS <<<"${A_ARGS:-}"
read -r -a B_ARGS <<<"${B_ARGS:-}"
read -r -a A_LOAD <<<"${A_LOAD:-}"
read -r -a B_LOAD <<<"${B_LOAD:-}"

listening() { grep -q "$(printf '0100007F:%04X 00000000:0000 0A' "$1")" /proc/net/tcp; }
minor_faults() { awk '{ print $10 }' "/proc/$1/stat"; }
field() { grep -o "\"$1\":[0-9.]*" <<<"$2" | head -n 1 | cut -d: -f2; }

! listening "$PORT" || die "port $PORT is in use; set PORT"
SERVER_PID=
RESULTS=$(mktemp)
trap '[[ -z $SERVER_PID ]] || kill "$SERVER_PID" 2>/dev/null || true; rm -f "$RESULTS"' EXIT
rate_key=per_s
[[ $MODE == bulk ]] && rate_key=payload_mb_per_s

serve_echo=(serve --listen "127.0.0.1:$PORT" --max-connections 20000 --max-connections-per-ip 0
    --no-deflate --max-message-size 64MiB)
plain_echo=(echo --listen "127.0.0.1:$PORT" --threads "${ECHO_THREADS:-1}" --no-deflate --max-message-size 64MiB
    --max-frame-size 64MiB)
if [[ $MODE == fanout ]]; then
    a_server=(serve --listen "127.0.0.1:$PORT" --max-connections 20000 --max-connections-per-ip 0)
    b_server=("${a_server[@]}")
    a_url=ws://127.0.0.1:$PORT/ws/topics/ab b_url=$a_url
elif [[ ${SERVE:-0} == 1 ]]; then
    a_server=("${serve_echo[@]}") b_server=("${serve_echo[@]}")
    a_url=ws://127.0.0.1:$PORT/ws/echo b_url=$a_url
elif [[ ${SERVE:-0} == B ]]; then
    # `ferry echo` against `ferry serve`'s /ws/echo: the benchmark path against the product's.
    a_server=("${plain_echo[@]}") b_server=("${serve_echo[@]}")
    a_url=ws://127.0.0.1:$PORT/ b_url=ws://127.0.0.1:$PORT/ws/echo
else
    a_server=("${plain_echo[@]}") b_server=("${plain_echo[@]}")
    a_url=ws://127.0.0.1:$PORT/ b_url=$a_url
fi
for run in $(seq 1 "$RUNS"); do
    for side in A B; do
        if [[ $side == A ]]; then
            bin=$A args=("${A_ARGS[@]}") load=("${A_LOAD[@]}") server=("${a_server[@]}") url=$a_url
        else
            bin=$B args=("${B_ARGS[@]}") load=("${B_LOAD[@]}") server=("${b_server[@]}") url=$b_url
        fi
        taskset -c "$SERVER_CPU" "$bin" "${server[@]}" "${args[@]}" </dev/null >/dev/null 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 1 100); do listening "$PORT" && break; sleep 0.05; done
        listening "$PORT" || die "$side ($bin) did not listen on $PORT"
        faults=$(minor_faults "$SERVER_PID")
        out=$(taskset -c "$CLIENT_CPU" "$BENCH" bench "$MODE" --url "$url" \
            --connections "$CONNECTIONS" --duration "${DURATION}s" --warmup "${WARMUP}s" \
            --server-pid "$SERVER_PID" --json --quiet "${load[@]}" "$@")
        faults=$(($(minor_faults "$SERVER_PID") - faults))
        kill "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
        while listening "$PORT"; do sleep 0.05; done
        rate=$(field "$rate_key" "$out") cpu=$(field cpu_us_per_op "$out")
        printf '%s\t%s\t%s\t%s\n' "$side" "$rate" "$cpu" "$faults" >>"$RESULTS"
        printf 'run %2d %s: %10.1f %s  %10.2f µs server CPU each  %8d page faults\n' \
            "$run" "$side" "$rate" "$rate_key" "$cpu" "$faults"
    done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
for side in A B; do
    printf 'median %s: %10.1f %s  %10.2f µs server CPU each  %8.0f page faults  (%s %s)\n' "$side" \
        "$(awk -v s="$side" '$1 == s { print $2 }' "$RESULTS" | median)" "$rate_key" \
        "$(awk -v s="$side" '$1 == s { print $3 }' "$RESULTS" | median)" \
        "$(awk -v s="$side" '$1 == s { print $4 }' "$RESULTS" | median)" \
        "$([[ $side == A ]] && echo "$A" || echo "$B")" "$([[ $side == A ]] && echo "${A_ARGS[*]}" || echo "${B_ARGS[*]}")"
done
