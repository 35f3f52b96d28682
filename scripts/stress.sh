#!/usr/bin/env bash
# make stress: the long soak, on the debug kernel (lockdep, KFENCE, kmemleak, overflow checks):
# 1000 inflate/deflate cycles of random sizes with a workload running (QEMU RSS must stay flat),
# then 100 insmod/rmmod cycles (plain, inflated, mid-inflate), MemTotal exact after every
# rmmod, kmemleak clean at the end. `make test` runs a short version (stress_short).
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
cargo build -q --release -p qemu-test
exec "$VB_ROOT/target/release/qemu-test" stress --kdir "$kdir" --module "$module" \
    --work "$VB_CACHE/run-stress" --flavor "$flavor" "${args[@]}"
