#!/usr/bin/env bash
# Fuzzing in CI: every fuzz target (fuzz/: ferry-proto's parsers and ferry serve's) for
# FUZZ_SECONDS each, two at a time (the machines have two cores), on the stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly flags; no other toolchain can be fetched here).
# Fails on any crash, failed
# invariant, leak report or timeout, and names the input that did it (kept under
# fuzz/artifacts/TARGET/).
#
#   scripts/fuzz/ci.sh                  every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz/ci.sh deflate_inflate
#
# Each run reads the committed seeds (fuzz/corpus/TARGET) and writes what it finds to a scratch
# corpus, so the repository is not touched; a campaign by hand that should grow the committed
# corpus is described in fuzz/README.md. Installs cargo-fuzz with cargo when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_EACH=${FUZZ_SECONDS:-60}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2 --quiet
fi
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    # Every [[bin]] of fuzz/Cargo.toml, so a new target is run without being listed here.
    mapfile -t TARGETS < <(cargo fuzz list)
fi
[ ${#TARGETS[@]} -gt 0 ] || { echo "fuzz: no targets found (cargo fuzz list)"; exit 1; }
command -v c++ >/dev/null || { echo "fuzz: libFuzzer needs a C++ compiler (apt-get install g++)"; exit 1; }

echo "fuzz: building ${#TARGETS[*]} targets (AddressSanitizer)"
cargo fuzz build 2>&1 | tail -n 1

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/ferry-fuzz.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
failed=()
run() { # TARGET: one run, its log in $SCRATCH/TARGET.log
    local target=$1
    mkdir -p "$SCRATCH/$target"
    if cargo fuzz run "$target" "$SCRATCH/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$SCRATCH/$target.log" 2>&1; then
        echo "ok   fuzz $target: $(grep -m1 -o 'Done [0-9]* runs in [0-9]* second(s)' "$SCRATCH/$target.log"), $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$SCRATCH/$target.log" | tr -s ' ')"
    else
        echo "FAIL fuzz $target:"
        grep -E 'ERROR|panicked|SUMMARY|Test unit written to|assertion' "$SCRATCH/$target.log" | head -n 20
        return 1
    fi
}
i=0
while [ $i -lt ${#TARGETS[@]} ]; do
    pids=()
    names=()
    for target in "${TARGETS[@]:$i:2}"; do
        run "$target" &
        pids+=($!)
        names+=("$target")
    done
    for k in "${!pids[@]}"; do
        wait "${pids[$k]}" || failed+=("${names[$k]}")
    done
    i=$((i + 2))
done
passed=$(( ${#TARGETS[@]} - ${#failed[@]} ))
echo "fuzz: ${passed} passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
