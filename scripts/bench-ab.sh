#!/usr/bin/env bash
# Before/after for one change: `scripts/bench-ab.sh REV_A [REV_B]` builds vballoon at git
# revision REV_A and at REV_B (default: the working tree) against Debian's 7.3.4 (trixie-backports,
# packaged vmlinuz), then runs VB_AB_PAIRS (5) pairs of one-round `qemu-test bench` runs, A and
# B alternating which goes first, each run measuring the C driver beside it. Prints, per figure,
# vballoon's median [min-max] and the vballoon/C ratio's, for A and for B. Knobs as make bench:
# VB_BENCH_HOSTS (qemu here), VB_BENCH_APPEND (init_on_alloc=0 here), VB_BENCH_PARAMS,
# VB_BENCH_GUEST_GIB. Logs in results/ab-<UTC time>/. Never run it beside a build or a test.
set -euo pipefail
. "$(dirname "$0")/env.sh"
rev_a=${1:?usage: bench-ab.sh REV_A [REV_B]}
rev_b=${2:-}
pairs=${VB_AB_PAIRS:-5}
out=$VB_ROOT/results/ab-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
bash "$VB_ROOT/scripts/setup.sh" > "$out/setup.log" 2>&1 || { cat "$out/setup.log"; exit 1; }
kdir=$(bash "$VB_ROOT/scripts/debian-kernel.sh" trixie-backports | tail -1)
# shellcheck disable=SC1091
. "$kdir/vballoon-debian.env"
cd "$VB_ROOT"
cargo build -q --release -p qemu-test -p vhost-balloon
# build NAME REV: vballoon.ko for REV (empty: the working tree) as $out/NAME.ko.
build() {
    local name=$1 rev=$2 src=$VB_ROOT wt=
    if [ -n "$rev" ]; then
        wt=$(mktemp -d)
        git -C "$VB_ROOT" worktree add -q --detach "$wt" "$rev"
        src=$wt
    fi
    local ko
    ko=$(bash "$src/scripts/module.sh" --kdir "$kdir" | tail -1)
    cp "$ko" "$out/$name.ko"
    echo "[ab] $name: ${rev:-working tree} ($(git -C "$src" rev-parse --short HEAD)$([ -n "$rev" ] || git -C "$src" diff --quiet HEAD || echo ', modified'))" | tee -a "$out/revs"
    if [ -n "$wt" ]; then git -C "$VB_ROOT" worktree remove --force "$wt"; fi
}
build A "$rev_a"
build B "$rev_b"
vhost=()
case ",${VB_BENCH_HOSTS:=qemu}," in
    *,vhost-ranges,*) vhost=(--vhost-qemu "$(bash "$VB_ROOT/scripts/qemu.sh" | tail -1)");;
esac
export VB_BENCH_HOSTS VB_BENCH_APPEND=${VB_BENCH_APPEND-init_on_alloc=0} VB_BENCH_ROUNDS=1
for i in $(seq 1 "$pairs"); do
    order="A B"; [ $((i % 2)) = 1 ] || order="B A"
    for m in $order; do
        echo "[ab] pair $i/$pairs: $m"
        "$VB_ROOT/target/release/qemu-test" bench --kdir "$kdir" --module "$out/$m.ko" \
            --kernel "$VB_VMLINUZ" --c-driver "$VB_C_DRIVER" --kernel-modules "$VB_MODULES" \
            --flavor debian --work "$VB_CACHE/run-ab" "${vhost[@]}" > "$out/$i-$m.log" 2>&1 ||
            echo "[ab] pair $i $m: bench exited $? ($out/$i-$m.log)"
    done
done
# The summary's rows: `| figure | unit | host | vballoon | median | min | max | n |` and
# `| figure | host | C | vballoon | ratio | lower/higher |`.
for m in A B; do
    echo "[ab] $m: median [min-max] over $pairs runs"
    cat "$out"/*-"$m".log | awk -F'|' -v m="$m" '
        function trim(s) { gsub(/^ +| +$/, "", s); return s }
        NF == 10 && trim($5) == "vballoon" && trim($6) ~ /^[0-9.]+$/ {
            k = trim($2) " (" trim($4) ", " trim($3) ")"; v[k] = v[k] " " trim($6) }
        NF == 8 && trim($7) ~ /^(lower|higher)$/ && trim($6) ~ /^[0-9.]+$/ {
            k = trim($2) " (" trim($3) ", vballoon/C)"; v[k] = v[k] " " trim($6) }
        END { for (k in v) print k "|" v[k] }' | sort | while IFS='|' read -r k vals; do
        read -ra a <<<"$(tr ' ' '\n' <<<"$vals" | sed '/^$/d' | sort -g | tr '\n' ' ')"
        echo "  $k: ${a[$(( ${#a[@]} / 2 ))]} [${a[0]}-${a[-1]}] (${#a[@]} runs)"
    done
done | tee "$out/summary.txt"
echo "[ab] results in $out"
