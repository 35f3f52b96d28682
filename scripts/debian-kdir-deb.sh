#!/usr/bin/env bash
# Package a KDIR made by scripts/debian-kernel.sh as vballoon-kdir-<release>_<kernel
# version>+vb<VERSION>_<arch>.deb (dpkg-deb): the Rust half of Debian's kernel for a system that
# installs vballoon-dkms, at /var/lib/vballoon/kdir/<release> where dkms.conf looks. Its postinst
# has dkms build vballoon for that kernel, if vballoon-dkms is already there.
#   scripts/debian-kdir-deb.sh KDIR       prints the .deb's path on its last line
set -euo pipefail
. "$(dirname "$0")/env.sh"
log() { printf '[kdir-deb] %s\n' "$*" >&2; }
kdir=${1:?KDIR}
# shellcheck disable=SC1091
. "$kdir/vballoon-debian.env"
rel=$VB_DEBIAN_RELEASE
version=$(<"$VB_ROOT/VERSION")
name=vballoon-kdir-$rel
debver=$VB_DEBIAN_PKGVER+vb$version
arch=$(dpkg --print-architecture)
out=$VB_ROOT/build/deb
root=$out/$name
rm -rf "$root"; mkdir -p "$root/DEBIAN" "$root/var/lib/vballoon/kdir"
cp -a "$kdir" "$root/var/lib/vballoon/kdir/$rel"
# The env file names this machine's chroot: not for an installed system.
rm -f "$root/var/lib/vballoon/kdir/$rel/vballoon-debian.env"
cat > "$root/DEBIAN/control" <<CTL
Package: $name
Version: $debver
Architecture: $arch
Section: kernel
Priority: optional
Maintainer: vballoon developers <vballoon@localhost>
Depends: linux-headers-$rel (= $VB_DEBIAN_PKGVER)
Installed-Size: $(du -sk "$root/var" | cut -f1)
Description: Rust build files of Debian's $rel kernel, for vballoon-dkms
 Debian's linux-headers-$rel ships no Rust build files (rust/*.rmeta, the
 proc-macro libraries, scripts/target.json, rust/bindgen_parameters). This
 package holds them, rebuilt from linux-source at $VB_DEBIAN_PKGVER with
 Debian's config and checked against the kernel's Module.symvers, in a complete
 kernel build tree at /var/lib/vballoon/kdir/$rel, which vballoon-dkms builds
 against.
CTL
cat > "$root/DEBIAN/postinst" <<'SH'
#!/bin/sh
set -e
if [ "$1" = configure ] && command -v dkms >/dev/null && dkms status vballoon 2>/dev/null | grep -q .; then
    dkms autoinstall -k RELEASE || echo "vballoon-kdir: dkms could not build vballoon for RELEASE (see above)" >&2
fi
SH
sed -i "s/RELEASE/$rel/g" "$root/DEBIAN/postinst"
chmod 0755 "$root/DEBIAN/postinst"
deb=$out/${name}_${debver}_$arch.deb
dpkg-deb --root-owner-group -Zxz -z1 -b "$root" "$deb" >&2
rm -rf "$root"
log "built $deb ($(du -h "$deb" | cut -f1))"
echo "$deb"
