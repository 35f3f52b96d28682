#!/usr/bin/env bash
# Build vballoon.ko against a kernel build tree (default: the cached guest kernel).
#   scripts/module.sh [--kdir DIR] [--flavor guest|debug] [--clippy]
# Prints the path of the built module on its last line.
set -euo pipefail
. "$(dirname "$0")/env.sh"
kdir=${KDIR:-}; flavor=guest; extra=()
while (($#)); do
    case "$1" in
        --kdir) kdir=$2; shift 2;;
        --flavor) flavor=$2; shift 2;;
        --clippy) extra+=(CLIPPY=1 CLIPPY_DRIVER=/usr/bin/clippy-driver); shift;;
        *) echo "usage: $0 [--kdir DIR] [--flavor guest|debug] [--clippy]" >&2; exit 2;;
    esac
done
[ -n "$kdir" ] || kdir=$(bash "$VB_ROOT/scripts/kernel.sh" "$flavor" | tail -1)
if [ -f "$kdir/vballoon-debian.env" ]; then
    # One of Debian's kernels (scripts/debian-kernel.sh): its gcc and rustc run only in that
    # suite's userland, so the build runs in the project's chroot, on a copy of the sources there.
    . "$kdir/vballoon-debian.env"
    out=$VB_ROOT/build/module-debian-$VB_DEBIAN_RELEASE
    inner=/var/tmp/vballoon-build/$VB_DEBIAN_RELEASE
    # That copy is shared by every checkout, so it starts empty: copied with their own times, an
    # older checkout's sources would look older than the last build's objects and not rebuild.
    rm -rf "${VB_CHROOT:?}$inner"
    mkdir -p "$out" "$VB_CHROOT$inner/rust"
    cp "$VB_ROOT/Kbuild" "$VB_ROOT/VERSION" "$VB_CHROOT$inner/"
    cp -r "$VB_ROOT/rust/." "$VB_CHROOT$inner/rust/"
    echo "[module] building vballoon.ko against Debian's $VB_DEBIAN_RELEASE in $VB_CHROOT" >&2
    in_chroot "$VB_CHROOT" make -C "$VB_CHROOT_KDIR" M="$inner" CC="$VB_KCC" RUSTC=rustc \
        RUSTDOC=rustdoc HOSTRUSTC=rustc BINDGEN=bindgen "${extra[@]}" W=1 modules >&2
    cp "$VB_CHROOT$inner/vballoon.ko" "$VB_CHROOT$inner/vballoon.o" "$out/"
else
    # Build in a copy of the sources per kernel tree, so guest and debug builds never mix objects.
    kmake_vars_for "$kdir"
    out=$VB_ROOT/build/module-$(basename "$kdir")
    mkdir -p "$out"
    mkdir -p "$out/rust"
    cp -p "$VB_ROOT/Kbuild" "$VB_ROOT/VERSION" "$out/"
    cp -rp "$VB_ROOT/rust/." "$out/rust/"
    echo "[module] building vballoon.ko against $kdir" >&2
    make -C "$kdir" M="$out" "${KMAKE_VARS[@]}" "${extra[@]}" W=1 modules >&2
fi
# Debug-assertion kernels add panicking checks on purpose; the rule is for production builds.
if ! grep -q '^CONFIG_RUST_DEBUG_ASSERTIONS=y' "$kdir/.config"; then
    bash "$VB_ROOT/scripts/check-no-panic.sh" "$out/vballoon.o"
fi
echo "$out/vballoon.ko"
