#!/usr/bin/env bash
# make demo: set up, build (cached), boot a 2 GiB guest, balloon it to 1 GiB and back, live.
set -euo pipefail
. "$(dirname "$0")/env.sh"
bash "$VB_ROOT/scripts/setup.sh"
kdir=$(bash "$VB_ROOT/scripts/kernel.sh" guest | tail -1)
module=$(bash "$VB_ROOT/scripts/module.sh" --kdir "$kdir" | tail -1)
cd "$VB_ROOT"
cargo build -q --release -p qemu-test
exec "$VB_ROOT/target/release/qemu-test" demo --kdir "$kdir" --module "$module" --work "$VB_CACHE/run-demo"
