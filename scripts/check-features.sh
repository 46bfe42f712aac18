#!/usr/bin/env bash
# Builds and tests the Cargo feature sets a user can pick, beyond the default one that
# `cargo test --workspace` covers, and type-checks the non-Unix branches. Separate target
# directory, so the main build's artifacts are not rebuilt back and forth.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="$PWD/target/features"
run() { printf -- '--- %s\n' "$*"; "$@"; }

# ferry-proto without permessage-deflate: no zlib-rs, offers declined.
run cargo test --locked --quiet -p ferry-proto --no-default-features
# ferry with nothing: ws:// and ws+unix:// only; wss:// refused with the features to enable.
run cargo test --locked --quiet -p ferry --no-default-features --lib
run cargo clippy --locked --quiet -p ferry --no-default-features --all-targets -- -D warnings
# TLS with no provider compiled in (the process installs one), and hyper without TLS.
run cargo test --locked --quiet -p ferry --no-default-features --features tls --lib
run cargo clippy --locked --quiet -p ferry --no-default-features --features hyper --lib -- -D warnings
# aws-lc-rs instead of ring: the TLS tests handshake with it.
run cargo test --locked --quiet -p ferry --no-default-features --features aws-lc-rs,webpki-roots,deflate --lib --test tls
# ring and aws-lc-rs both compiled in (as `--all-features` builds it): rustls can then not
# guess the process's provider, and the rediss:// client of `ferry serve` must still find one.
run cargo test --locked --quiet -p ferry-cli --features ferry/aws-lc-rs --test cluster rediss
# ferry-axum without deflate.
run cargo clippy --locked --quiet -p ferry-axum --no-default-features --all-targets -- -D warnings

run scripts/check-non-unix.sh
