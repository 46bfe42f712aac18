#!/usr/bin/env bash
# Interoperability tests between ferry and the Python `websockets` library, both directions.
#
# Usage: tests/interop/python/run.sh
#
#   (a) `ferry echo`                             <- websockets client (client_check.py echo, handshake)
#   (b) `ferry echo --max-message-size 1KiB`     <- websockets client (client_check.py oversize: 1009)
#   (c) websockets echo server (echo_server.py)  <- ferry's interop_client example
#
# Creates (or reuses) a virtualenv with a pinned websockets, builds `ferry` and the example in
# release mode, runs the steps, and ends with the line `interop: N passed, M failed` (one per
# check). Exits non-zero if any check failed. If python3, a venv or the websockets install
# cannot be had, prints `SKIP: reason` and exits 0 (set INTEROP_STRICT=1 to fail instead).
#
# Environment knobs (defaults in brackets):
#   FERRY_VENV          virtualenv to create or reuse, relative to the repo root  [target/interop-venv]
#   WEBSOCKETS_VERSION  websockets version to install  [17.4]
#   PYTHON              interpreter that creates the venv  [python3]
#   INTEROP_STRICT=1    a missing python3 / venv / websockets install fails instead of skipping
#   STEP_TIMEOUT        seconds one check step may take  [120]
#   BUILD_TIMEOUT       seconds one cargo build may take  [1800]
#   STARTUP_TIMEOUT     seconds to wait for a server's port  [20]
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../../.." && pwd)
cd "$REPO_ROOT" || exit 1

case ${1:-} in
    -h | --help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    "") ;;
    *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

