#!/usr/bin/env bash
# Lints that CI enforces: rustfmt (kernel style for the module, cargo fmt for the host crates),
# cargo clippy on the host crates, and the module built with CLIPPY=1 with no warning at all.
#   scripts/lint.sh [--kdir DIR]    prints "lint: ok" or the problems, exit 0/1
set -uo pipefail
. "$(dirname "$0")/env.sh"
ok=1
kdir=${KDIR:-}
[ "${1:-}" = --kdir ] && kdir=$2
[ -n "$kdir" ] || kdir=$(bash "$VB_ROOT/scripts/kernel.sh" debug | tail -1)
src=$(ls -d "$VB_CACHE"/src/linux-* | head -1)
if ! rustfmt --edition 2021 --config-path "$src/.rustfmt.toml" --check "$VB_ROOT/rust/vballoon.rs"; then
    echo "lint: rust/ is not rustfmt-clean (kernel .rustfmt.toml)"; ok=0
fi
if ! (cd "$VB_ROOT" && cargo fmt --all -- --check); then
    echo "lint: host crates are not rustfmt-clean"; ok=0
fi
if ! (cd "$VB_ROOT" && cargo clippy -q --workspace -- -D warnings); then
    echo "lint: cargo clippy reports warnings in the host crates"; ok=0
fi
touch "$VB_ROOT/rust/vballoon.rs"
out=$(bash "$VB_ROOT/scripts/module.sh" --kdir "$kdir" --clippy 2>&1) || { echo "$out" | tail -30; echo "lint: clippy build failed"; ok=0; }
if echo "$out" | grep -E '^(warning|error)' >/dev/null; then
    echo "$out" | grep -E '^(warning|error)' -A8
    echo "lint: the CLIPPY=1 module build has warnings"; ok=0
fi
if [ $ok = 1 ]; then echo "lint: ok"; else exit 1; fi
