# Shared by the interop drivers (python/run.sh, node/run.sh, browser/run.sh); sourced, not run.
#
# Before sourcing, a driver sets:
#   SUITE     the word before the summary line, e.g. "interop-node" -> "interop-node: N passed, M failed"
#   REPO_ROOT the repository root (the driver has cd'd there)
# and may set STEP_TIMEOUT, BUILD_TIMEOUT, STARTUP_TIMEOUT. After sourcing, it must define
# free_port (prints a free TCP port on 127.0.0.1).
#
# Every check program prints "ok   ..." per passed check and "FAIL ..." per failed one; run_step
# and server_report count those lines. Background servers are killed when the driver exits,
# however it exits.

# shellcheck shell=bash

STEP_TIMEOUT=${STEP_TIMEOUT:-120}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-20}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$REPO_ROOT/$TARGET_DIR ;; esac
FERRY_BIN=$TARGET_DIR/release/ferry
# shellcheck disable=SC2034  # used by the drivers
CLIENT_BIN=$TARGET_DIR/release/examples/interop_client
# Servers are killed on exit; this only bounds a server that outlives a killed script.
SERVER_TIMEOUT=$((STEP_TIMEOUT * 6 + 60))

PASSED=0
FAILED=0
FAILED_STEPS=()
PIDS=()    # background servers
CHILD=""   # the foreground step, run in the background so that signals are acted on at once
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/ferry-$SUITE.XXXXXX")

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

log() { printf '[%s] %s\n' "$SUITE" "$*"; }

summary() {
    log "took ${SECONDS}s"
    [ "${#FAILED_STEPS[@]}" -eq 0 ] || log "failed steps: ${FAILED_STEPS[*]}"
    echo "$SUITE: $PASSED passed, $FAILED failed"
}

# skip REASON: a missing prerequisite. Exits 0 with "SKIP: REASON", or counts as a failure with
# INTEROP_STRICT=1.
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

# fatal STEP REASON: a setup failure that is ferry's (or the build's) fault: count it and stop.
fatal() {
    echo "FAIL $1: ${*:2}"
    FAILED=$((FAILED + 1))
    FAILED_STEPS+=("$1")
    summary
    exit 1
}

# build_ferry: builds the `ferry` binary in release mode.
build_ferry() {
    log "building ferry (release)"
    bounded "$BUILD_TIMEOUT" cargo build --quiet --release -p ferry-cli --bin ferry \
        || fatal build "cargo build --release -p ferry-cli --bin ferry failed (status $?)"
}

