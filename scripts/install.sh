#!/usr/bin/env bash
# Install vballoon.ko for one kernel, or remove exactly what an install put there.
#   scripts/install.sh [--kdir K] [--destdir D] [--module M.ko] [--uninstall]
# (make install / make uninstall, honouring KDIR= and DESTDIR=, call this.)
#
# K is the kernel build tree the module is for (default: KDIR, else /lib/modules/$(uname -r)/build);
# its include/config/kernel.release names the release. Install puts
#   D/lib/modules/<release>/extra/vballoon.ko
#   D/etc/modprobe.d/vballoon.conf      (blacklists the in-tree virtio_balloon)
# and runs depmod for that release (depmod -b D <release> with a DESTDIR). Without --module the
# module is built first against K (scripts/module.sh). Both directions are idempotent.
# --uninstall removes the module, the modprobe.d file and extra/ if it is left empty, then runs
# depmod again. With a DESTDIR, when vballoon was the only thing in that release's directory,
# the module index depmod wrote there (an index of nothing now) and the directories the install
# created are removed too, so a staging root is left as it was.
set -euo pipefail
. "$(dirname "$0")/env.sh"

die() { echo "install.sh: $*" >&2; exit 1; }
log() { echo "[install] $*" >&2; }
usage() { echo "usage: $0 [--kdir K] [--destdir D] [--module M.ko] [--uninstall]" >&2; exit 2; }

