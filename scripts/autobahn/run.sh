#!/usr/bin/env bash
# Run the Autobahn|Testsuite against ferry, as a server and/or as a client.
#
# Usage: scripts/autobahn/run.sh [--no-compare] [--write-expected] [server|serve|client|all]
#
#   server  ferry's echo server (`ferry echo`) on 127.0.0.1:$SERVER_PORT, tested by
#           `wstest -m fuzzingclient`.
#   serve   the product path: `ferry serve`'s /ws/echo route (hyper, then ferry) on
#           127.0.0.1:$SERVE_PORT, tested by `wstest -m fuzzingclient`.
#   client  wstest's fuzzingserver on 127.0.0.1:$CLIENT_PORT, driven by
#           `$FERRY_BIN autobahn-client` (getCaseCount, runCase..., updateReports).
#   all     server, serve and client, one after the other (default); exits non-zero if
#           any fails.
#
# Environment knobs (defaults in brackets):
#   FERRY_BIN     ferry binary [<repo>/target/release/ferry]
#   CASES         comma-separated case patterns, wstest syntax: "1.1.1", "6.*"
#                 ("*" is a prefix wildcard: "1.*" is 1.x, "1*" also hits 10.x)  [*]
#   EXCLUDE       comma-separated patterns to exclude; set EXCLUDE= (empty) to
#                 run everything. 12.* and 13.* are permessage-deflate.
#                 [$DEFAULT_EXCLUDE below: 12.*,13.*]
#   OUTDIR        reports go to $OUTDIR/server and $OUTDIR/client  [<repo>/reports/autobahn]
#   NO_COMPARE=1      same as --no-compare: don't compare with expected-<mode>.json
#                     (still fails on any case that is not OK/INFORMATIONAL)
#   WRITE_EXPECTED=1  same as --write-expected: rewrite expected-<mode>.json
#                     from this run (refused unless every case is OK/INFORMATIONAL)
#   AGENT         agent name in the reports  [ferry]
#   SERVER_PORT / CLIENT_PORT / SERVE_PORT   [9001 / 9002 / 9003]
#   TIMEOUT       seconds a whole mode may take before it is killed  [2100]
#   STARTUP_TIMEOUT  seconds to wait for a listening port  [30]
#   AUTOBAHN_PREFIX  wstest virtualenv, see install.sh  [/opt/autobahn]
set -euo pipefail

# Cases excluded unless EXCLUDE is set. None: ferry implements all of 1.* to 13.*,
# permessage-deflate (12.*, 13.*) included.
# Set it to skip a category while debugging (e.g. '12.*,13.*').
DEFAULT_EXCLUDE=''

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

MODE=all
for arg in "$@"; do
    case $arg in
        --no-compare) export NO_COMPARE=1 ;;
        --write-expected) export WRITE_EXPECTED=1 ;;
        server | serve | client | all) MODE=$arg ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

# "all" runs each mode as its own process, so a failing mode does not stop
# the other one and each gets its own cleanup trap. The child runs with & and
# `wait` so that a signal to this script is acted on (and forwarded) at once.
if [ "$MODE" = all ]; then
    rc=0 child=""
    # shellcheck disable=SC2317  # called from the traps
    stop_child() { [ -z "$child" ] || { kill -TERM "$child" 2>/dev/null; wait "$child" || true; }; }
    trap 'stop_child; exit 130' INT
    trap 'stop_child; exit 143' TERM
    for m in server serve client; do
        bash "$SCRIPT_DIR/run.sh" "$m" &
        child=$!
        wait "$child" || rc=1
        child=""
    done
    if [ "$rc" -eq 0 ]; then echo "Autobahn: all modes passed"; else echo "Autobahn: FAILED (see above)"; fi
    exit "$rc"
fi

abspath() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

FERRY_BIN=$(abspath "${FERRY_BIN:-$REPO_ROOT/target/release/ferry}")
CASES=${CASES:-*}
EXCLUDE=${EXCLUDE-$DEFAULT_EXCLUDE}   # no colon: EXCLUDE= (set, empty) excludes nothing
OUTDIR=$(abspath "${OUTDIR:-$REPO_ROOT/reports/autobahn}")
AGENT=${AGENT:-ferry}
SERVER_PORT=${SERVER_PORT:-9001}
CLIENT_PORT=${CLIENT_PORT:-9002}
SERVE_PORT=${SERVE_PORT:-9003}
TIMEOUT=${TIMEOUT:-2100}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-30}
AUTOBAHN_PREFIX=${AUTOBAHN_PREFIX:-/opt/autobahn}
PY2=$AUTOBAHN_PREFIX/bin/python
HELPER=$SCRIPT_DIR/wstest_helper.py

