#!/usr/bin/env bash
# make demo / make bench: set up, build kernel (cached) and module, then run the harness mode:
#   demo   boot a 2 GiB guest, balloon it to 1 GiB and back live, unload, shut down
#   bench  vballoon against the in-tree C driver on the same kernel, same run; prints ratios
set -euo pipefail
. "$(dirname "$0")/env.sh"
mode=${1:?usage: harness.sh demo|bench}
bash "$VB_ROOT/scripts/setup.sh"
kdir=$(bash "$VB_ROOT/scripts/kernel.sh" guest | tail -1)
module=$(bash "$VB_ROOT/scripts/module.sh" --kdir "$kdir" | tail -1)
cd "$VB_ROOT"
cargo build -q --release -p qemu-test
exec "$VB_ROOT/target/release/qemu-test" "$mode" --kdir "$kdir" --module "$module" --work "$VB_CACHE/run-$mode"