# build_example: builds the interop_client example in release mode.
build_example() {
    log "building the interop_client example (release)"
    bounded "$BUILD_TIMEOUT" cargo build --quiet --release -p ferry --example interop_client \
        || fatal build "cargo build --release -p ferry --example interop_client failed (status $?)"
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

# start_ferry_echo NAME PORT [FLAGS...]: `ferry echo` on 127.0.0.1:PORT, debug logs in NAME.log.
start_ferry_echo() {
    local name=$1 port=$2
    shift 2
    start_server "$name" "$port" env NO_COLOR=1 RUST_LOG=debug "$FERRY_BIN" echo --listen "127.0.0.1:$port" "$@"
}

# Counts a step that could not run as one failure, with the server's log.
step_broken() {
    local label=$1 server=$2
    FAILED=$((FAILED + 1))
    FAILED_STEPS+=("$label")
    show_log "$server"
}

# Rust panics print long backtraces when RUST_BACKTRACE is set; the panic message says more.
without_backtraces() {
    grep -v -e '^ *[0-9]\+: ' -e '^ \{6,\}at ' -e '^stack backtrace:' -e '^note: Some details are omitted'
}

show_log() {
    [ -s "$LOGDIR/$1.log" ] || return 0
    log "last lines of the $1 log:"
    without_backtraces <"$LOGDIR/$1.log" | tail -n 20 | sed 's/^/    /'
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
    without_backtraces <"$out"
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

verdicts() { grep -c '^\(ok \|FAIL\)' "$LOGDIR/$1.log"; }

# server_report LABEL SERVER COUNT: counts the "ok ..." / "FAIL ..." lines a server printed to
# its log (the echo servers report what they negotiated with each client, and more when the
# client has gone), waiting briefly until there are COUNT of them.
server_report() {
    local label=$1 server=$2 count=$3 deadline=$((SECONDS + 10)) passed failed
    until [ "$(verdicts "$server")" -ge "$count" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "FAIL $label: $server printed $(verdicts "$server") verdicts, expected $count"
            FAILED=$((FAILED + 1))
            FAILED_STEPS+=("$label")
            break
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

# The version of npm package $1 pinned in $SCRIPT_DIR/package.json, installed into
# $SCRIPT_DIR/node_modules with `npm ci` unless it is there already, or skip; $2 names the suite
# for the messages. Sets NPM_PINNED to the version.
npm_ci_pinned() {
    local package=$1 what=$2 installed
    NPM_PINNED=$("$NODE" -p 'require(process.argv[1]).dependencies[process.argv[2]]' "$SCRIPT_DIR/package.json" "$package")
    installed=$("$NODE" -p 'require(process.argv[1]).version' "$SCRIPT_DIR/node_modules/$package/package.json" 2>/dev/null)
    if [ "$installed" = "$NPM_PINNED" ]; then
        log "reusing $SCRIPT_DIR/node_modules ($package $installed)"
        return
    fi
    command -v npm >/dev/null 2>&1 || skip "npm not found; it installs $package for $what (Debian: apt-get install npm)"
    log "installing $package $NPM_PINNED into $SCRIPT_DIR/node_modules (npm ci)"
    if ! bounded 300 env -C "$SCRIPT_DIR" npm ci --no-audit --no-fund >"$LOGDIR/npm.log" 2>&1; then
        skip "npm ci could not install $package $NPM_PINNED (no access to the npm registry?): $(tail -n 1 "$LOGDIR/npm.log")"
    fi
}

# Node 20+, the playwright-core pinned in $SCRIPT_DIR/package.json (npm ci), and Debian's Chromium
# at $CHROMIUM (apt-get when root), or skip. $1 names the suite for the messages. Playwright
# never downloads a browser: PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD is set by the callers.
setup_playwright_chromium() {
    local what=$1
    command -v "$NODE" >/dev/null 2>&1 || skip "$NODE not found; $what needs Node.js 20 or later (Debian: apt-get install nodejs npm)"
    "$NODE" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
        || skip "Node.js $("$NODE" --version) is too old; playwright-core needs 20 or later"
    npm_ci_pinned playwright-core "$what"

    if [ ! -x "$CHROMIUM" ]; then
        [ "$CHROMIUM" = /usr/bin/chromium ] || skip "CHROMIUM=$CHROMIUM is not an executable"
        command -v apt-get >/dev/null 2>&1 || skip "$CHROMIUM is missing and there is no apt-get to install Debian's chromium package"
        [ "$(id -u)" = 0 ] || skip "$CHROMIUM is missing; install it with: sudo apt-get install chromium"
        log "installing Debian's chromium package (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        if ! bounded 900 apt-get install -y chromium >"$LOGDIR/apt.log" 2>&1; then
            log "apt-get install failed; updating the package lists and trying again"
            bounded 300 apt-get update >>"$LOGDIR/apt.log" 2>&1
            bounded 900 apt-get install -y chromium >>"$LOGDIR/apt.log" 2>&1 \
                || skip "apt-get could not install chromium: $(tail -n 1 "$LOGDIR/apt.log")"
        fi
        [ -x "$CHROMIUM" ] || skip "the chromium package did not provide $CHROMIUM"
    fi
    log "node $("$NODE" --version), playwright-core $NPM_PINNED, $("$CHROMIUM" --version 2>/dev/null | tail -n 1)"
}

# A free loopback port, chosen by Node.
free_port() {
    "$NODE" -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}