WEBSOCKETS_VERSION=${WEBSOCKETS_VERSION:-17.4}
PYTHON=${PYTHON:-python3}
STEP_TIMEOUT=${STEP_TIMEOUT:-120}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-20}
VENV=${FERRY_VENV:-target/interop-venv}
case $VENV in /*) ;; *) VENV=$REPO_ROOT/$VENV ;; esac
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$REPO_ROOT/$TARGET_DIR ;; esac
FERRY_BIN=$TARGET_DIR/release/ferry
CLIENT_BIN=$TARGET_DIR/release/examples/interop_client
# Servers are killed on exit; this only bounds a server that outlives a killed script.
SERVER_TIMEOUT=$((STEP_TIMEOUT * 4 + 60))

PASSED=0
FAILED=0
FAILED_STEPS=()
PIDS=()    # background servers
CHILD=""   # the foreground step, run in the background so that signals are acted on at once
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/ferry-interop.XXXXXX")

# shellcheck disable=SC2317  # called from the traps
cleanup() {
    local pid
    [ -z "$CHILD" ] || { kill -TERM "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null; }
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    rm -rf "$LOGDIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bounded SECONDS COMMAND...: runs COMMAND under `timeout` and returns its status. It runs in
# the background while this script waits, so that INT or TERM reach the traps at once (a
# foreground command would delay them until it ends); the EXIT trap then stops it.
bounded() {
    local seconds=$1 rc
    shift
    timeout "$seconds" "$@" &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    CHILD=""
    return "$rc"
}

log() { printf '[interop] %s\n' "$*"; }

summary() {
    log "took ${SECONDS}s"
    [ "${#FAILED_STEPS[@]}" -eq 0 ] || log "failed steps: ${FAILED_STEPS[*]}"
    echo "interop: $PASSED passed, $FAILED failed"
}

skip() {
    if [ "${INTEROP_STRICT:-0}" = 1 ]; then
        echo "FAIL setup: $* (INTEROP_STRICT=1)"
        FAILED=$((FAILED + 1))
        summary
        exit 1
    fi
    echo "SKIP: $*"
    exit 0
}

# A setup failure that is ferry's (or the build's) fault: count it and stop.
fatal() {
    echo "FAIL $1: ${*:2}"
    FAILED=$((FAILED + 1))
    FAILED_STEPS+=("$1")
    summary
    exit 1
}

# --- Python and websockets -----------------------------------------------------------------

command -v "$PYTHON" >/dev/null 2>&1 || skip "$PYTHON not found; the interop tests need Python 3"
PY=$VENV/bin/python
if "$PY" -c "import sys, websockets; sys.exit(websockets.__version__ != '$WEBSOCKETS_VERSION')" 2>/dev/null; then
    log "reusing $VENV (websockets $WEBSOCKETS_VERSION)"
else
    log "creating $VENV with websockets==$WEBSOCKETS_VERSION"
    if ! bounded 300 "$PYTHON" -m venv "$VENV" >"$LOGDIR/venv.log" 2>&1; then
        skip "cannot create a virtualenv with '$PYTHON -m venv' (Debian/Ubuntu: apt-get install python3-venv): $(tail -n 1 "$LOGDIR/venv.log")"
    fi
    if ! bounded 300 "$PY" -m pip install --quiet --disable-pip-version-check "websockets==$WEBSOCKETS_VERSION" >"$LOGDIR/pip.log" 2>&1; then
        skip "pip could not install websockets==$WEBSOCKETS_VERSION (no access to PyPI?): $(tail -n 1 "$LOGDIR/pip.log")"
    fi
fi

# --- Build ---------------------------------------------------------------------------------

log "building ferry and the interop_client example (release)"
bounded "$BUILD_TIMEOUT" cargo build --quiet --release -p ferry-cli --bin ferry \
    || fatal build "cargo build --release -p ferry-cli --bin ferry failed (status $?)"
bounded "$BUILD_TIMEOUT" cargo build --quiet --release -p ferry --example interop_client \
    || fatal build "cargo build --release -p ferry --example interop_client failed (status $?)"

# --- Helpers -------------------------------------------------------------------------------

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_server NAME PORT COMMAND...: runs COMMAND in the background (output in $LOGDIR/NAME.log)
# and waits until PORT accepts connections. Fails if the server dies or is not up in time.
start_server() {
    local name=$1 port=$2 pid deadline
    shift 2
    timeout "$SERVER_TIMEOUT" "$@" >"$LOGDIR/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    deadline=$((SECONDS + STARTUP_TIMEOUT))
    until port_open "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "FAIL $name: exited before listening on 127.0.0.1:$port"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "FAIL $name: not listening on 127.0.0.1:$port after ${STARTUP_TIMEOUT}s"
            return 1
        fi
        sleep 0.1
    done
}

# Counts a step that could not run as one failure, with the server's log.
step_broken() {
    local label=$1 server=$2
    FAILED=$((FAILED + 1))
    FAILED_STEPS+=("$label")
    show_log "$server"
}

show_log() {
    [ -s "$LOGDIR/$1.log" ] || return 0
    log "last lines of the $1 log:"
    tail -n 20 "$LOGDIR/$1.log" | sed 's/^/    /'
}

# run_step LABEL SERVER COMMAND...: runs a check program with a time limit and counts its
# "ok ..." and "FAIL ..." lines. A program that fails without saying why counts as one failure.
run_step() {
    local label=$1 server=$2 out rc passed failed
    shift 2
    out=$LOGDIR/step.out
    log "step $label: $*"
    bounded "$STEP_TIMEOUT" "$@" >"$out" 2>&1
    rc=$?
    cat "$out"
    passed=$(grep -c '^ok ' "$out")
    failed=$(grep -c '^FAIL' "$out")
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        if [ "$rc" -eq 124 ]; then
            echo "FAIL $label: timed out after ${STEP_TIMEOUT}s"
        else
            echo "FAIL $label: exited with status $rc"
        fi
        failed=1
    elif [ "$rc" -eq 0 ] && [ "$passed" -eq 0 ]; then
        echo "FAIL $label: ran no checks"
        failed=1
    fi
    PASSED=$((PASSED + passed))
    FAILED=$((FAILED + failed))
    if [ "$failed" -ne 0 ]; then
        FAILED_STEPS+=("$label")
        show_log "$server"
    fi
}

# server_report LABEL SERVER: counts the "ok ..." / "FAIL ..." lines a server printed to its log
# (echo_server.py reports on keepalive when a client has closed), waiting briefly for them.
server_report() {
    local label=$1 server=$2 deadline=$((SECONDS + 10)) passed failed
    until grep -q '^\(ok \|FAIL\)' "$LOGDIR/$server.log"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "FAIL $label: $server printed no verdict"
            FAILED=$((FAILED + 1))
            FAILED_STEPS+=("$label")
            return
        fi
        sleep 0.1
    done
    grep '^\(ok \|FAIL\)' "$LOGDIR/$server.log"
    passed=$(grep -c '^ok ' "$LOGDIR/$server.log")
    failed=$(grep -c '^FAIL' "$LOGDIR/$server.log")
    PASSED=$((PASSED + passed))
    FAILED=$((FAILED + failed))
    [ "$failed" -eq 0 ] || FAILED_STEPS+=("$label")
}

CHECK=("$PY" "$SCRIPT_DIR/client_check.py")

# --- (a) ferry echo <- websockets client ---------------------------------------------------

port=$(free_port)
if start_server ferry-echo "$port" env NO_COLOR=1 RUST_LOG=debug "$FERRY_BIN" echo --listen "127.0.0.1:$port"; then
    run_step a-echo ferry-echo "${CHECK[@]}" echo "ws://127.0.0.1:$port/"
    run_step a-handshake ferry-echo "${CHECK[@]}" handshake "ws://127.0.0.1:$port/"
else
    step_broken a ferry-echo
fi

# --- (b) ferry echo with a 1 KiB limit <- websockets client: 1009 --------------------------

port=$(free_port)
if start_server ferry-echo-1k "$port" env NO_COLOR=1 RUST_LOG=debug "$FERRY_BIN" echo --listen "127.0.0.1:$port" --max-message-size 1KiB; then
    run_step b-oversize ferry-echo-1k "${CHECK[@]}" oversize "ws://127.0.0.1:$port/" --limit 1024
else
    step_broken b ferry-echo-1k
fi

# --- (c) websockets echo server <- ferry interop_client ------------------------------------
# The server pings every 50 ms, so ferry's pongs are checked too, mid-message included.

port=$(free_port)
if start_server python-echo "$port" "$PY" "$SCRIPT_DIR/echo_server.py" "$port" --keepalive 0.05; then
    run_step c-ferry-client python-echo "$CLIENT_BIN" "ws://127.0.0.1:$port/"
    server_report c-keepalive python-echo
else
    step_broken c python-echo
fi

summary
[ "$FAILED" -eq 0 ]
