#!/usr/bin/env bash
# A real Debian guest: a trixie root filesystem (debootstrap: systemd, udev, kmod,
# initramfs-tools) with Debian's packaged kernel for KDIR's release and its initramfs, and
# vballoon installed the way a Debian user installs it: apt installs the kernel's headers,
# vballoon-kdir-<release> and vballoon-dkms_<VERSION>_all.deb into the image root, and dkms
# builds the module there (on the host, in the image's own trixie userland; nothing is compiled
# inside the emulated guest). `options vballoon floor_mib=128` goes to /etc/modprobe.d, and a
# service gives the test harness a shell on the second serial port.
#   scripts/debian-image.sh KDIR        prints the image directory on its last line:
#     root.img (raw ext4), vmlinuz, initrd.img, image.env, and vmlinuz-norust, initrd-norust.img:
#     trixie's own kernel (no Rust), installed beside it with its headers, for which dkms skips
#     vballoon and the in-tree driver must be the balloon
# Cached under $VB_CACHE/debian/image-<release>, keyed by the packages, this script and the
# vballoon sources that went in.
set -euo pipefail
. "$(dirname "$0")/env.sh"
log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }
kdir=${1:?KDIR}
# shellcheck disable=SC1091
. "$kdir/vballoon-debian.env"
rel=$VB_DEBIAN_RELEASE
[ "$VB_DEBIAN_SUITE" = trixie-backports ] || die "the real guest is a trixie system: give it trixie-backports' kernel (not $VB_DEBIAN_SUITE's)"
OUT=$VB_CACHE/debian/image-$rel
PKGS=systemd,systemd-sysv,udev,kmod,initramfs-tools,procps,util-linux,e2fsprogs
srchash=$( (cd "$VB_ROOT" && cat VERSION Kbuild Makefile dkms.conf debian/* 2>/dev/null; find rust -type f | sort | xargs cat) | sha256sum | cut -c1-16)
key="$rel $VB_DEBIAN_PKGVER $PKGS $(sha256sum "$0" | cut -c1-16) $srchash $(cat "$kdir/.vballoon-kdir" | sha256sum | cut -c1-16)"
if [ -f "$OUT/.vballoon-image" ] && [ "$(cat "$OUT/.vballoon-image")" = "$key" ]; then
    log "cached: $OUT"; echo "$OUT"; exit 0
fi
command -v mkfs.ext4 >/dev/null || PATH=$PATH:/usr/sbin:/sbin
rm -rf "$OUT"; mkdir -p "$OUT"
R=$OUT/root
log "debootstrap trixie with systemd into $R (about 2 min)"
debootstrap --variant=minbase --include="$PKGS" trixie "$R" http://deb.debian.org/debian > "$OUT/debootstrap.log" 2>&1 ||
    { tail -20 "$OUT/debootstrap.log" >&2; die "debootstrap failed"; }
printf '%s\n' 'deb http://deb.debian.org/debian trixie main' 'deb http://deb.debian.org/debian trixie-backports main' > "$R/etc/apt/sources.list"
cp -L /etc/resolv.conf "$R/etc/resolv.conf"
apt_r() { in_chroot "$R" apt-get -q -y -o APT::Sandbox::User=root "$@"; }
apt_r update >/dev/null
log "installing Debian's kernel $rel ($VB_DEBIAN_PKGVER) and its initramfs"
apt_r install -t trixie-backports --no-install-recommends "linux-image-$rel=$VB_DEBIAN_PKGVER" > "$OUT/kernel.log" 2>&1 ||
    { tail -20 "$OUT/kernel.log" >&2; die "installing linux-image-$rel failed"; }
log "installing vballoon with apt: linux-headers-$rel, vballoon-kdir-$rel, vballoon-dkms (dkms builds it)"
deb=$(bash "$VB_ROOT/scripts/deb.sh" 2>>"$OUT/deb.log" | tail -1)
kdeb=$(bash "$VB_ROOT/scripts/debian-kdir-deb.sh" "$kdir" 2>>"$OUT/deb.log" | tail -1)
[ -f "$deb" ] && [ -f "$kdeb" ] || die "building the packages failed ($OUT/deb.log)"
mkdir -p "$R/tmp/vb-pkgs"; cp "$deb" "$kdeb" "$R/tmp/vb-pkgs/"
# Not -t trixie-backports here: that would also take backports' newer rustc (1.97.1), which is
# not the rustc the kernel was built with (trixie's 1.85.1); Kbuild would refuse it, and
# dkms.conf skips the kernel saying so. openssl lets dkms make its MOK key and sign.
apt_r install --no-install-recommends openssl "linux-headers-$rel=$VB_DEBIAN_PKGVER" \
    "/tmp/vb-pkgs/$(basename "$kdeb")" "/tmp/vb-pkgs/$(basename "$deb")" > "$OUT/vballoon.log" 2>&1 ||
    { tail -20 "$OUT/vballoon.log" >&2; die "installing the vballoon packages failed"; }
rm -rf "$R/tmp/vb-pkgs"
# A second kernel vballoon cannot be built for: trixie's own (no CONFIG_RUST), with its headers,
# so dkms tries and skips it; booted, it must get the in-tree driver through the modprobe rule.
log "installing trixie's own kernel (no Rust) and its headers beside it"
apt_r install --no-install-recommends linux-image-amd64/trixie linux-headers-amd64/trixie > "$OUT/norust.log" 2>&1 ||
    { tail -20 "$OUT/norust.log" >&2; die "installing trixie's linux-image-amd64 failed"; }
norust=$(cd "$R/lib/modules" && ls -d [0-9]* | grep -v "^$rel\$" | sort -V | tail -1)
[ -n "$norust" ] || die "no second kernel in the image"
grep -q '^CONFIG_RUST=y' "$R/boot/config-$norust" && die "$norust has CONFIG_RUST=y: not a kernel vballoon cannot build for"
in_chroot "$R" dkms status vballoon -k "$norust" | grep -q installed && die "dkms installed vballoon for $norust, which has no Rust"
log "dkms for $norust: $(grep -i -m1 'vballoon\|exclusive\|skipped' "$OUT/norust.log" || echo 'skipped')"
status=$(in_chroot "$R" dkms status vballoon)
grep -q "$rel, .*: installed" <<<"$status" || { tail -20 "$OUT/vballoon.log" >&2; die "dkms did not install vballoon for $rel: $status"; }
log "dkms: $status"
apt_r clean

# The guest's configuration: a parameter for vballoon, the root filesystem, and the harness's
# shell on ttyS1 (the same line protocol as the test initramfs: VB_READY, then one LEN:COMMAND a line).
echo 'options vballoon floor_mib=128' > "$R/etc/modprobe.d/vballoon-options.conf"
echo 'LABEL=vbroot / ext4 defaults 0 1' > "$R/etc/fstab"
echo vballoon-guest > "$R/etc/hostname"
cat > "$R/usr/local/sbin/vb-shell" <<'EOF'
#!/bin/sh
stty -F /dev/ttyS1 raw -echo
exec </dev/ttyS1 >/dev/ttyS1 2>&1
echo VB_READY
while IFS= read -r line; do
  cmd=${line#*:}
  if [ "${#cmd}" = "${line%%:*}" ]; then
    eval "$cmd" </dev/null
    echo "__VB_END__ $?"
  else
    printf '__VB_GARBLED__ %s\n' "$line"
    echo "__VB_END__ 255"
  fi
done
EOF
chmod 0755 "$R/usr/local/sbin/vb-shell"
cat > "$R/etc/systemd/system/vb-shell.service" <<'EOF'
[Unit]
Description=vballoon test harness shell on ttyS1
After=systemd-udev-settle.service systemd-modules-load.service local-fs.target
Wants=systemd-udev-settle.service

[Service]
ExecStart=/usr/local/sbin/vb-shell
Restart=no

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/vb-shell.service "$R/etc/systemd/system/multi-user.target.wants/vb-shell.service"
# No password prompts on the console; nothing to log in to.
ln -sf /dev/null "$R/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$R/etc/systemd/system/getty@tty1.service"

vmlinuz=$(ls "$R/boot/vmlinuz-$rel" "$R/usr/lib/modules/$rel/vmlinuz" 2>/dev/null | head -1 || true)
initrd=$(ls "$R/boot/initrd.img-$rel" 2>/dev/null | head -1 || true)
[ -n "$vmlinuz" ] && [ -n "$initrd" ] || die "no vmlinuz/initrd.img for $rel in the image (see $OUT/kernel.log)"
cp "$vmlinuz" "$OUT/vmlinuz"; cp "$initrd" "$OUT/initrd.img"
cp "$R/boot/vmlinuz-$norust" "$OUT/vmlinuz-norust"; cp "$R/boot/initrd.img-$norust" "$OUT/initrd-norust.img" ||
    die "no vmlinuz/initrd.img for $norust in the image"
size=$(( $(du -sm "$R" | cut -f1) + 1024 ))
log "mkfs.ext4 -d: ${size} MiB image"
rm -f "$OUT/root.img"
mkfs.ext4 -q -L vbroot -d "$R" "$OUT/root.img" "${size}M" || die "mkfs.ext4 -d failed"
rm -rf "$R"
cat > "$OUT/image.env" <<EOF
VB_IMAGE=$OUT/root.img
VB_IMAGE_KERNEL=$OUT/vmlinuz
VB_IMAGE_INITRD=$OUT/initrd.img
VB_IMAGE_RELEASE=$rel
VB_IMAGE_NORUST_RELEASE=$norust
EOF
echo "$key" > "$OUT/.vballoon-image"
log "ready: $OUT"
echo "$OUT"
