#!/usr/bin/env bash
# Interoperability tests between ferry and Node's `ws` library, both directions, with
# permessage-deflate on and off.
#
# Usage: tests/interop/node/run.sh
#
#   (a) `ferry echo`                       <- ws client (client_check.mjs)
#       a-deflate:        both sides with their default permessage-deflate
#       a-no-deflate:     `ferry echo --no-deflate` declines it
#       a-ws-no-deflate:  the ws client offers none (perMessageDeflate: false)
#   (b) ws echo server (echo_server.mjs)   <- ferry's interop_client example
#       b-deflate:        ws server with perMessageDeflate: true, ferry with its defaults
#       b-no-deflate:     ws server without permessage-deflate
#       b-ferry-no-deflate: `interop_client --no-deflate` offers none
#   (c) ws echo server                     <- `ferry connect` (../connect_check.py, 1,000 lines)
#       c-connect, c-connect-no-deflate: compression on and off
#
# Every step in (a) and (b) asserts the negotiated Sec-WebSocket-Extensions on both sides, that payloads of
# 0 bytes to 16 MiB - 1 KiB (UTF-8 and JSON-like text and binary, random binary) come back
# intact, and that the bytes on the socket match what was negotiated (compressed or not).
#
# Installs `ws` (pinned in package.json and package-lock.json) into tests/interop/node/node_modules
# with `npm ci` if it is not there, builds `ferry` and the example in release mode, runs the
# steps, and ends with the line `interop-node: N passed, M failed` (one per check). Exits
# non-zero if any check failed. If node or npm is missing or the install fails, prints
# `SKIP: reason` and exits 0 (set INTEROP_STRICT=1 to fail instead).
#
# Environment knobs (defaults in brackets):
#   NODE                node binary  [node]
#   INTEROP_STRICT=1    a missing node / npm / ws install fails instead of skipping
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

NODE=${NODE:-node}

SUITE=interop-node
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$SCRIPT_DIR/../lib.sh"

# --- Node and ws ---------------------------------------------------------------------------

command -v "$NODE" >/dev/null 2>&1 || skip "$NODE not found; the Node interop tests need Node.js 18 or later (Debian: apt-get install nodejs npm)"
"$NODE" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' \
    || skip "Node.js $("$NODE" --version) is too old; the Node interop tests need 18 or later"
npm_ci_pinned ws "the Node interop tests"
log "node $("$NODE" --version), ws $NPM_PINNED"

# --- Build ---------------------------------------------------------------------------------

build_ferry
build_example

CHECK=("$NODE" "$SCRIPT_DIR/client_check.mjs")
SERVER=("$NODE" "$SCRIPT_DIR/echo_server.mjs")

# The negotiated extension each step expects, as the server writes its Sec-WebSocket-Extensions
# answer (and as ferry's DeflateParams::to_header writes it). They follow from both sides'
# defaults, so a change of defaults shows up here:
# - the ws client offers "permessage-deflate; client_max_window_bits"; `ferry echo` (peer window
#   12 bits by default) limits the client's window to 4 KiB;
# - ferry's client (Config::default) offers "permessage-deflate; client_no_context_takeover;
#   server_max_window_bits=12; client_max_window_bits"; the ws server (perMessageDeflate: true)
#   accepts the client's no-context-takeover and 12-bit server window, and leaves the client's
#   window alone, so it drops client_max_window_bits from the answer.
FERRY_ANSWERS="permessage-deflate; client_max_window_bits=12"
WS_ANSWERS="permessage-deflate; client_no_context_takeover; server_max_window_bits=12"

# --- (a) ferry echo <- ws client -----------------------------------------------------------

port=$(free_port)
if start_ferry_echo ferry-echo "$port"; then
    run_step a-deflate ferry-echo "${CHECK[@]}" "ws://127.0.0.1:$port/" --expect-extensions "$FERRY_ANSWERS"
    run_step a-ws-no-deflate ferry-echo "${CHECK[@]}" "ws://127.0.0.1:$port/" --no-deflate --expect-extensions none
else
    step_broken a ferry-echo
fi

port=$(free_port)
if start_ferry_echo ferry-echo-no-deflate "$port" --no-deflate; then
    run_step a-no-deflate ferry-echo-no-deflate "${CHECK[@]}" "ws://127.0.0.1:$port/" --expect-extensions none
else
    step_broken a-no-deflate ferry-echo-no-deflate
fi

# --- (b) ws echo server <- ferry interop_client --------------------------------------------
# Each server takes one client and reports the extensions and the socket bytes of its
# connection: 2 verdicts.

port=$(free_port)
if start_server ws-echo "$port" "${SERVER[@]}" "$port" --expect-extensions "$WS_ANSWERS"; then
    run_step b-deflate ws-echo "$CLIENT_BIN" --expect-deflate "$WS_ANSWERS" "ws://127.0.0.1:$port/"
    server_report b-deflate-server ws-echo 2
else
    step_broken b-deflate ws-echo
fi

port=$(free_port)
if start_server ws-echo-no-deflate "$port" "${SERVER[@]}" "$port" --no-deflate --expect-extensions none; then
    run_step b-no-deflate ws-echo-no-deflate "$CLIENT_BIN" --expect-deflate none "ws://127.0.0.1:$port/"
    server_report b-no-deflate-server ws-echo-no-deflate 2
else
    step_broken b-no-deflate ws-echo-no-deflate
fi

port=$(free_port)
if start_server ws-echo-2 "$port" "${SERVER[@]}" "$port" --expect-extensions none; then
    run_step b-ferry-no-deflate ws-echo-2 "$CLIENT_BIN" --no-deflate --expect-deflate none "ws://127.0.0.1:$port/"
    server_report b-ferry-no-deflate-server ws-echo-2 2
else
    step_broken b-ferry-no-deflate ws-echo-2
fi

# --- (c) ws echo server <- `ferry connect` in line mode -------------------------------------
# 1,000 lines (unicode, empty, one of 100 KB) through the command line client, compression on
# (the server accepts the offer) and off (the client offers none).

if command -v python3 >/dev/null 2>&1; then
    port=$(free_port)
    if start_server ws-echo-connect "$port" "${SERVER[@]}" "$port"; then
        run_step c-connect ws-echo-connect python3 "$SCRIPT_DIR/../connect_check.py" "$FERRY_BIN" "ws://127.0.0.1:$port/"
        run_step c-connect-no-deflate ws-echo-connect python3 "$SCRIPT_DIR/../connect_check.py" "$FERRY_BIN" "ws://127.0.0.1:$port/" --no-deflate
    else
        step_broken c-connect ws-echo-connect
    fi
else
    skip "python3 not found; it drives ferry connect in step c"
fi

summary
[ "$FAILED" -eq 0 ]
