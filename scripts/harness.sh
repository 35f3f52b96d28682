#!/usr/bin/env bash
# make demo / make bench: set up, build kernel (cached) and module, then run the harness mode:
#   demo   boot a 2 GiB guest, balloon it to 1 GiB and back live, unload, shut down
#   bench  vballoon against the in-tree C driver on the same kernel, same run, on QEMU's own
#          balloon and on the project's vhost-user host (vballoon-host behind scripts/qemu.sh's
#          QEMU); prints vballoon/C ratios and writes results/bench-<UTC time>/.
#          VB_BENCH_ROUNDS (5), VB_BENCH_HOSTS (qemu,vhost-ranges), VB_BENCH_PARAMS (vballoon's
#          extra module parameters, e.g. block_kib=0)
set -euo pipefail
. "$(dirname "$0")/env.sh"
mode=${1:?usage: harness.sh demo|bench}
start=$(date +%s)
bash "$VB_ROOT/scripts/setup.sh"
kdir=$(bash "$VB_ROOT/scripts/kernel.sh" guest | tail -1)
module=$(bash "$VB_ROOT/scripts/module.sh" --kdir "$kdir" | tail -1)
cd "$VB_ROOT"
if [ "$mode" != bench ]; then
    cargo build -q --release -p qemu-test
    exec "$VB_ROOT/target/release/qemu-test" "$mode" --kdir "$kdir" --module "$module" --work "$VB_CACHE/run-$mode"
fi
cargo build -q --release -p qemu-test -p vhost-balloon
vhost=()
case ",${VB_BENCH_HOSTS:-qemu,vhost-ranges}," in
    *,vhost-ranges,*)
        # The vhost-user host needs the project's QEMU build (cached; about 5.5 min from clean).
        vhost_qemu=$(bash "$VB_ROOT/scripts/qemu.sh" | tail -1)
        vhost=(--vhost-qemu "$vhost_qemu");;
esac
rc=0
"$VB_ROOT/target/release/qemu-test" bench --kdir "$kdir" --module "$module" \
    --work "$VB_CACHE/run-bench" "${vhost[@]}" || rc=$?
echo "[bench] make bench took $(( $(date +%s) - start )) s"
exit $rc
