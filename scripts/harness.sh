#!/usr/bin/env bash
# make demo / make bench: set up, build kernel (cached) and module, then run the harness mode:
#   demo   boot a 2 GiB guest, balloon it to 1 GiB and back live, unload, shut down
#   bench  vballoon against the in-tree C driver on the same kernel, same run, on QEMU's own
#          balloon and on the project's vhost-user host (vballoon-host behind scripts/qemu.sh's
#          QEMU); prints vballoon/C ratios and writes results/bench-<UTC time>/ per kernel.
#          VB_BENCH_KERNELS (debian,debian:init_on_alloc=0,project): each entry a kernel
#          (debian: the newest Rust-enabled kernel of trixie-backports, packaged vmlinuz, Debian's
#          own virtio_balloon.ko as the C side; project: the project's test kernel) and, after a
#          colon, words for its command line. VB_BENCH_ROUNDS (5), VB_BENCH_HOSTS
#          (qemu,vhost-ranges), VB_BENCH_PARAMS (vballoon's extra module parameters, e.g.
#          block_kib=0)
set -euo pipefail
. "$(dirname "$0")/env.sh"
mode=${1:?usage: harness.sh demo|bench}
start=$(date +%s)
bash "$VB_ROOT/scripts/setup.sh"
cd "$VB_ROOT"
project_kernel() {
    kdir=$(bash "$VB_ROOT/scripts/kernel.sh" guest | tail -1)
    module=$(bash "$VB_ROOT/scripts/module.sh" --kdir "$kdir" | tail -1)
}
if [ "$mode" != bench ]; then
    project_kernel
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
summaries=()
IFS=, read -ra kernels <<<"${VB_BENCH_KERNELS:-debian,debian:init_on_alloc=0,project}"
for k in "${kernels[@]}"; do
    name=${k%%:*}; append=; [ "$name" = "$k" ] || append=${k#*:}
    case $name in
        project)
            project_kernel
            args=(--kdir "$kdir" --module "$module" --flavor guest);;
        debian)
            dlog=$(mktemp)
            if ! bash "$VB_ROOT/scripts/debian-kernel.sh" trixie-backports > "$dlog" 2>&1; then
                cat "$dlog"; rm -f "$dlog"
                echo "[bench] FAIL: could not prepare Debian's kernel (above)"; rc=1; continue
            fi
            dkdir=$(tail -1 "$dlog"); rm -f "$dlog"
            # shellcheck disable=SC1091
            . "$dkdir/vballoon-debian.env"
            dmodule=$(bash "$VB_ROOT/scripts/module.sh" --kdir "$dkdir" | tail -1) ||
                { echo "[bench] FAIL: the module build against $VB_DEBIAN_RELEASE failed"; rc=1; continue; }
            args=(--kdir "$dkdir" --module "$dmodule" --kernel "$VB_VMLINUZ"
                  --c-driver "$VB_C_DRIVER" --kernel-modules "$VB_MODULES" --flavor "debian");;
        *) echo "[bench] unknown kernel '$name' in VB_BENCH_KERNELS (debian or project)"; rc=1; continue;;
    esac
    echo "[bench] kernel $k"
    out=$(mktemp)
    VB_BENCH_APPEND="$append" "$VB_ROOT/target/release/qemu-test" bench "${args[@]}" \
        --work "$VB_CACHE/run-bench" "${vhost[@]}" | tee "$out" || rc=$?
    summaries+=("$k: $(sed -n 's/^bench: results in //p' "$out")")
    rm -f "$out"
done
echo "[bench] results (the first is the headline):"
printf '  %s\n' "${summaries[@]}"
echo "[bench] make bench took $(( $(date +%s) - start )) s"
exit $rc
