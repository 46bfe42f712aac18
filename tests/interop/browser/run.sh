#!/usr/bin/env bash
# Interoperability tests between ferry and a real browser: headless Chromium's WebSocket
# against `ferry echo`, with permessage-deflate on and off.
#
# Usage: tests/interop/browser/run.sh
#
#   `ferry echo`                                <- Chromium (browser_check.mjs + page.js)
#   b-deflate:     ferry echo's default permessage-deflate
#   b-no-deflate:  `ferry echo --no-deflate`: ws.extensions must be ""
#   b-params:      `ferry echo --deflate-no-context-takeover --deflate-peer-window-bits 9`:
#                  Chromium must accept and honour server_no_context_takeover and a 512-byte
#                  client window
#
#   `ferry serve` over https                    <- Chromium (h2_check.mjs, RFC 8441)
#   b-h2:          the page loads over HTTP/2 and its WebSocket is a stream of that connection:
#                  echoes, permessage-deflate, close 1000, and ferry_connections_total{http="2"}
#                  grows by one (the server's word for it, not a guess)
#   b-h2-off:      the same with `--http2 off`: HTTP/1.1, and the {http="1.1"} count grows
#
# Only this direction: a browser cannot be a WebSocket server, so there is no Chromium server
# for ferry's client to talk to.
#
# Each step asserts the negotiated extension (the page's ws.extensions; Chromium's offer and
# ferry's Sec-WebSocket-Extensions answer are printed from the DevTools protocol), echoes text
# and binary messages of 0 bytes to 16 MiB - 1 KiB made in the page (UTF-8, JSON-like and
# random text; JSON-like and random binary), each compared by type, length and SHA-256, and
# closes with 1000.
#
# Needs Chromium at /usr/bin/chromium (Debian's `chromium` package: installed with apt-get when
# missing and this runs as root) and playwright-core, pinned in package.json and
# package-lock.json, installed with `npm ci` into tests/interop/browser/node_modules when missing.
# Playwright never downloads a browser here. Ends with the line
# `interop-browser: N passed, M failed` (one per check) and exits non-zero if any check failed.
# If node, npm, playwright-core or Chromium cannot be had, prints `SKIP: reason` and exits 0
# (set INTEROP_STRICT=1 to fail instead).
#
# Environment knobs (defaults in brackets):
#   NODE                node binary, 20 or later  [node]
#   CHROMIUM            the Chromium to drive  [/usr/bin/chromium]
#   INTEROP_STRICT=1    a missing prerequisite fails instead of skipping
#   STEP_TIMEOUT        seconds one check step may take  [240]
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
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
STEP_TIMEOUT=${STEP_TIMEOUT:-240}
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

SUITE=interop-browser
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$SCRIPT_DIR/../lib.sh"

# --- Node, playwright-core and Chromium ----------------------------------------------------

setup_playwright_chromium "the browser interop tests"

# --- Build ---------------------------------------------------------------------------------

build_ferry

CHECK=("$NODE" "$SCRIPT_DIR/browser_check.mjs" --chromium "$CHROMIUM")

# What Chromium's ws.extensions must say. Chromium offers "permessage-deflate;
# client_max_window_bits" and reports the server's answer as it came. `ferry echo` asks a
# 12-bit client window by default; with --deflate-no-context-takeover it also promises to reset
# its own compressor, and --deflate-peer-window-bits 9 asks a 9-bit client window.
DEFAULT_ANSWER="permessage-deflate; client_max_window_bits=12"
PARAMS_ANSWER="permessage-deflate; server_no_context_takeover; client_max_window_bits=9"

# browser_step LABEL EXPECTED [FERRY ECHO FLAGS...]: one ferry echo, one Chromium run.
browser_step() {
    local label=$1 expected=$2 port
    shift 2
    port=$(free_port)
    if start_ferry_echo "ferry-echo-$label" "$port" "$@"; then
        run_step "$label" "ferry-echo-$label" "${CHECK[@]}" "ws://127.0.0.1:$port/" --expect-extensions "$expected"
    else
        step_broken "$label" "ferry-echo-$label"
    fi
}

browser_step b-deflate "$DEFAULT_ANSWER"
browser_step b-no-deflate none --no-deflate
browser_step b-params "$PARAMS_ANSWER" --deflate-no-context-takeover --deflate-peer-window-bits 9

# Browsers use HTTP/2 only over TLS: a test certificate from openssl, whose errors the check
# tells Chromium to ignore.
H2_CHECK=("$NODE" "$SCRIPT_DIR/h2_check.mjs" --chromium "$CHROMIUM")
if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$LOGDIR/key.pem" -out "$LOGDIR/cert.pem" \
    >"$LOGDIR/openssl.log" 2>&1; then
    for variant in "b-h2 2" "b-h2-off 1.1 --http2 off"; do
        read -r label http flags <<<"$variant"
        port=$(free_port)
        # shellcheck disable=SC2086 # flags is empty or one flag and its value
        if start_server "ferry-serve-$label" "$port" "$FERRY_BIN" serve --listen "127.0.0.1:$port" \
            --tls-cert "$LOGDIR/cert.pem" --tls-key "$LOGDIR/key.pem" $flags; then
            run_step "$label" "ferry-serve-$label" "${H2_CHECK[@]}" "https://127.0.0.1:$port" --expect-http "$http"
        else
            step_broken "$label" "ferry-serve-$label"
        fi
    done
else
    echo "FAIL b-h2: cannot make a test certificate with openssl (apt-get install openssl)"
    FAILED=$((FAILED + 1))
    FAILED_STEPS+=(b-h2)
fi

summary
[ "$FAILED" -eq 0 ]