kdir=${KDIR:-}; destdir=${DESTDIR:-}; module=; uninstall=0
while (($#)); do
    case "$1" in
        --kdir) (($# >= 2)) || usage; kdir=$2; shift 2;;
        --destdir) (($# >= 2)) || usage; destdir=$2; shift 2;;
        --module) (($# >= 2)) || usage; module=$2; shift 2;;
        --uninstall) uninstall=1; shift;;
        -h|--help) usage;;
        *) echo "install.sh: unknown argument '$1'" >&2; usage;;
    esac
done

if [ -z "$kdir" ]; then
    kdir=/lib/modules/$(uname -r)/build
    [ -d "$kdir" ] || die "no kernel build tree at $kdir (the running kernel's); pass KDIR=<build tree> (make install KDIR=...) or --kdir: a module built for another kernel must not be installed for this one"
fi
[ -d "$kdir" ] || die "kernel build tree $kdir does not exist"
kdir=$(cd "$kdir" && pwd)
[ -s "$kdir/include/config/kernel.release" ] ||
    die "$kdir/include/config/kernel.release is missing: not a built kernel tree (run its make first)"
release=$(<"$kdir/include/config/kernel.release")
[ -n "$release" ] && [[ "$release" != */* ]] || die "bad kernel release '$release' in $kdir"

if [ -n "$destdir" ]; then
    destdir=$(realpath -m "$destdir")
    [ "$destdir" != / ] || destdir=
fi
if ((uninstall)) && [ -n "$destdir" ] && [ ! -d "$destdir" ]; then
    log "$destdir does not exist: nothing to uninstall"; exit 0
fi
moddir=$destdir/lib/modules/$release
target=$moddir/extra/vballoon.ko
conf=$destdir/etc/modprobe.d/vballoon.conf

run_depmod() {
    command -v depmod >/dev/null || PATH=$PATH:/usr/sbin:/sbin
    command -v depmod >/dev/null || die "depmod not found (Debian package kmod)"
    if [ -n "$destdir" ]; then
        log "depmod -b $destdir $release"
        # A staging root usually holds no kernel of its own: depmod's warnings about the
        # kernel's missing modules.order / modules.builtin* say only that.
        local err rc=0
        err=$(depmod -b "$destdir" "$release" 2>&1) || rc=$?
        [ -z "$err" ] || grep -vE '^depmod: WARNING: could not open modules\.(order|builtin|builtin\.modinfo) at ' <<<"$err" >&2 || true
        ((rc == 0)) || die "depmod -b $destdir $release failed (exit $rc)"
    else
        log "depmod $release"
        depmod "$release"
    fi
}

if ((uninstall)); then
    removed=0
    for f in "$target" "$conf"; do
        if [ -e "$f" ] || [ -L "$f" ]; then rm -f "$f"; log "removed $f"; removed=1; fi
    done
    [ -d "$moddir/extra" ] && rmdir "$moddir/extra" 2>/dev/null && log "removed $moddir/extra/"
    if [ ! -d "$moddir" ]; then
        ((removed)) || log "vballoon is not installed for $release${destdir:+ under $destdir}"
        exit 0
    fi
    if [ -n "$destdir" ] && [ -z "$(find "$moddir" -mindepth 1 ! -name 'modules.*' -print -quit)" ]; then
        # Only depmod's index is left in a staging root: it was ours (an index of vballoon alone).
        rm -f "$moddir"/modules.*
        for d in "$moddir" "$destdir/lib/modules" "$destdir/lib" "$destdir/etc/modprobe.d" "$destdir/etc"; do
            [ -d "$d" ] && rmdir "$d" 2>/dev/null || true
        done
        log "removed the module index of $release under $destdir (nothing else was installed there)"
    else
        run_depmod
    fi
    log "vballoon uninstalled for $release${destdir:+ under $destdir}"
    exit 0
fi

if [ -z "$module" ]; then
    log "building vballoon.ko against $kdir"
    module=$(bash "$VB_ROOT/scripts/module.sh" --kdir "$kdir" | tail -1) || die "module build against $kdir failed"
fi
[ -f "$module" ] || die "module $module does not exist"
command -v modinfo >/dev/null || PATH=$PATH:/usr/sbin:/sbin
command -v modinfo >/dev/null || die "modinfo not found (Debian package kmod)"
name=$(modinfo -F name "$module" 2>/dev/null) || die "$module is not a kernel module"
[ "$name" = vballoon ] || die "$module is module '$name', not vballoon"
# The first word of vermagic is the release the module was built for; loading it into another
# fails, so installing it under another release's directory would only hide the mistake.
built_for=$(modinfo -F vermagic "$module" | awk '{print $1}')
[ "$built_for" = "$release" ] ||
    die "$module was built for kernel $built_for, but $kdir is $release: build it against that tree (omit --module)"

if [ -n "$destdir" ]; then
    mkdir -p "$moddir"
elif [ ! -d "$moddir" ]; then
    die "$moddir does not exist: kernel $release is not installed on this machine (set DESTDIR= to stage an install elsewhere)"
fi
[ -w "$(dirname "$moddir")" ] || [ -w "$moddir" ] || die "cannot write to $moddir: run as root, or set DESTDIR="

install -D -m 0644 "$module" "$target"
version=$(modinfo -F version "$module" 2>/dev/null || true)
log "installed $target (version ${version:-unknown})"
mkdir -p "$(dirname "$conf")"
tmp=$(mktemp "$conf.XXXXXX")
cat > "$tmp" <<'EOF'
# Installed by vballoon (scripts/install.sh; removed by its --uninstall / make uninstall).
# vballoon.ko and the in-tree virtio_balloon carry the same modalias (virtio:d00000005v*), so
# whichever loads first would bind the balloon device; keep the in-tree driver from loading
# automatically so the balloon device goes to vballoon.
blacklist virtio_balloon
EOF
chmod 0644 "$tmp"
mv -f "$tmp" "$conf"
log "installed $conf"
run_depmod
if grep -q '^CONFIG_VIRTIO_BALLOON=y' "$kdir/.config" 2>/dev/null; then
    log "warning: this kernel has the in-tree virtio_balloon built in (CONFIG_VIRTIO_BALLOON=y): the blacklist cannot stop it; boot with initcall_blacklist=virtio_balloon_driver_init"
fi
log "vballoon installed for $release${destdir:+ under $destdir}"
