#!/usr/bin/env bash
# Runs every interop suite in sequence: Python websockets, Node ws, headless Chromium, websocat.
#
# Usage: tests/interop/run-all.sh
#
# Each suite prints its own summary line (`interop: ...` for Python, `interop-node: ...`,
# `interop-browser: ...`, `interop-websocat: ...`) or `SKIP: reason`; this ends with
# `interop-all: N passed, M failed`, the sum of them all, and exits non-zero if any suite
# failed. Every suite runs even when an earlier one failed. The suites' environment knobs (INTEROP_STRICT, STEP_TIMEOUT, ...) pass
# through; see each run.sh --help and tests/interop/README.md.
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

case ${1:-} in
    -h | --help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    "") ;;
    *) echo "run-all.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

PASSED=0
FAILED=0
FAILED_SUITES=()
REPORT=()
OUT=$(mktemp "${TMPDIR:-/tmp}/ferry-interop-all.XXXXXX")
trap 'rm -f "$OUT"' EXIT

for suite in python node browser websocat; do
    printf '\n=== interop suite: %s\n' "$suite"
    started=$SECONDS
    "$SCRIPT_DIR/$suite/run.sh" 2>&1 | tee "$OUT"
    rc=${PIPESTATUS[0]}
    took=$((SECONDS - started))
    line=$(grep -E '^[a-z-]+: [0-9]+ passed, [0-9]+ failed$' "$OUT" | tail -n 1)
    if [ -n "$line" ]; then
        read -r passed failed < <(sed -E 's/^[a-z-]+: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/' <<<"$line")
        PASSED=$((PASSED + passed))
        FAILED=$((FAILED + failed))
        REPORT+=("$suite: $passed passed, $failed failed (${took}s)")
    elif [ "$rc" -eq 0 ] && grep -q '^SKIP' "$OUT"; then
        REPORT+=("$suite: skipped: $(grep '^SKIP' "$OUT" | head -n 1 | sed 's/^SKIP: //')")
    else
        # It died without a summary: count it as one failure.
        FAILED=$((FAILED + 1))
        REPORT+=("$suite: exited with status $rc and no summary (${took}s)")
    fi
    [ "$rc" -eq 0 ] || FAILED_SUITES+=("$suite")
done

printf '\n=== interop summary (%ss)\n' "$SECONDS"
printf '  %s\n' "${REPORT[@]}"
[ "${#FAILED_SUITES[@]}" -eq 0 ] || echo "  failed suites: ${FAILED_SUITES[*]}"
echo "interop-all: $PASSED passed, $FAILED failed"
[ "${#FAILED_SUITES[@]}" -eq 0 ]
