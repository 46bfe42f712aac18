#!/usr/bin/env bash
# Interoperability tests between ferry and the Python `websockets` library, both directions.
#
# Usage: tests/interop/python/run.sh
#
#   (a) `ferry echo`                             <- websockets client (client_check.py echo, handshake)
#       a-no-compression: the client offers no permessage-deflate (compression=None)
#       a-no-deflate:     `ferry echo --no-deflate` declines it
#   (b) `ferry echo --max-message-size 1KiB`     <- websockets client (client_check.py oversize: 1009)
#   (c) websockets echo server (echo_server.py)  <- ferry's interop_client example
#       c-no-deflate:     `echo_server.py --no-deflate` declines permessage-deflate
#       c-ferry-no-deflate: `interop_client --no-deflate` offers none
#   (d) websockets echo server                   <- `ferry connect` (../connect_check.py, 1,000 lines)
#       d-connect, d-connect-no-deflate: compression on and off
#   (e) `ferry serve --jwt-hmac-secret-file`     <- websockets client with PyJWT tokens (token_check.py)
#   (f) `ferry serve` over HTTP/2 (RFC 8441)     <- the h2 package with websockets' sans-I/O
#       protocol on each stream (h2_check.py): h2c and TLS (ALPN h2), permessage-deflate, many
#       WebSockets on one connection, refusals, a stalled stream beside a live one, --http2 off
#   (g) Hypercorn (an ASGI server with RFC 8441) <- `ferry connect --http2` (../connect_check.py,
#       1,000 lines), h2c and TLS; the app's log must say the WebSocket came over HTTP/2
#
# Every step with a handshake asserts the negotiated Sec-WebSocket-Extensions on both sides.
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
PYJWT_VERSION=${PYJWT_VERSION:-2.15.1}
H2_VERSION=${H2_VERSION:-4.4.1}
HYPERCORN_VERSION=${HYPERCORN_VERSION:-0.18.0}
PYTHON=${PYTHON:-python3}
VENV=${FERRY_VENV:-target/interop-venv}
case $VENV in /*) ;; *) VENV=$REPO_ROOT/$VENV ;; esac

SUITE=interop
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$SCRIPT_DIR/../lib.sh"

# --- Python and websockets -----------------------------------------------------------------

command -v "$PYTHON" >/dev/null 2>&1 || skip "$PYTHON not found; the interop tests need Python 3"
PY=$VENV/bin/python
if "$PY" -c "import sys, websockets, jwt, h2, importlib.metadata as m; sys.exit(websockets.__version__ != '$WEBSOCKETS_VERSION' or jwt.__version__ != '$PYJWT_VERSION' or h2.__version__ != '$H2_VERSION' or m.version('hypercorn') != '$HYPERCORN_VERSION')" 2>/dev/null; then
    log "reusing $VENV (websockets $WEBSOCKETS_VERSION, PyJWT $PYJWT_VERSION, h2 $H2_VERSION, Hypercorn $HYPERCORN_VERSION)"
else
    log "creating $VENV with websockets==$WEBSOCKETS_VERSION, pyjwt==$PYJWT_VERSION, h2==$H2_VERSION"
    if ! bounded 300 "$PYTHON" -m venv "$VENV" >"$LOGDIR/venv.log" 2>&1; then
        skip "cannot create a virtualenv with '$PYTHON -m venv' (Debian/Ubuntu: apt-get install python3-venv): $(tail -n 1 "$LOGDIR/venv.log")"
    fi
    if ! bounded 300 "$PY" -m pip install --quiet --disable-pip-version-check "websockets==$WEBSOCKETS_VERSION" \
        "pyjwt==$PYJWT_VERSION" "h2==$H2_VERSION" "hypercorn==$HYPERCORN_VERSION" >"$LOGDIR/pip.log" 2>&1; then
        skip "pip could not install websockets==$WEBSOCKETS_VERSION, pyjwt==$PYJWT_VERSION, h2==$H2_VERSION and hypercorn==$HYPERCORN_VERSION (no access to PyPI?): $(tail -n 1 "$LOGDIR/pip.log")"
    fi
fi

# --- Build ---------------------------------------------------------------------------------

build_ferry
build_example

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

CHECK=("$PY" "$SCRIPT_DIR/client_check.py")

# The negotiated extension each step expects, as the server writes its Sec-WebSocket-Extensions
# answer (and as ferry's DeflateParams::to_header writes it). They follow from the defaults of
# both sides, so a change of defaults shows up here:
# - the websockets client offers "permessage-deflate; client_max_window_bits"; `ferry echo`
#   (peer window 12 bits by default) limits the client's window to 4 KiB;
# - ferry's client (Config::default) offers "permessage-deflate; client_no_context_takeover;
#   server_max_window_bits=12; client_max_window_bits"; the websockets server takes all that
#   and limits ferry's window to 12 bits too (its default both ways).
FERRY_ANSWERS="permessage-deflate; client_max_window_bits=12"
WEBSOCKETS_ANSWERS="permessage-deflate; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12"

# --- (a) ferry echo <- websockets client ---------------------------------------------------

port=$(free_port)
if start_ferry_echo ferry-echo "$port"; then
    run_step a-echo ferry-echo "${CHECK[@]}" echo "ws://127.0.0.1:$port/" --expect-extensions "$FERRY_ANSWERS"
    run_step a-no-compression ferry-echo "${CHECK[@]}" echo "ws://127.0.0.1:$port/" --no-compression --expect-extensions none
    run_step a-handshake ferry-echo "${CHECK[@]}" handshake "ws://127.0.0.1:$port/"
else
    step_broken a ferry-echo
fi

port=$(free_port)
if start_ferry_echo ferry-echo-no-deflate "$port" --no-deflate; then
    run_step a-no-deflate ferry-echo-no-deflate "${CHECK[@]}" echo "ws://127.0.0.1:$port/" --expect-extensions none
else
    step_broken a-no-deflate ferry-echo-no-deflate
fi

# --- (b) ferry echo with a 1 KiB limit <- websockets client: 1009 --------------------------

port=$(free_port)
if start_ferry_echo ferry-echo-1k "$port" --max-message-size 1KiB; then
    run_step b-oversize ferry-echo-1k "${CHECK[@]}" oversize "ws://127.0.0.1:$port/" --limit 1024
else
    step_broken b ferry-echo-1k
fi

# --- (c) websockets echo server <- ferry interop_client ------------------------------------
# The server pings every 50 ms, so ferry's pongs are checked too, mid-message included.

port=$(free_port)
if start_server python-echo "$port" "$PY" "$SCRIPT_DIR/echo_server.py" "$port" --keepalive 0.05 \
    --expect-extensions "$WEBSOCKETS_ANSWERS"; then
    run_step c-ferry-client python-echo "$CLIENT_BIN" --expect-deflate "$WEBSOCKETS_ANSWERS" "ws://127.0.0.1:$port/"
    server_report c-server python-echo 2
else
    step_broken c python-echo
fi

port=$(free_port)
if start_server python-echo-no-deflate "$port" "$PY" "$SCRIPT_DIR/echo_server.py" "$port" --no-deflate \
    --expect-extensions none; then
    run_step c-no-deflate python-echo-no-deflate "$CLIENT_BIN" --expect-deflate none "ws://127.0.0.1:$port/"
    server_report c-no-deflate-server python-echo-no-deflate 1
else
    step_broken c-no-deflate python-echo-no-deflate
fi

port=$(free_port)
if start_server python-echo-2 "$port" "$PY" "$SCRIPT_DIR/echo_server.py" "$port" --expect-extensions none; then
    run_step c-ferry-no-deflate python-echo-2 "$CLIENT_BIN" --no-deflate --expect-deflate none "ws://127.0.0.1:$port/"
    server_report c-ferry-no-deflate-server python-echo-2 1
else
    step_broken c-ferry-no-deflate python-echo-2
fi

# --- (d) websockets echo server <- `ferry connect` in line mode ----------------------------
# 1,000 lines (unicode, empty, one of 100 KB) through the command line client, compression on
# and off.

port=$(free_port)
if start_server python-echo-connect "$port" "$PY" "$SCRIPT_DIR/echo_server.py" "$port"; then
    run_step d-connect python-echo-connect "$PY" "$SCRIPT_DIR/../connect_check.py" "$FERRY_BIN" "ws://127.0.0.1:$port/"
    run_step d-connect-no-deflate python-echo-connect "$PY" "$SCRIPT_DIR/../connect_check.py" "$FERRY_BIN" "ws://127.0.0.1:$port/" --no-deflate
else
    step_broken d-connect python-echo-connect
fi

# --- (e) ferry serve with signed tokens <- websockets client, tokens from PyJWT --------------

secret_file=$LOGDIR/jwt-secret
"$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$secret_file"
port=$(free_port)
if start_server ferry-serve-tokens "$port" "$FERRY_BIN" serve --listen "127.0.0.1:$port" \
    --jwt-hmac-secret-file "$secret_file"; then
    run_step e-tokens ferry-serve-tokens "$PY" "$SCRIPT_DIR/token_check.py" "ws://127.0.0.1:$port" "$secret_file"
else
    step_broken e-tokens ferry-serve-tokens
fi

# --- (f) ferry serve over HTTP/2 <- h2 + websockets' sans-I/O protocol ----------------------
# Cleartext HTTP/2 (prior knowledge) and TLS with ALPN h2 on the same port as HTTP/1.1. The stall
# steps put a WebSocket whose reader stopped beside a live one on one connection: with the
# default windows the live one keeps echoing; with the connection window cut to one stream's,
# the stalled stream alone holds a large part of the connection's window (at least a quarter).

H2_CHECK=("$PY" "$SCRIPT_DIR/h2_check.py")
port=$(free_port)
if start_server ferry-serve-h2c "$port" "$FERRY_BIN" serve --listen "127.0.0.1:$port"; then
    run_step f-h2c-echo ferry-serve-h2c "${H2_CHECK[@]}" echo "http://127.0.0.1:$port"
    run_step f-h2c-stall ferry-serve-h2c "${H2_CHECK[@]}" stall "http://127.0.0.1:$port"
else
    step_broken f-h2c ferry-serve-h2c
fi

if command -v openssl >/dev/null 2>&1 &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
        -addext subjectAltName=IP:127.0.0.1 -keyout "$LOGDIR/h2-key.pem" -out "$LOGDIR/h2-cert.pem" \
        >"$LOGDIR/openssl.log" 2>&1; then
    port=$(free_port)
    if start_server ferry-serve-h2-tls "$port" "$FERRY_BIN" serve --listen "127.0.0.1:$port" \
        --tls-cert "$LOGDIR/h2-cert.pem" --tls-key "$LOGDIR/h2-key.pem"; then
        run_step f-h2-tls-echo ferry-serve-h2-tls "${H2_CHECK[@]}" echo "https://127.0.0.1:$port"
    else
        step_broken f-h2-tls ferry-serve-h2-tls
    fi
else
    echo "FAIL f-h2-tls: cannot make a test certificate with openssl (apt-get install openssl)"
    FAILED=$((FAILED + 1))
    FAILED_STEPS+=(f-h2-tls)
fi

port=$(free_port)
if start_server ferry-serve-h2-small "$port" "$FERRY_BIN" serve --listen "127.0.0.1:$port" \
    --http2-stream-window 256KiB --http2-connection-window 256KiB; then
    run_step f-h2c-stall-one-window ferry-serve-h2-small "${H2_CHECK[@]}" stall "http://127.0.0.1:$port" --expect-stall 262144
else
    step_broken f-h2c-stall-one-window ferry-serve-h2-small
fi

port=$(free_port)
if start_server ferry-serve-h1-only "$port" "$FERRY_BIN" serve --listen "127.0.0.1:$port" --http2 off; then
    run_step f-http2-off ferry-serve-h1-only "${H2_CHECK[@]}" off "http://127.0.0.1:$port"
else
    step_broken f-http2-off ferry-serve-h1-only
fi

# --- (g) Hypercorn <- ferry connect --http2 ------------------------------------------------
# A third-party HTTP/2 server with RFC 8441 for ferry's HTTP/2 client. connect_check.py waits
# for every echo before closing: Hypercorn stops echoing once it has the close frame.

# log_says LABEL SERVER PATTERN: one check that the server's log has PATTERN.
log_says() {
    if grep -q "$3" "$LOGDIR/$2.log"; then
        echo "ok   $1: the server logged \"$3\""
        PASSED=$((PASSED + 1))
    else
        echo "FAIL $1: the server never logged \"$3\""
        FAILED=$((FAILED + 1))
        FAILED_STEPS+=("$1")
        show_log "$2"
    fi
}

HYPERCORN=(env PYTHONPATH="$SCRIPT_DIR" "$VENV/bin/hypercorn")
port=$(free_port)
if start_server hypercorn-h2c "$port" "${HYPERCORN[@]}" --bind "127.0.0.1:$port" asgi_echo:app; then
    run_step g-hypercorn-h2c hypercorn-h2c "$PY" "$SCRIPT_DIR/../connect_check.py" "$FERRY_BIN" "ws://127.0.0.1:$port/" --http2
    log_says g-hypercorn-h2c-was-http2 hypercorn-h2c "websocket over HTTP/2"
else
    step_broken g-hypercorn-h2c hypercorn-h2c
fi
if [ -s "$LOGDIR/h2-cert.pem" ]; then
    port=$(free_port)
    if start_server hypercorn-h2-tls "$port" "${HYPERCORN[@]}" --bind "127.0.0.1:$port" \
        --certfile "$LOGDIR/h2-cert.pem" --keyfile "$LOGDIR/h2-key.pem" asgi_echo:app; then
        run_step g-hypercorn-tls hypercorn-h2-tls "$PY" "$SCRIPT_DIR/../connect_check.py" "$FERRY_BIN" "wss://127.0.0.1:$port/" --http2 --insecure
        log_says g-hypercorn-tls-was-http2 hypercorn-h2-tls "websocket over HTTP/2"
    else
        step_broken g-hypercorn-tls hypercorn-h2-tls
    fi
fi

summary
[ "$FAILED" -eq 0 ]
