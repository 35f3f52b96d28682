#!/usr/bin/env bash
# Build the project's own QEMU for the hostile-host scenarios, cached.
#
#   scripts/qemu.sh     prints the path of qemu-system-x86_64 on its last line
#
# Stock QEMU marks the generic `vhost-user-device-pci` as not user-creatable; QEMU's own
# documentation (docs/system/devices/vhost-user.rst) says to drop `dc->user_creatable = false;`
# and rebuild, which is all this does: same version as Debian's qemu-system-x86 (its source
# tarball from bookworm-backports), x86_64 only, TCG + KVM + vhost-user. Every other scenario keeps
# using Debian's QEMU. Firmware comes from Debian's packages (-L /usr/share/seabios -L
# /usr/share/qemu). About 5.5 minutes on 2 cores from clean.
set -euo pipefail
. "$(dirname "$0")/env.sh"
log() { printf '[qemu] %s\n' "$*" >&2; }

# The version Debian ships in bookworm-backports; the build follows the installed package.
QVER=$(dpkg-query -W -f='${Version}' qemu-system-x86)
UPSTREAM=${QVER#*:}; UPSTREAM=${UPSTREAM%%-*}          # 10.0.2+ds
MESON_WHEEL=meson==1.5.0
PYCOTAP_WHEEL=pycotap==1.3.1
KEY_EPOCH=1
key=$( { echo "$QVER $KEY_EPOCH $MESON_WHEEL $PYCOTAP_WHEEL"; cat "$0"; gcc --version | head -1; } |
       sha256sum | cut -c1-16)
OUT=$VB_CACHE/qemu/$UPSTREAM-$key
BIN=$OUT/build/qemu-system-x86_64
if [ -f "$OUT/.vb-complete" ] && [ -x "$BIN" ]; then
    log "cached vhost-user QEMU: $BIN"
    echo "$BIN"; exit 0
fi
for old in "$VB_CACHE/qemu/"*; do [ -e "$old" ] && [ "$old" != "$OUT" ] && [ -d "$old" ] && [ "$old" != "$VB_CACHE/qemu/dl" ] && rm -rf "$old"; done

# Source: the orig tarball of the installed version, through a private deb-src list (the
# machine's own sources are not touched).
DL=$VB_CACHE/qemu/dl
APT=$DL/apt
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial"
aptopts=(-o Dir::Etc::SourceList=$APT/sources.list -o Dir::Etc::SourceParts=/dev/null
         -o Dir::State::Lists=$APT/lists -o Dir::Cache=$APT/cache -o APT::Get::List-Cleanup=0
         -o APT::Sandbox::User=root)
orig=$DL/qemu_${UPSTREAM}.orig.tar.xz
if [ ! -s "$orig" ]; then
    echo 'deb-src http://deb.debian.org/debian bookworm-backports main' > "$APT/sources.list"
    log "apt-get update (private bookworm-backports deb-src list)"
    apt-get "${aptopts[@]}" update -q >&2
    log "downloading qemu $QVER source"
    # The .dsc / debian tarball may not be served; only the orig tarball is needed.
    (cd "$DL" && apt-get "${aptopts[@]}" source --download-only "qemu=$QVER" >&2) || true
    [ -s "$orig" ] || { log "ERROR: $orig was not downloaded"; exit 1; }
fi
wheels=$DL/wheels
if ! ls "$wheels"/meson-*.whl "$wheels"/pycotap-*.whl >/dev/null 2>&1; then
    log "downloading $MESON_WHEEL and $PYCOTAP_WHEEL wheels from PyPI"
    mkdir -p "$wheels"
    python3 -m pip download -q --no-deps -d "$wheels" "$MESON_WHEEL" "$PYCOTAP_WHEEL" >&2
fi

log "building QEMU $UPSTREAM with vhost-user-device-pci user-creatable into $OUT"
start=$(date +%s)
rm -rf "$OUT"; mkdir -p "$OUT"
tar -xf "$orig" -C "$OUT" --strip-components=1
cd "$OUT"
cp "$wheels"/*.whl python/wheels/
# The one change: let -device create the generic vhost-user device (virtio-id, num_vqs, config_size).
for f in hw/virtio/vhost-user-device.c hw/virtio/vhost-user-device-pci.c; do
    grep -q 'dc->user_creatable = false;' "$f" || { log "ERROR: $f no longer has user_creatable = false"; exit 1; }
    sed -i 's/^\(\s*\)dc->user_creatable = false;/\1\/* vballoon: user-creatable *\//' "$f"
done
# The +ds tarball has no firmware blobs: do not try to unpack the EDK2 ones.
sed -i "s/^\(\s*\)unpack_edk2_blobs = bzip2.found()/\1unpack_edk2_blobs = false/" meson.build
grep -q "unpack_edk2_blobs = bzip2.found()" meson.build && { log "ERROR: could not switch off the EDK2 blobs"; exit 1; }
./configure --target-list=x86_64-softmmu --disable-docs --disable-werror \
    --without-default-features --enable-tcg --enable-vhost-user --enable-kvm \
    --enable-fdt=system --disable-install-blobs >"$OUT/configure.log" 2>&1 ||
    { tail -30 "$OUT/configure.log" >&2; exit 1; }
ninja -C build qemu-system-x86_64 >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log" >&2; exit 1; }
"$BIN" -device help 2>/dev/null | grep -q '"vhost-user-device-pci"' ||
    { log "ERROR: the build does not list vhost-user-device-pci"; exit 1; }
# Keep the binary and what it loads at run time (keymaps, pc-bios descriptors); drop the rest.
find build -name '*.o' -delete
touch "$OUT/.vb-complete"
log "built in $(( $(date +%s) - start )) s: $("$BIN" --version | head -1)"
echo "$BIN"
