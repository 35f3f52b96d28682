#!/usr/bin/env bash
# The Debian packages as a Debian system meets them: vballoon-dkms (scripts/deb.sh,
# dpkg-buildpackage + dh-dkms) and the Rust half of the kernel (scripts/debian-kdir-deb.sh),
# installed with apt in the kernel's chroot (a trixie system with the kernel's headers).
# One "PASS name" / "FAIL name: reason" line each.
#   scripts/debian-package-test.sh KDIR
# - package_built: both .debs build.
# - package_install: `apt install` of both: dkms builds and installs vballoon for the kernel
#   (dkms status "installed", vermagic the kernel's), the modprobe rule is in /usr/lib/modprobe.d.
# - package_remove: `apt remove vballoon-dkms`: no vballoon.ko, no modprobe rule, no dkms entry.
# - package_no_rust_half: without the Rust half, `apt install vballoon-dkms` succeeds, says why
#   vballoon is not built, installs no module, and the modprobe rule falls back to the in-tree
#   driver (modprobe resolves it to virtio_balloon).
# - package_purge: `apt purge vballoon-dkms`: nothing of it left under /etc, /usr or /var/lib/dkms.
set -uo pipefail
. "$(dirname "$0")/env.sh"
kdir=${1:?KDIR}
# shellcheck disable=SC1091
. "$kdir/vballoon-debian.env"
rel=$VB_DEBIAN_RELEASE; CH=$VB_CHROOT
version=$(<"$VB_ROOT/VERSION")
failed=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failed=1; }
info() { echo "[package] $*"; }
apt_ch() { in_chroot "$CH" apt-get -q -y -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root "$@"; }

deb=$(bash "$VB_ROOT/scripts/deb.sh" 2>"$VB_ROOT/build/deb.log" | tail -1)
kdeb=$(bash "$VB_ROOT/scripts/debian-kdir-deb.sh" "$kdir" 2>>"$VB_ROOT/build/deb.log" | tail -1)
if [ ! -f "$deb" ] || [ ! -f "$kdeb" ]; then
    fail package_built "$(tail -5 "$VB_ROOT/build/deb.log" | tr '\n' ' ')"; exit 1
fi
pass package_built
info "$(basename "$deb") ($(du -h "$deb" | cut -f1)), $(basename "$kdeb") ($(du -h "$kdeb" | cut -f1))"
kpkg=vballoon-kdir-$rel
mkdir -p "$CH/tmp/vb-pkgs"; cp "$deb" "$kdeb" "$CH/tmp/vb-pkgs/"
d=/tmp/vb-pkgs/$(basename "$deb"); kd=/tmp/vb-pkgs/$(basename "$kdeb")

# The project's own KDIR in the chroot is the same path the package installs: set it aside so
# the package's files are what is tested, and bring it back whatever happens.
aside=$CH/var/lib/vballoon/kdir.aside-$$
mv "$kdir" "$aside"
# (apt purge of the kdir package removes the then-empty parent directory too.)
restore() { rm -rf "$kdir"; mkdir -p "$(dirname "$kdir")"; mv "$aside" "$kdir"; rm -rf "$CH/tmp/vb-pkgs"; }
trap restore EXIT
command -v dkms >/dev/null
in_chroot "$CH" sh -c 'command -v dkms' >/dev/null ||
    apt_ch install --no-install-recommends dkms >/dev/null 2>&1
apt_ch purge vballoon-dkms "$kpkg" >/dev/null 2>&1
ko_of() { ls "$CH/lib/modules/$rel"/updates/dkms/vballoon.ko* 2>/dev/null | head -1; }
conf=$CH/usr/lib/modprobe.d/vballoon.conf

out=$(apt_ch install --no-install-recommends "$kd" "$d" 2>&1); rc=$?
status=$(in_chroot "$CH" dkms status vballoon 2>&1); ko=$(ko_of)
if [ $rc != 0 ]; then
    fail package_install "apt install exit $rc: $(tail -5 <<<"$out" | tr '\n' ' ')"
elif ! grep -q "vballoon/$version, $rel, [a-z0-9_]*: installed" <<<"$status"; then
    fail package_install "dkms status: $status; $(grep -i 'error\|vballoon:' <<<"$out" | head -3 | tr '\n' ' ')"
elif [ -z "$ko" ] || [ "$(modinfo -F vermagic "$ko" | awk '{print $1}')" != "$rel" ]; then
    fail package_install "no vballoon.ko with vermagic $rel under /lib/modules/$rel/updates/dkms"
elif [ ! -f "$conf" ]; then
    fail package_install "no /usr/lib/modprobe.d/vballoon.conf"
else
    pass package_install
    info "apt install: $status; ${ko#"$CH"}, vermagic $(modinfo -F vermagic "$ko")"
fi

out=$(apt_ch remove vballoon-dkms 2>&1); rc=$?
status=$(in_chroot "$CH" dkms status vballoon 2>&1)
if [ $rc != 0 ]; then
    fail package_remove "apt remove exit $rc: $(tail -3 <<<"$out" | tr '\n' ' ')"
elif [ -n "$(ko_of)" ] || [ -e "$conf" ] || [ -n "$status" ]; then
    fail package_remove "left behind: module '$(ko_of)', rule $(ls "$conf" 2>/dev/null), dkms '$status'"
else
    pass package_remove
fi

apt_ch remove "$kpkg" >/dev/null 2>&1
out=$(apt_ch install --no-install-recommends "$d" 2>&1); rc=$?
status=$(in_chroot "$CH" dkms status vballoon 2>&1)
resolved=$(in_chroot "$CH" modprobe -S "$rel" --show-depends virtio_balloon 2>&1)
if [ $rc != 0 ]; then
    fail package_no_rust_half "apt install without the Rust half failed (exit $rc): $(tail -5 <<<"$out" | tr '\n' ' ')"
elif ! grep -q "vballoon: not built for $rel: its headers have no Rust build files" <<<"$out"; then
    fail package_no_rust_half "no reason printed: $(tail -5 <<<"$out" | tr '\n' ' ')"
elif grep -q 'installed' <<<"$status" || [ -n "$(ko_of)" ]; then
    fail package_no_rust_half "vballoon was installed for $rel: $status"
elif ! grep -q "install /sbin/modprobe --ignore-install vballoon .*|| /sbin/modprobe --ignore-install virtio_balloon" <<<"$resolved"; then
    fail package_no_rust_half "modprobe does not fall back to virtio_balloon: $resolved"
else
    pass package_no_rust_half
    info "without the Rust half: $(grep -m1 -o 'vballoon: not built for.*' <<<"$out" | cut -c1-160)..."
fi

out=$(apt_ch purge vballoon-dkms 2>&1); rc=$?
left=$(cd "$CH" && ls -d etc/modprobe.d/vballoon* usr/lib/modprobe.d/vballoon* var/lib/dkms/vballoon usr/src/vballoon-* 2>/dev/null)
if [ $rc != 0 ]; then
    fail package_purge "apt purge exit $rc: $(tail -3 <<<"$out" | tr '\n' ' ')"
elif [ -n "$left" ] || in_chroot "$CH" dpkg -l vballoon-dkms 2>/dev/null | grep -q '^[ir]'; then
    fail package_purge "left behind: $left $(in_chroot "$CH" dpkg -l vballoon-dkms 2>/dev/null | tail -1)"
else
    pass package_purge
fi
exit $failed