log() { printf '[autobahn %s] %s\n' "$MODE" "$*"; }
die() { printf '[autobahn %s] ERROR: %s\n' "$MODE" "$*" >&2; exit 1; }

if ! [ -x "$PY2" ] || ! [ -x "$AUTOBAHN_PREFIX/bin/wstest" ]; then
    die "wstest not found in $AUTOBAHN_PREFIX; run scripts/autobahn/install.sh (as root)"
fi
[ -x "$FERRY_BIN" ] || die "FERRY_BIN=$FERRY_BIN is not an executable (build it: cargo build --release)"
command -v python3 >/dev/null || die "python3 is needed for summarize.py"

# "1.*, 2.1.1" -> ["1.*", "2.1.1"]. Only digits, dots and '*' are allowed,
# which also keeps the JSON trivially safe.
json_list() {
    local out="" item
    local -a items
    IFS=',' read -r -a items <<<"$1"
    for item in "${items[@]}"; do
        item=${item//[[:space:]]/}
        [ -n "$item" ] || continue
        [[ $item =~ ^[0-9.*]+$ ]] || die "bad case pattern '$item' (digits, '.' and '*' only)"
        out+="${out:+, }\"$item\""
    done
    printf '[%s]' "$out"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Wait until 127.0.0.1:$1 accepts, while process $2 is alive.
wait_port() {
    local port=$1 pid=$2 deadline=$((SECONDS + STARTUP_TIMEOUT))
    until port_open "$port"; do
        kill -0 "$pid" 2>/dev/null || return 1
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# Background processes are started under `timeout`, which makes itself the
# leader of a new process group: stopping that group stops the child too.
BG_PIDS=()
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || true; }
    wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local pid
    for pid in "${BG_PIDS[@]+"${BG_PIDS[@]}"}"; do stop_pid "$pid"; done
}
# Wait for the "foreground" step, which is started with & on purpose: bash
# runs a signal trap only once a foreground command ends, whereas `wait` is
# interrupted at once, so Ctrl-C or a TERM from CI stops the run promptly.
run_fg() {
    BG_PIDS+=("$1")
    wait "$1"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_tail() { # file: print its last lines, indented
    [ -s "$1" ] || return 0
    echo "---- last lines of $1:"
    tail -n 25 "$1" | sed 's/^/    /'
    echo "----"
}

DIR=$OUTDIR/$MODE
rm -rf "$DIR"
mkdir -p "$DIR"
SPEC=$DIR/spec.json
CASES_JSON=$(json_list "$CASES")
EXCLUDE_JSON=$(json_list "$EXCLUDE")

if [ "$MODE" = server ] || [ "$MODE" = serve ]; then
    if [ "$MODE" = server ]; then
        PORT=$SERVER_PORT URL_PATH=""
    else
        PORT=$SERVE_PORT URL_PATH="/ws/echo"
    fi
    cat >"$SPEC" <<EOF
{
  "outdir": "$DIR",
  "servers": [{"agent": "$AGENT", "url": "ws://127.0.0.1:$PORT$URL_PATH"}],
  "cases": $CASES_JSON,
  "exclude-cases": $EXCLUDE_JSON,
  "exclude-agent-cases": {},
  "options": {"failByDrop": false}
}
EOF
else
    cat >"$SPEC" <<EOF
{
  "url": "ws://127.0.0.1:$CLIENT_PORT",
  "outdir": "$DIR",
  "cases": $CASES_JSON,
  "exclude-cases": $EXCLUDE_JSON,
  "exclude-agent-cases": {},
  "options": {"failByDrop": false}
}
EOF
    PORT=$CLIENT_PORT
fi

# Resolve the selection with wstest's own code: fail fast on an empty
# selection (wstest would hang forever) and keep the list, so the summary
# can tell when cases were silently dropped.
"$PY2" "$HELPER" cases "$SPEC" >"$DIR/cases.txt" || die "bad case selection CASES='$CASES' EXCLUDE='$EXCLUDE'"
NCASES=$(wc -l <"$DIR/cases.txt")
log "$NCASES cases (CASES='$CASES' EXCLUDE='$EXCLUDE'), reports in $DIR"

# Another process on our port would be tested instead of ours.
! port_open "$PORT" || die "127.0.0.1:$PORT is already in use"

# wstest runs from $DIR, so any stray file it writes lands there; python -u
# (unbuffered) keeps its log complete even when it is killed.
# The background peer gets a longer cap than the foreground side, so a hang
# shows up as a clear timeout of the foreground side (the cap on the peer is
# only a safety net should this script itself be killed with SIGKILL).
PEER_TIMEOUT=$((TIMEOUT + 60))
start=$SECONDS
rc=0
if [ "$MODE" = server ] || [ "$MODE" = serve ]; then
    if [ "$MODE" = server ]; then
        FERRY_ARGS=(echo --listen "127.0.0.1:$PORT")
    else
        # Autobahn's 9.* cases send 16 MiB messages, some in 65,536 fragments; its cases are
        # too short for keepalive pings to matter, and an unsolicited ping would only add
        # noise to the reports.
        FERRY_ARGS=(serve --listen "127.0.0.1:$PORT" --max-message-size 16MiB
            --max-fragments 1048576 --send-queue 16MiB --ping-interval 0)
    fi
    log "starting $FERRY_BIN ${FERRY_ARGS[*]}"
    timeout -k 10 "$PEER_TIMEOUT" "$FERRY_BIN" "${FERRY_ARGS[@]}" >"$DIR/ferry.log" 2>&1 &
    peer=$!
    BG_PIDS+=("$peer")
    wait_port "$PORT" "$peer" || { show_tail "$DIR/ferry.log"; die "ferry did not listen on 127.0.0.1:$PORT"; }

    log "running wstest -m fuzzingclient (log: $DIR/wstest.log)"
    (cd "$DIR" && exec timeout -k 10 "$TIMEOUT" "$PY2" -u "$HELPER" wstest -m fuzzingclient -s "$SPEC") \
        >"$DIR/wstest.log" 2>&1 &
    run_fg $! || rc=$?
    if [ "$rc" -eq 124 ]; then
        log "ERROR: wstest timed out after ${TIMEOUT}s"
    elif [ "$rc" -ne 0 ]; then
        log "ERROR: wstest exited with status $rc"
    fi
    [ "$rc" -eq 0 ] || show_tail "$DIR/wstest.log"

    if ! kill -0 "$peer" 2>/dev/null; then
        log "ERROR: the ferry server exited during the run"
        show_tail "$DIR/ferry.log"
        rc=1
    fi
    stop_pid "$peer"
else
    log "starting wstest -m fuzzingserver on 127.0.0.1:$PORT (log: $DIR/wstest.log)"
    # -u 0: no embedded web server (it would listen on port 8080).
    (cd "$DIR" && exec timeout -k 10 "$PEER_TIMEOUT" "$PY2" -u "$HELPER" wstest -m fuzzingserver -u 0 -s "$SPEC") \
        >"$DIR/wstest.log" 2>&1 &
    peer=$!
    BG_PIDS+=("$peer")
    wait_port "$PORT" "$peer" || { show_tail "$DIR/wstest.log"; die "wstest did not listen on 127.0.0.1:$PORT"; }

    log "running $FERRY_BIN autobahn-client --url ws://127.0.0.1:$PORT --agent $AGENT (log: $DIR/ferry.log)"
    timeout -k 10 "$TIMEOUT" "$FERRY_BIN" autobahn-client --url "ws://127.0.0.1:$PORT" --agent "$AGENT" \
        >"$DIR/ferry.log" 2>&1 &
    run_fg $! || rc=$?
    if [ "$rc" -eq 124 ]; then
        log "ERROR: ferry autobahn-client timed out after ${TIMEOUT}s"
    elif [ "$rc" -ne 0 ]; then
        log "ERROR: ferry autobahn-client exited with status $rc"
    fi
    [ "$rc" -eq 0 ] || show_tail "$DIR/ferry.log"

    if ! kill -0 "$peer" 2>/dev/null; then
        log "ERROR: wstest exited during the run"
        show_tail "$DIR/wstest.log"
        rc=1
    elif [ ! -e "$DIR/index.json" ]; then
        # The client died (or hung) before its final /updateReports: ask for
        # the report ourselves, so the summary shows how far it got.
        log "no report yet; requesting /updateReports for a partial report"
        timeout 150 "$PY2" "$HELPER" update-reports "ws://127.0.0.1:$PORT" "$AGENT" ||
            log "ERROR: /updateReports failed"
        rc=1
    fi
    stop_pid "$peer"
fi
log "run took $((SECONDS - start)) s"

summarize_args=("$DIR" --selected "$DIR/cases.txt" --agent "$AGENT" --label "$MODE"
    --expected "$SCRIPT_DIR/expected-$MODE.json")
[ "${NO_COMPARE:-0}" = 1 ] && summarize_args+=(--no-compare)
[ "${WRITE_EXPECTED:-0}" = 1 ] && summarize_args+=(--write-expected)
python3 "$SCRIPT_DIR/summarize.py" "${summarize_args[@]}" || rc=1
exit "$rc"
