#!/usr/bin/env bash
# Browser test of `ferry serve`'s page: headless Chromium drives the page a real `ferry serve`
# process serves, through its own buttons and fields, and asserts what the page shows.
#
# Usage: tests/browser/run.sh [--update-docs-image]
#
#   ferry serve (release build)  <- Chromium, two tabs (page_check.mjs)
#   echo of text and of a 100,000-byte file, a two-tab chat through a topic, the stats panel,
#   the lesson panel, and a bridge to a TCP echo this script starts; then a second ferry serve
#   that wants signed tokens (--jwt-hmac-secret-file), with tokens from `ferry token`.
#
# Screenshots of every step go to reports/browser/. With --update-docs-image the whole page
# after the steps is also written to docs/images/serve-page.png (the README's screenshot).
#
# Needs Chromium at /usr/bin/chromium (Debian's `chromium` package: installed with apt-get when
# missing and this runs as root) and playwright-core, pinned in package.json and
# package-lock.json, installed with `npm ci` into tests/browser/node_modules when missing.
# Playwright never downloads a browser here. Ends with the line `browser: N passed, M failed`
# and exits non-zero if any check failed. If node, npm, playwright-core or Chromium cannot be
# had, prints `SKIP: reason` and exits 0 (set INTEROP_STRICT=1 to fail instead, as CI does).
#
# Environment knobs (defaults in brackets):
#   NODE                node binary, 20 or later  [node]
#   CHROMIUM            the Chromium to drive  [/usr/bin/chromium]
#   INTEROP_STRICT=1    a missing prerequisite fails instead of skipping
#   STEP_TIMEOUT        seconds the page check may take  [240]
#   BUILD_TIMEOUT       seconds the cargo build may take  [1800]
#   STARTUP_TIMEOUT     seconds to wait for a server's port  [20]
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
cd "$REPO_ROOT" || exit 1

DOCS_IMAGE=()
case ${1:-} in
    -h | --help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    --update-docs-image) DOCS_IMAGE=(--docs-image "$REPO_ROOT/docs/images/serve-page.png") ;;
    "") ;;
    *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

NODE=${NODE:-node}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
STEP_TIMEOUT=${STEP_TIMEOUT:-240}
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

SUITE=browser
# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$REPO_ROOT/tests/interop/lib.sh"

# --- Node, playwright-core and Chromium ----------------------------------------------------

setup_playwright_chromium "the browser test"

# --- Build and servers ---------------------------------------------------------------------

build_ferry

echo_port=$(free_port)
start_server tcp-echo "$echo_port" "$NODE" -e \
    'require("net").createServer((s) => s.pipe(s)).listen(Number(process.argv[1]), "127.0.0.1")' "$echo_port" \
    || fatal tcp-echo "the TCP echo for the bridge step did not start"
SERVE_FLAGS=(--bridge "echo=tcp://127.0.0.1:$echo_port")
BRIDGE=(--bridge echo)
log "the bridge step runs against a TCP echo on 127.0.0.1:$echo_port"

port=$(free_port)
start_server ferry-serve "$port" env NO_COLOR=1 RUST_LOG=debug "$FERRY_BIN" serve \
    --listen "127.0.0.1:$port" "${SERVE_FLAGS[@]}" \
    || fatal ferry-serve "ferry serve did not start"

# A protected server: the page's token field, ?token= on the address, and what a refused page says.
secret_file=$LOGDIR/jwt-secret
printf 'browser-test-secret-%s-%s-0123456789abcdef' "$RANDOM$RANDOM" "$(date +%s%N)" >"$secret_file"
auth_port=$(free_port)
start_server ferry-serve-tokens "$auth_port" env NO_COLOR=1 RUST_LOG=debug "$FERRY_BIN" serve \
    --listen "127.0.0.1:$auth_port" --jwt-hmac-secret-file "$secret_file" \
    || fatal ferry-serve-tokens "ferry serve with --jwt-hmac-secret-file did not start"
writer=$("$FERRY_BIN" token --secret-file "$secret_file" --sub carol --subscribe 'chat.*' --publish 'chat.*') \
    || fatal ferry-token "ferry token failed"
reader=$("$FERRY_BIN" token --secret-file "$secret_file" --sub dave --subscribe 'chat.*') \
    || fatal ferry-token "ferry token failed"
TOKENS=(--tokens "http://127.0.0.1:$auth_port/" "$writer" "$reader")

SCREENSHOTS=$REPO_ROOT/reports/browser
rm -rf "$SCREENSHOTS"
run_step page ferry-serve "$NODE" "$SCRIPT_DIR/page_check.mjs" "http://127.0.0.1:$port/" \
    --chromium "$CHROMIUM" --screenshots "$SCREENSHOTS" "${BRIDGE[@]}" "${TOKENS[@]}" "${DOCS_IMAGE[@]}"

summary
[ "$FAILED" -eq 0 ]
