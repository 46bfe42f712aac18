#!/usr/bin/env bash
# Interoperability of `ferry connect` with a websocat server.
#
# Usage: tests/interop/websocat/run.sh
#
#   (a) websocat echo server (`websocat -E -t -B 1048576 ws-l:127.0.0.1:PORT mirror:`)
#       <- `ferry connect` in line mode (../connect_check.py --no-empty): 1,000 lines with
#       unicode and one of 100 KB come back identical, and ferry exits 0.
#
# websocat 1.x quirks the check allows for: it reads an empty message as the end of the stream
# (so the lines carry "-" instead of empty lines), it answers a close frame by dropping the
# connection (ferry connect exits 0 when that happens after stdin ended), and it has no
# permessage-deflate in this build.
#
# Uses $WEBSOCAT, or target/websocat/bin/websocat, or installs it there with
# `cargo install --locked --no-default-features --version $WEBSOCAT_VERSION websocat` (about
# 2.5 minutes on 2 cores; no OpenSSL needed). Builds `ferry` in release mode. Ends with the line
# `interop-websocat: N passed, M failed`. If websocat cannot be had or python3 is missing, prints
# `SKIP: reason` and exits 0 (INTEROP_STRICT=1 fails instead).
#
# Environment knobs (defaults in brackets):
#   WEBSOCAT            a websocat binary to use instead of installing one
#   WEBSOCAT_VERSION    version to install  [1.14.1]
#   INTEROP_STRICT=1    a missing websocat or python3 fails instead of skipping
#   STEP_TIMEOUT, BUILD_TIMEOUT, STARTUP_TIMEOUT: as in ../lib.sh
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../../.." && pwd)
cd "$REPO_ROOT" || exit 1

case ${1:-} in
    -h | --help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    "") ;;
    *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

WEBSOCAT_VERSION=${WEBSOCAT_VERSION:-1.14.1}

SUITE=interop-websocat
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$SCRIPT_DIR/../lib.sh"

command -v python3 >/dev/null 2>&1 || skip "python3 not found; it drives ferry connect"

# --- websocat ------------------------------------------------------------------------------

INSTALL_ROOT=$TARGET_DIR/websocat
WS=${WEBSOCAT:-$INSTALL_ROOT/bin/websocat}
if [ -x "$WS" ] && "$WS" --version 2>/dev/null | grep -q "$WEBSOCAT_VERSION"; then
    log "reusing $WS ($("$WS" --version))"
elif [ -n "${WEBSOCAT:-}" ]; then
    skip "WEBSOCAT=$WEBSOCAT is not websocat $WEBSOCAT_VERSION"
else
    log "installing websocat $WEBSOCAT_VERSION into $INSTALL_ROOT (cargo install)"
    if ! bounded "$BUILD_TIMEOUT" cargo install --quiet --locked --no-default-features \
        --version "$WEBSOCAT_VERSION" --root "$INSTALL_ROOT" websocat >"$LOGDIR/install.log" 2>&1; then
        skip "cargo install websocat $WEBSOCAT_VERSION failed (no access to the crate registry?): $(tail -n 1 "$LOGDIR/install.log")"
    fi
fi

# --- Build ---------------------------------------------------------------------------------

build_ferry

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- (a) websocat echo server <- ferry connect ----------------------------------------------

port=$(free_port)
if start_server websocat-mirror "$port" "$WS" -E -t -B 1048576 "ws-l:127.0.0.1:$port" mirror:; then
    run_step a-connect websocat-mirror python3 "$SCRIPT_DIR/../connect_check.py" --no-empty "$FERRY_BIN" "ws://127.0.0.1:$port/"
else
    step_broken a-connect websocat-mirror
fi

summary
[ "$FAILED" -eq 0 ]
