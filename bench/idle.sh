#!/usr/bin/env bash
# Memory per idle connection on every path a user runs, beside `ferry echo`'s: the figures
# behind the target "an idle connection on `ferry serve`'s /ws/echo and /ws/topics/NAME costs
# at most 0.25 KiB more than on `ferry echo`". For each binary given, interleaved run by run
# (A B A B ...), so drift on a shared machine hits all alike:
#
#   echo            `ferry echo --threads 1`, connections that echoed one message
#   echo-silent     the same, connections that sent nothing
#   serve-echo      `ferry serve --threads 1`'s /ws/echo, one message echoed
#   topic-silent    its /ws/topics/idle, every connection subscribed to that one topic, silent
#   topic-delivered the same, after one message published to the topic (POST /api/publish)
#                   reached every subscriber, and a quiet second passed
#
#   bench/idle.sh                          the release build, 3 runs of each case
#   bench/idle.sh OLD_FERRY NEW_FERRY      two binaries, interleaved: a before and after
#   CASES="echo-silent topic-silent" RUNS=5 CONNECTIONS=5000 bench/idle.sh
#
# Knobs (environment): RUNS (3), CONNECTIONS (10000), HOLD (seconds the connections are held
# before the server's RSS is read, 4), PORT (9395), SERVER_CPU (0), CLIENT_CPU (1). Compression
# and pings are off on every server, so each figure is the connection itself. The figure is
# (RSS with the connections open - RSS before) / connections (`ferry bench idle`); each line
# printed is one run, then the range of each case per binary.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { printf 'bench/idle.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '%s\n' "$*" >&2; }
if (($# == 0)); then
    set -- "${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry"
    [[ -x $1 ]] || die "no release build at $1: cargo build --release, or name the binaries"
fi
BINS=("$@")
for bin in "${BINS[@]}"; do [[ -x $bin ]] || die "$bin is not an executable ferry binary"; done
RUNS=${RUNS:-3} CONNECTIONS=${CONNECTIONS:-10000} HOLD=${HOLD:-4} PORT=${PORT:-9395}
SERVER_CPU=${SERVER_CPU:-0} CLIENT_CPU=${CLIENT_CPU:-1}
read -r -a CASES <<<"${CASES:-echo echo-silent serve-echo topic-silent topic-delivered}"
command -v curl >/dev/null || die "curl is needed: apt-get install curl"
if (($(ulimit -n) < CONNECTIONS + 256)); then
    ulimit -n $((CONNECTIONS + 256)) 2>/dev/null ||
        die "ulimit -n is $(ulimit -n); $CONNECTIONS connections need $((CONNECTIONS + 256))"
fi

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    [[ -n $SERVER_PID ]] && kill -9 "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
KEY=idle-bench-key-0123456789abcdef
printf '%s\n' "$KEY" >"$WORK/api-keys"

listening() { grep -q "$(printf '0100007F:%04X 00000000:0000 0A' "$1")" /proc/net/tcp; }

start() { # BINARY CASE
    local args
    ! listening "$PORT" || die "something already listens on 127.0.0.1:$PORT: stop it, or set PORT"
    case $2 in
        echo | echo-silent) args=(echo --listen "127.0.0.1:$PORT" --threads 1 --no-deflate) ;;
        *) args=(serve --listen "127.0.0.1:$PORT" --threads "${SERVE_THREADS:-1}" --no-deflate
            --api-key-file "$WORK/api-keys" --max-connections $((CONNECTIONS + 16))
            --max-connections-per-ip 0) ;;
    esac
    taskset -c "$SERVER_CPU" "$1" "${args[@]}" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 200); do
        listening "$PORT" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    die "$1 ${args[*]} did not start: $(tail -n 3 "$WORK/server.log")"
}

stop() {
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    # The next server takes the port at once; wait for this one's sockets to be gone.
    while listening "$PORT"; do sleep 0.05; done
}

open_connections() {
    curl -s "http://127.0.0.1:$PORT/metrics" | awk '$1 == "ferry_connections_open" { print $2 }'
}

# One run: sets KIB to the RSS per connection, in KiB.
run() { # BINARY CASE
    local url flags=(--silent)
    case $2 in
        echo) url=/ flags=() ;;
        echo-silent) url=/ ;;
        serve-echo) url=/ws/echo flags=() ;;
        topic-*) url=/ws/topics/idle ;;
    esac
    start "$1" "$2"
    taskset -c "$CLIENT_CPU" "$1" bench idle --url "ws://127.0.0.1:$PORT$url" \
        --connections "$CONNECTIONS" --hold "${HOLD}s" --server-pid "$SERVER_PID" \
        --json --quiet "${flags[@]}" >"$WORK/out.json" 2>"$WORK/bench.err" &
    local bench=$!
    if [[ $2 == topic-delivered ]]; then
        # Publish once every connection is open (and so subscribed): the hold then covers the
        # delivery and the quiet second after it.
        until [[ $(open_connections) == "$CONNECTIONS" ]]; do
            kill -0 "$bench" 2>/dev/null || break
            sleep 0.05
        done
        curl -sf -X POST -H "Authorization: Bearer $KEY" -H 'Content-Type: text/plain' \
            --data 'one message for all' "http://127.0.0.1:$PORT/api/publish/idle" >/dev/null ||
            die "the publish failed: $(tail -n 3 "$WORK/server.log")"
        local delivered
        delivered=$(curl -s "http://127.0.0.1:$PORT/metrics" |
            awk '$1 == "ferry_pubsub_delivered_total" { print $2 }')
        [[ $delivered == "$CONNECTIONS" ]] ||
            die "the message was queued for $delivered subscribers, not $CONNECTIONS"
    fi
    wait "$bench" || die "ferry bench idle failed: $(tail -n 3 "$WORK/bench.err")"
    stop
    local out
    out=$(<"$WORK/out.json")
    [[ $out =~ \"rss_per_conn_kib\":([0-9.-]+) ]] || die "no RSS in: $out"
    KIB=$(printf '%.2f' "${BASH_REMATCH[1]}")
}

declare -A FIGURES
for ((r = 1; r <= RUNS; r++)); do
    for case in "${CASES[@]}"; do
        for i in "${!BINS[@]}"; do
            run "${BINS[$i]}" "$case"
            FIGURES[$i,$case]+="$KIB "
            log "run $r/$RUNS  $case  ${BINS[$i]}: $KIB KiB per connection"
        done
    done
done

printf '\n%-16s' case
for bin in "${BINS[@]}"; do printf '  %-24s' "$(basename "$(dirname "$bin")")/$(basename "$bin")"; done
printf '\n'
for case in "${CASES[@]}"; do
    printf '%-16s' "$case"
    for i in "${!BINS[@]}"; do
        read -r -a values <<<"${FIGURES[$i,$case]}"
        range=$(printf '%s\n' "${values[@]}" | sort -n | sed -n '1p;$p' | paste -sd' ')
        printf '  %-24s' "$(awk '{ printf "%s to %s KiB", $1, ($2 == "" ? $1 : $2) }' <<<"$range")"
    done
    printf '\n'
done
