#!/usr/bin/env bash
# Type-checks the code a non-Unix build compiles, on this Linux machine: a copy of the
# workspace with every `cfg(unix)` made false and every `cfg(not(unix))` true, checked with
# `cargo check`. It proves the non-Unix branches (no Unix sockets, no SIGHUP/SIGTERM, no
# rlimit) compile against ferry's own code; it is not a Windows build: no other target's
# standard library can be fetched here, and dependencies keep their Linux code.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
cd "$root"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$copy"
find "$copy/crates" -name '*.rs' -print0 | xargs -0 sed -i \
    -e 's/cfg(not(unix))/cfg(all())/g' -e 's/cfg(unix)/cfg(any())/g' \
    -e 's/cfg_attr(not(unix),/cfg_attr(all(),/g' -e 's/cfg_attr(unix,/cfg_attr(any(),/g'
flipped=$(grep -rl 'cfg(any())\|cfg(all())\|cfg_attr(all(),' "$copy/crates" | wc -l)
echo "non-Unix check: $flipped files have Unix-only code, flipped"
cd "$copy"
CARGO_TARGET_DIR="$root/target/non-unix" RUSTFLAGS="-D warnings" \
    cargo check --locked --workspace --all-targets --quiet
echo "non-Unix check: ok"
