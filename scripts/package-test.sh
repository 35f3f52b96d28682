#!/usr/bin/env bash
# Host-side packaging tests: scripts/install.sh, make install / make uninstall, and dkms.conf
# through Debian's dkms, all against a kernel build tree and sandboxed under a temporary
# directory (nothing is installed into this machine's /lib/modules, /etc or /var/lib/dkms).
#   scripts/package-test.sh [--kdir K] [--module M.ko]
# K defaults to the cached debug kernel (the clang-built kernel make test builds), M to a build
# against K (scripts/module.sh; incremental when make test has built it already). Prints "PASS name", "FAIL name: reason" or
# "SKIP name: reason" per test; exits 1 if any failed.
set -uo pipefail
. "$(dirname "$0")/env.sh"
PATH=$PATH:/usr/sbin:/sbin

kdir=${KDIR:-}; module=
while (($#)); do
    case "$1" in
        --kdir) kdir=$2; shift 2;;
        --module) module=$2; shift 2;;
        *) echo "usage: $0 [--kdir K] [--module M.ko]" >&2; exit 2;;
    esac
done

failed=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failed=1; }
skip() { echo "SKIP $1: $2"; }
info() { echo "[package] $*"; }
t0=$(date +%s)
took() { echo "[package] $1 took $(( $(date +%s) - $2 )) s"; }

[ -n "$kdir" ] || kdir=$(bash "$VB_ROOT/scripts/kernel.sh" debug | tail -1) || { fail setup "no debug kernel"; exit 1; }
release=$(cat "$kdir/include/config/kernel.release" 2>/dev/null) || { fail setup "$kdir is not a built kernel tree"; exit 1; }
version=$(<"$VB_ROOT/VERSION")
if [ -z "$module" ]; then
    t=$(date +%s)
    module=$(bash "$VB_ROOT/scripts/module.sh" --kdir "$kdir" 2>/dev/null | tail -1)
    [ -f "$module" ] || { fail setup "module build against $kdir failed (bash scripts/module.sh --kdir $kdir)"; exit 1; }
    took "module build" "$t"
