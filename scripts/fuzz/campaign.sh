#!/usr/bin/env bash
# A long fuzzing campaign by hand (not CI): every target (or those named) for CAMPAIGN_SECONDS
# (3600) of wall time, all at once, at the lowest CPU priority so the machine stays usable.
# Each run starts from the committed corpus and writes to a scratch one; at the end, the inputs
# that add coverage are merged into fuzz/corpus/TARGET (libFuzzer -merge=1), so the committed
# corpora grow by what the campaign found, minimised. Prints a Markdown table (executions,
# coverage, corpus) for docs/testing.md, and fails on any crash, like scripts/fuzz/ci.sh.
#
#   scripts/fuzz/campaign.sh                          every target, one hour each, in parallel
#   CAMPAIGN_SECONDS=600 scripts/fuzz/campaign.sh token_check
#
# On two cores, eight targets at once get about a quarter of a core each: the table says how
# many executions that bought. Needs what scripts/fuzz/ci.sh needs (cargo-fuzz, a C++ compiler).
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_EACH=${CAMPAIGN_SECONDS:-3600}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2 --quiet
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(cargo fuzz list) # every [[bin]] of fuzz/Cargo.toml
fi
[ ${#TARGETS[@]} -gt 0 ] || { echo "fuzz: no targets found (cargo fuzz list)"; exit 1; }
cargo fuzz build 2>&1 | tail -n 1

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/ferry-campaign.XXXXXX")
echo "campaign: ${#TARGETS[@]} targets, ${SECONDS_EACH} s each, logs in $LOGS"
pids=()
for target in "${TARGETS[@]}"; do
    mkdir -p "$LOGS/$target.corpus"
    nice -n 19 cargo fuzz run "$target" "$LOGS/$target.corpus" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$LOGS/$target.log" 2>&1 &
    pids+=($!)
done
failed=()
for k in "${!pids[@]}"; do
    wait "${pids[$k]}" || failed+=("${TARGETS[$k]}")
done

echo
echo "| target | executions | exec/s | coverage (edges) | features | corpus before | added | crashes |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for target in "${TARGETS[@]}"; do
    log="$LOGS/$target.log"
    before=$(find "fuzz/corpus/$target" -type f | wc -l)
    # Grow the committed corpus by what adds coverage to it.
    cargo fuzz run "$target" "fuzz/corpus/$target" "$LOGS/$target.corpus" -- -merge=1 \
        >"$LOGS/$target.merge.log" 2>&1 || true
    after=$(find "fuzz/corpus/$target" -type f | wc -l)
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' <<<"$done_line" | grep -o '[0-9]*')
    ft=$(grep -o 'ft: [0-9]*' <<<"$done_line" | grep -o '[0-9]*')
    rate=$(( ${runs:-0} / SECONDS_EACH ))
    crash=none
    if printf '%s\n' "${failed[@]:-}" | grep -qx "$target"; then
        crash="**$(grep -m1 -o 'Test unit written to .*' "$log" || echo 'failed, see log')**"
    fi
    echo "| \`$target\` | ${runs:-?} | $rate | ${cov:-?} | ${ft:-?} | $before | $((after - before)) | $crash |"
done
echo
echo "campaign: ${#failed[@]} failed; logs in $LOGS"
[ ${#failed[@]} -eq 0 ]
