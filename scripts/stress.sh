#!/usr/bin/env bash
# make stress: the long soak, on the debug kernel (lockdep, KFENCE, kmemleak, overflow checks):
# 1000 inflate/deflate cycles of random sizes with a workload running (QEMU RSS must stay flat),
# then 100 insmod/rmmod cycles (plain, inflated, mid-inflate), MemTotal exact after every
# rmmod, kmemleak clean at the end; then 30 rounds of teardown_compaction. `make test` runs a
# short version (stress_short, and 3 rounds of teardown_compaction).
#   scripts/stress.sh [--cycles N] [--loads N] [--flavor guest|debug|kasan]   VB_SEED=N replays a run
# VB_FLAVOR=kasan (or --flavor kasan) soaks on the KASAN kernel (scripts/config/kasan.config).
set -euo pipefail
. "$(dirname "$0")/env.sh"
flavor=${VB_FLAVOR:-debug}; args=()
while [ $# -gt 0 ]; do
    case $1 in
        --flavor) flavor=$2; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
bash "$VB_ROOT/scripts/setup.sh"
kdir=$(bash "$VB_ROOT/scripts/kernel.sh" "$flavor" | tail -1)
module=$(bash "$VB_ROOT/scripts/module.sh" --kdir "$kdir" | tail -1)
cd "$VB_ROOT"
cargo build -q --release -p qemu-test -p vhost-balloon
"$VB_ROOT/target/release/qemu-test" stress --kdir "$kdir" --module "$module" \
    --work "$VB_CACHE/run-stress" --flavor "$flavor" "${args[@]}"
# Then 30 rmmods with a silent host while compaction runs (teardown_compaction, 3 in make test).
qemu=$(bash "$VB_ROOT/scripts/qemu.sh" | tail -1)
VB_TEARDOWN_REPS=${VB_TEARDOWN_REPS:-30} "$VB_ROOT/target/release/qemu-test" test --kdir "$kdir" \
    --module "$module" --work "$VB_CACHE/run-stress" --flavor "$flavor" --vhost-qemu "$qemu" \
    --only teardown_compaction