fi
tmp=$(mktemp -d /tmp/vballoon-package.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# The checks every installed vballoon.ko must pass: prints the first problem, or nothing.
check_modinfo() {
    local ko=$1 out p
    out=$(modinfo "$ko" 2>&1) || { echo "modinfo $ko failed: $out"; return; }
    grep -qxE "version: +$version" <<<"$out" || { echo "modinfo version is not $version ($(modinfo -F version "$ko"))"; return; }
    grep -qxE 'alias: +virtio:d00000005v\*' <<<"$out" || { echo "no alias virtio:d00000005v*"; return; }
    grep -qxE 'license: +GPL' <<<"$out" || { echo "license is not GPL"; return; }
    for p in floor_mib block_kib host_timeout_ms; do
        # parm: NAME:DESCRIPTION (TYPE)
        grep -qE "^parm: +$p:[^ (].* \([a-z0-9]+\)$" <<<"$out" || { echo "no parm line with a description for $p"; return; }
    done
    [ "$(grep -c '^parm:' <<<"$out")" = 3 ] || { echo "expected 3 parm lines, got $(grep -c '^parm:' <<<"$out")"; return; }
    [ "$(modinfo -F vermagic "$ko" | awk '{print $1}')" = "$release" ] || echo "vermagic is not $release"
}
# What an install under DESTDIR D must hold: prints the first problem, or nothing.
check_installed() {
    local d=$1 ko=$1/lib/modules/$release/extra/vballoon.ko conf=$1/etc/modprobe.d/vballoon.conf
    [ -f "$ko" ] || { echo "$ko missing"; return; }
    cmp -s "$ko" "$module" || [ -n "${2:-}" ] || { echo "$ko differs from $module"; return; }
    grep -qxF 'alias virtio:d00000005v* vballoon' "$d/lib/modules/$release/modules.alias" 2>/dev/null ||
        { echo "modules.alias has no vballoon alias line (depmod not run?)"; return; }
    grep -qxF 'extra/vballoon.ko:' "$d/lib/modules/$release/modules.dep" 2>/dev/null ||
        { echo "modules.dep does not list extra/vballoon.ko"; return; }
    [ -f "$conf" ] || { echo "$conf missing"; return; }
    grep -qxF 'blacklist virtio_balloon' "$conf" || { echo "$conf does not blacklist virtio_balloon"; return; }
    grep -q 'virtio:d00000005v' "$conf" || { echo "$conf does not say why (the shared modalias)"; return; }
    check_modinfo "$ko"
}
# Whatever is left under D after an uninstall (nothing of ours may be).
leftovers() { find "$1" -mindepth 1 2>/dev/null | sed "s|^$1||" | head -5 | tr '\n' ' '; }

# (a) scripts/install.sh into a DESTDIR with a built module, twice (idempotent), then --uninstall.
t=$(date +%s)
d=$tmp/a
if ! out=$(bash "$VB_ROOT/scripts/install.sh" --kdir "$kdir" --destdir "$d" --module "$module" 2>&1); then
    fail install "install.sh exited non-zero: $(tail -3 <<<"$out" | tr '\n' ' ')"
elif ! out=$(bash "$VB_ROOT/scripts/install.sh" --kdir "$kdir" --destdir "$d" --module "$module" 2>&1); then
    fail install "a second install.sh (idempotent) exited non-zero: $(tail -3 <<<"$out" | tr '\n' ' ')"
elif p=$(check_installed "$d"); [ -n "$p" ]; then
    fail install "$p"
else
    pass install
fi
if ! out=$(bash "$VB_ROOT/scripts/install.sh" --kdir "$kdir" --destdir "$d" --uninstall 2>&1); then
    fail uninstall "install.sh --uninstall exited non-zero: $(tail -3 <<<"$out" | tr '\n' ' ')"
elif [ -n "$(leftovers "$d")" ]; then
    fail uninstall "left behind: $(leftovers "$d")"
elif ! bash "$VB_ROOT/scripts/install.sh" --kdir "$kdir" --destdir "$d" --uninstall >/dev/null 2>&1; then
    fail uninstall "a second --uninstall (nothing installed) exited non-zero"
else
    pass uninstall
fi
# Beside another module, uninstall keeps the index (depmod again) and what is not ours.
mkdir -p "$d/lib/modules/$release/kernel"
cp "$module" "$d/lib/modules/$release/kernel/other.ko"
if ! bash "$VB_ROOT/scripts/install.sh" --kdir "$kdir" --destdir "$d" --module "$module" >/dev/null 2>&1 ||
   ! bash "$VB_ROOT/scripts/install.sh" --kdir "$kdir" --destdir "$d" --uninstall >/dev/null 2>&1; then
    fail uninstall_beside_others "install.sh failed with another module present"
elif [ ! -f "$d/lib/modules/$release/kernel/other.ko" ] || [ -e "$d/lib/modules/$release/extra" ] ||
     [ -e "$d/etc/modprobe.d/vballoon.conf" ]; then
    fail uninstall_beside_others "removed the wrong things: $(leftovers "$d")"
elif ! grep -qxF 'kernel/other.ko:' "$d/lib/modules/$release/modules.dep" ||
     grep -q 'extra/vballoon' "$d/lib/modules/$release/modules.dep"; then
    fail uninstall_beside_others "modules.dep not regenerated after the uninstall"
else
    pass uninstall_beside_others
fi
# A module built for another release is refused.
sed 's/^/x/' "$kdir/include/config/kernel.release" > "$tmp/release"
mkdir -p "$tmp/otherk/include/config"; cp "$tmp/release" "$tmp/otherk/include/config/kernel.release"
if bash "$VB_ROOT/scripts/install.sh" --kdir "$tmp/otherk" --destdir "$tmp/wrong" --module "$module" >/dev/null 2>&1 ||
   [ -e "$tmp/wrong/lib/modules/x$release/extra/vballoon.ko" ]; then
    fail install_wrong_release "a module built for $release was installed for x$release"
else
    pass install_wrong_release
fi
took "install.sh tests" "$t"

# (b) the front door: make install / make uninstall with DESTDIR= and KDIR= (builds the module
# through scripts/module.sh: incremental here).
t=$(date +%s)
d=$tmp/b
if ! out=$(make -s -C "$VB_ROOT" install DESTDIR="$d" KDIR="$kdir" 2>&1); then
    fail make_install "make install exited non-zero: $(tail -3 <<<"$out" | tr '\n' ' ')"
elif p=$(check_installed "$d" rebuilt); [ -n "$p" ]; then
    fail make_install "$p"
elif ! out=$(make -s -C "$VB_ROOT" uninstall DESTDIR="$d" KDIR="$kdir" 2>&1); then
    fail make_install "make uninstall exited non-zero: $(tail -3 <<<"$out" | tr '\n' ' ')"
elif [ -n "$(leftovers "$d")" ]; then
    fail make_install "make uninstall left behind: $(leftovers "$d")"
else
    pass make_install
fi
took "make install/uninstall" "$t"

# (c) dkms.conf through Debian's dkms: add, build, install, status, remove, with dkms's trees in
# the sandbox and --no-depmod (depmod -b runs on the sandbox instead).
t=$(date +%s)
conf_version=$(sed -n 's/^PACKAGE_VERSION="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$VB_ROOT/dkms.conf")
if [ "$conf_version" = "$version" ]; then
    pass dkms_conf_version
else
    fail dkms_conf_version "dkms.conf PACKAGE_VERSION is '$conf_version', VERSION is '$version'"
fi
if ! command -v dkms >/dev/null; then
    skip dkms "no dkms (Debian package dkms; scripts/setup.sh installs it)"
elif [ "$(id -u)" != 0 ]; then
    skip dkms "dkms add needs root"
else
    c=$tmp/c
    src=$c/src/vballoon-$version
    mkdir -p "$src" "$c/dkms" "$c/root/lib/modules/$release"
    cp -r "$VB_ROOT/dkms.conf" "$VB_ROOT/Makefile" "$VB_ROOT/Kbuild" "$VB_ROOT/VERSION" "$VB_ROOT/rust" "$src/"
    dk=(--dkmstree "$c/dkms" --sourcetree "$c/src" --installtree "$c/root/lib/modules"
        --kernelsourcedir "$kdir" -k "$release" --no-depmod)
    log=$c/dkms.log
    if ! dkms add "vballoon/$version" "${dk[@]}" >>"$log" 2>&1; then
        fail dkms "dkms add failed: $(tail -3 "$log" | tr '\n' ' ')"
    elif ! dkms build "vballoon/$version" "${dk[@]}" >>"$log" 2>&1; then
        tail -20 "$c/dkms/vballoon/$version/build/make.log" 2>/dev/null
        fail dkms "dkms build failed: $(tail -3 "$log" | tr '\n' ' ')"
    elif ! dkms install "vballoon/$version" "${dk[@]}" >>"$log" 2>&1; then
        fail dkms "dkms install failed: $(tail -3 "$log" | tr '\n' ' ')"
    else
        status=$(dkms status "vballoon/$version" "${dk[@]}" 2>&1)
        ko=$(find "$c/root/lib/modules/$release" -name vballoon.ko | head -1)
        [ -z "$ko" ] || info "dkms: $status; ${ko#"$c/root"}, modinfo version $(modinfo -F version "$ko")"
        if ! grep -qE "^vballoon/$version, $release, [^:]+: installed" <<<"$status"; then
            fail dkms "dkms status says: $status"
        elif [ -z "$ko" ]; then
            fail dkms "no vballoon.ko under the install tree after dkms install"
        elif p=$(check_modinfo "$ko"); [ -n "$p" ]; then
            fail dkms "the module dkms built: $p"
        elif ! depmod -b "$c/root" "$release" 2>/dev/null ||
             ! grep -qxF 'alias virtio:d00000005v* vballoon' "$c/root/lib/modules/$release/modules.alias"; then
            fail dkms "depmod of the dkms install has no vballoon alias"
        elif ! dkms remove "vballoon/$version" "${dk[@]}" >>"$log" 2>&1; then
            fail dkms "dkms remove failed: $(tail -3 "$log" | tr '\n' ' ')"
        elif [ -n "$(find "$c/root/lib/modules/$release" -name 'vballoon.ko*')" ] ||
             [ -n "$(dkms status --dkmstree "$c/dkms" 2>&1)" ] || [ -e "$c/dkms/vballoon" ]; then
            fail dkms "after dkms remove, left: $(dkms status --dkmstree "$c/dkms" 2>&1) $(find "$c/root" "$c/dkms" -name 'vballoon*' | head -3 | tr '\n' ' ')"
        else
            pass dkms
        fi
    fi
fi
took "dkms" "$t"
took "package tests" "$t0"
exit $failed
