#!/usr/bin/env bash
# One of Debian's own Rust-enabled kernels, made buildable for vballoon: its headers package plus
# the Rust half that package lacks (rust/*.rmeta, the proc-macro libraries, scripts/target.json,
# rust/bindgen_parameters), rebuilt by `modules_prepare` from the same-version linux-source with
# Debian's .config, in that suite's own userland (a debootstrap chroot of the project's: the
# kernel's gcc and rustc run only there), and checked against the headers' Module.symvers.
#
#   scripts/debian-kernel.sh SUITE | --release REL
#     SUITE   trixie-backports or sid: the newest Rust-enabled <ver>+debNN-amd64 kernel there,
#             resolved at run time (the archive keeps only each suite's current version)
#     REL     a kernel release, e.g. 7.3.4+deb13-amd64 (+deb13: trixie and its backports;
#             +deb14: sid)
#
# Prints the KDIR on its last line. The KDIR is the chroot's /var/lib/vballoon/kdir/<release>,
# the same path an installed system uses (README, "Debian's kernels"), and holds
# vballoon-debian.env: the chroot, the kernel's compiler, and where the packaged vmlinuz and
# Debian's own virtio_balloon.ko were unpacked (for the boot tests). scripts/module.sh builds in
# the chroot when it sees that file. Everything is cached under $VB_CACHE/debian, keyed by what
# went into it; the machine's own apt sources are never touched.
set -euo pipefail
. "$(dirname "$0")/env.sh"
log() { printf '[debian] %s\n' "$*" >&2; }
die() { printf '[debian] ERROR: %s\n' "$*" >&2; exit 1; }

suite=; release=
case "${1:-}" in
    --release) release=${2:?--release needs a kernel release}
               case $release in
                   *+deb13-*) suite=trixie-backports;;
                   *+deb14-*) suite=sid;;
                   *) die "cannot tell the Debian suite of kernel release '$release' (expected ...+deb13-amd64 or ...+deb14-amd64)";;
               esac;;
    trixie-backports|sid) suite=$1;;
    *) echo "usage: $0 trixie-backports|sid | --release REL" >&2; exit 2;;
esac
case $suite in
    trixie-backports) base=trixie
        sources="deb http://deb.debian.org/debian trixie main
deb http://deb.debian.org/debian trixie-backports main";;
    sid) base=sid
        sources="deb http://deb.debian.org/debian sid main";;
esac

DEB=$VB_CACHE/debian
CH=$DEB/chroot-$base
# What the chroot holds: the build tools of that suite (its own rustc, rust-src and bindgen; the
# kernel's gcc is added per kernel below). Changing this list or CHROOT_REV makes a new chroot.
CHROOT_REV=1
CHROOT_PKGS=make,gcc,flex,bison,bc,libelf-dev,libssl-dev,python3,xz-utils,cpio,kmod,rustc,rust-src,bindgen,libclang-dev,dwarves,rust-clippy
chroot_key="$base $CHROOT_REV $CHROOT_PKGS"

make_chroot() {
    if [ -f "$CH/.vballoon-chroot" ] && [ "$(cat "$CH/.vballoon-chroot")" = "$chroot_key" ]; then
        return
    fi
    command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/setup.sh installs it)"
    log "making a $base chroot with debootstrap (about 2-4 min): $CH"
    rm -rf "$CH" "$CH.tmp"; mkdir -p "$DEB"
    debootstrap --variant=minbase --include="$CHROOT_PKGS" "$base" "$CH.tmp" \
        http://deb.debian.org/debian > "$DEB/debootstrap-$base.log" 2>&1 ||
        { tail -20 "$DEB/debootstrap-$base.log" >&2; die "debootstrap $base failed (log: $DEB/debootstrap-$base.log)"; }
    mv "$CH.tmp" "$CH"
    echo "$chroot_key" > "$CH/.vballoon-chroot"
}

# apt inside the chroot; sid's Release file may be expired as seen from here.
chroot_apt() {
    in_chroot "$CH" apt-get -q -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root "$@"
}

make_chroot
printf '%s\n' "$sources" > "$CH/etc/apt/sources.list"
cp -L /etc/resolv.conf "$CH/etc/resolv.conf" 2>/dev/null || true
# One apt-get update per run at most: the suite's current kernel is what is resolved.
chroot_apt update >/dev/null || die "apt-get update in the $base chroot failed"

headers_config() { # REL -> prints that kernel's .config (from its headers package)
    local dir; dir=$(mktemp -d "$CH/tmp/hdr.XXXXXX")
    (cd "$dir" && in_chroot "$CH" sh -c "cd /tmp/$(basename "$dir") && apt-get -q -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root download linux-headers-$1" >/dev/null 2>&1) || { rm -rf "$dir"; return 1; }
    dpkg-deb --fsys-tarfile "$dir"/linux-headers-"$1"_*.deb | tar -xO "./usr/src/linux-headers-$1/.config" 2>/dev/null
    rm -rf "$dir"
}

if [ -z "$release" ]; then
    # The newest <ver>+debNN-amd64 of the suite whose config has CONFIG_RUST=y.
    candidates=$(in_chroot "$CH" apt-cache pkgnames linux-headers- |
        grep -E '^linux-headers-[0-9]+\.[0-9]+\.[0-9]+\+deb[0-9]+-amd64$' | sed 's/^linux-headers-//' | sort -rV)
    [ -n "$candidates" ] || die "no linux-headers-<ver>+debNN-amd64 package in $suite"
    for c in $candidates; do
        cfg=$(headers_config "$c" || true)
        if grep -q '^CONFIG_RUST=y$' <<<"$cfg"; then release=$c; break; fi
        log "$c (newest in $suite so far) has no CONFIG_RUST=y: not a kernel vballoon can build for"
    done
    [ -n "$release" ] || die "no Rust-enabled kernel in $suite (looked at: $(echo $candidates))"
fi
pkgver=$(in_chroot "$CH" apt-cache show "linux-headers-$release" 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -1)
[ -n "$pkgver" ] || die "linux-headers-$release is not in $suite (the archive keeps only each suite's current kernel)"
config=$(headers_config "$release") || die "could not fetch linux-headers-$release"
grep -q '^CONFIG_RUST=y$' <<<"$config" || die "$release has no CONFIG_RUST=y: vballoon is a Rust module and cannot be built for it"
kconf() { sed -n "s/^$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" <<<"$config"; }
cc_text=$(kconf CONFIG_CC_VERSION_TEXT); rustc_text=$(kconf CONFIG_RUSTC_VERSION_TEXT)
bindgen_text=$(kconf CONFIG_BINDGEN_VERSION_TEXT)
grep -q '^CONFIG_CC_IS_GCC=y$' <<<"$config" || die "$release is not GCC-built; this script knows Debian's GCC kernels only"
cc=${cc_text%% *}                      # x86_64-linux-gnu-gcc-14
gccpkg=gcc-${cc##*-gcc-}               # gcc-14
srcpkg=linux-source-$(sed -E 's/^([0-9]+\.[0-9]+).*/\1/' <<<"$release")
log "$suite: kernel $release ($pkgver), built with $cc_text, $rustc_text, $bindgen_text"

KDIR_IN=/var/lib/vballoon/kdir/$release
KDIR=$CH$KDIR_IN
OUT=$DEB/$release
# Each half is cached, keyed by what went into it: the prepared KDIR by the kernel, its package
# version, rustc, config and the text of the prepare section below; the unpacked vmlinuz and
# modules by the package version and the text of the unpack section.
section() { sed -n "/^# >>> $1/,/^# <<< $1/p" "$0" | sha256sum | cut -c1-16; }
key="$release $pkgver $rustc_text $(section prepare) $(sha256sum <<<"$config" | cut -c1-16)"
unpack_key="$release $pkgver $(section unpack)"
if [ -f "$KDIR/.vballoon-kdir" ] && [ "$(cat "$KDIR/.vballoon-kdir")" = "$key" ]; then
    log "cached: the Rust half of $release in $KDIR"
else
# >>> prepare
log "installing linux-headers-$release, $srcpkg and $gccpkg ($pkgver) in the chroot"
# The project's own kernel uses the same linux-source package: hand apt the cached .deb.
for d in "$VB_CACHE"/apt/debs/"$srcpkg"_"${pkgver/\~/%7e}"_all.deb "$VB_CACHE"/apt/debs/"$srcpkg"_"$pkgver"_all.deb; do
    [ -f "$d" ] && cp -n "$d" "$CH/var/cache/apt/archives/" || true
done
chroot_apt install -y --no-install-recommends "linux-headers-$release=$pkgver" "$srcpkg=$pkgver" "$gccpkg" >&2 ||
    die "installing linux-headers-$release=$pkgver $srcpkg=$pkgver $gccpkg in the $base chroot failed (is $srcpkg at the same version in $suite?)"
have_rustc=$(in_chroot "$CH" rustc --version)
[ "$have_rustc" = "$rustc_text" ] ||
    die "$release was built with \"$rustc_text\" but $base's rustc is \"$have_rustc\": its Rust half cannot be rebuilt (the suite's rustc has moved on)"
have_bindgen=$(in_chroot "$CH" bindgen --version)
[ "$have_bindgen" = "$bindgen_text" ] || log "NOTE: $release used \"$bindgen_text\", $base has \"$have_bindgen\" (the symbol check below decides)"

# modules_prepare in the chroot, into a scratch O= directory.
log "rebuilding the Rust half: modules_prepare with Debian's config (about 3 min)"
kver=${release%%+*}; localversion=${release#"$kver"}
in_chroot "$CH" bash -euc '
    rm -rf /var/tmp/vb-prep; mkdir -p /var/tmp/vb-prep/src /var/tmp/vb-prep/out
    tar -xf /usr/src/'"$srcpkg"'.tar.xz -C /var/tmp/vb-prep/src --strip-components=1
    cp /usr/src/linux-headers-'"$release"'/.config /var/tmp/vb-prep/out/.config
    make -C /var/tmp/vb-prep/src O=/var/tmp/vb-prep/out -j'"$(nproc)"' CC='"$cc"' RUSTC=rustc BINDGEN=bindgen \
        LOCALVERSION='"$localversion"' olddefconfig modules_prepare' > "$DEB/prepare-$release.log" 2>&1 ||
    { tail -30 "$DEB/prepare-$release.log" >&2; die "modules_prepare for $release failed (log: $DEB/prepare-$release.log)"; }
P=$CH/var/tmp/vb-prep
got=$(cat "$P/out/include/config/kernel.release")
[ "$got" = "$release" ] || die "the rebuilt tree says kernel release $got, not $release"
diff <(grep -v '^#' "$CH/usr/src/linux-headers-$release/.config" | sort) <(grep -v '^#' "$P/out/.config" | sort) |
    sed -n 's/^[<>] /[debian] olddefconfig changed: /p' >&2 || true

# Every Rust symbol Debian's kernel exports must be one the rebuilt crates export, with the same
# mangled name (same crate disambiguators): otherwise the metadata is not the kernel's.
want=$(awk '$2 ~ /^_R/ {print $2}' "$CH/usr/src/linux-headers-$release/Module.symvers" | sort -u)
have=$(cat "$P"/out/rust/exports_*_generated.h | grep -o '_R[A-Za-z0-9_]*' | sort -u)
nwant=$(grep -c . <<<"$want" || true)
missing=$(comm -23 <(echo "$want") <(echo "$have"))
[ "$nwant" -gt 0 ] || die "Module.symvers of $release exports no Rust symbol"
[ -z "$missing" ] || die "$(grep -c . <<<"$missing") of $nwant Rust symbols of $release are not in the rebuilt crates (a different rustc or config?), e.g. $(head -1 <<<"$missing")"
log "all $nwant Rust symbols of Module.symvers are exported by the rebuilt crates"

# The KDIR: one self-contained tree, as a kernel build tree is (srctree = objtree): the common
# headers (the kernel's top Makefile, arch/ and include/, with the linux-kbuild scripts and tools
# the packages symlink to copied in), the arch-specific package over it (config, Module.symvers,
# generated headers; not its two-line Makefile, which points KBUILD_OUTPUT back at dpkg's
# directory), then the Rust half. Nothing of dpkg's is written to.
hdr=$CH/usr/src/linux-headers-$release
common=$(sed -n 's|^include \(/.*\)/Makefile$|\1|p' "$hdr/Makefile")
[ -n "$common" ] && [ -f "$CH$common/Makefile" ] || die "cannot find the common headers named by $hdr/Makefile"
rm -rf "$KDIR"; mkdir -p "$KDIR"
# The packages' symlinks are relative (../../lib/linux-kbuild-*), so they resolve inside $CH.
cp -rL "$CH$common/." "$KDIR/"
(cd "$hdr" && for f in * .[!.]*; do [ "$f" = Makefile ] || cp -rL "$f" "$KDIR/"; done)
mkdir -p "$KDIR/rust"
cp "$P"/out/rust/*.rmeta "$P"/out/rust/*.so "$KDIR/rust/"
cp "$P/src/rust/bindgen_parameters" "$KDIR/rust/"
# The GCC flags this version's rust/Makefile keeps from bindgen (Kbuild reads the list).
sed -n '/^bindgen_skip_c_flags :=/,/^$/p' "$P/src/rust/Makefile" | sed 's/^bindgen_skip_c_flags :=//; s/\\$//' |
    tr -s ' \t\n' ' ' > "$KDIR/rust/bindgen_skip_c_flags"
[ -s "$KDIR/rust/bindgen_skip_c_flags" ] || die "no bindgen_skip_c_flags in $srcpkg's rust/Makefile"
cp "$P/out/scripts/target.json" "$KDIR/scripts/"
rm -rf "$P"
# <<< prepare
echo "$key" > "$KDIR/.vballoon-kdir"
fi

# Where the unpacked packages put the modules and the vmlinuz.
locate() {
    moddir=$(ls -d "$OUT"/root/usr/lib/modules/"$release" "$OUT"/root/lib/modules/"$release" 2>/dev/null | head -1 || true)
    [ -n "$moddir" ] || die "no lib/modules/$release in linux-modules-$release"
    # usr/lib/modules/<release>/vmlinuz since the 6.19 package split; boot/vmlinuz-<release> before.
    vmlinuz=$(ls "$moddir/vmlinuz" "$OUT/root/boot/vmlinuz-$release" 2>/dev/null | head -1 || true)
    [ -n "$vmlinuz" ] || die "no vmlinuz in linux-binary-$release"
}
if [ -f "$OUT/.vballoon-unpacked" ] && [ "$(cat "$OUT/.vballoon-unpacked")" = "$unpack_key" ]; then
    log "cached: the packaged vmlinuz and modules of $release in $OUT"
else
# >>> unpack
# The packaged vmlinuz and Debian's own modules (virtio_balloon.ko for the C driver's side).
log "fetching linux-binary-$release and linux-modules-$release"
rm -rf "$OUT"; mkdir -p "$OUT/debs" "$CH/tmp/vb-debs"
in_chroot "$CH" sh -c "cd /tmp/vb-debs && apt-get -q -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root download linux-binary-$release=$pkgver linux-modules-$release=$pkgver" >&2 ||
    die "downloading linux-binary-$release / linux-modules-$release ($pkgver) failed"
mv "$CH"/tmp/vb-debs/*.deb "$OUT/debs/"; rmdir "$CH/tmp/vb-debs"
for d in "$OUT"/debs/*.deb; do dpkg-deb -x "$d" "$OUT/root"; done
locate
cdrv=$(ls "$moddir"/kernel/drivers/virtio/virtio_balloon.ko* 2>/dev/null | head -1 || true)
[ -n "$cdrv" ] || die "linux-modules-$release has no virtio_balloon.ko"
case $cdrv in
    *.xz) xz -dc "$cdrv" > "$OUT/virtio_balloon.ko";;
    *.zst) zstd -dqc "$cdrv" > "$OUT/virtio_balloon.ko";;
    *.gz) gzip -dc "$cdrv" > "$OUT/virtio_balloon.ko";;
    *) cp "$cdrv" "$OUT/virtio_balloon.ko";;
esac
# <<< unpack
echo "$unpack_key" > "$OUT/.vballoon-unpacked"
fi
locate

cat > "$KDIR/vballoon-debian.env" <<EOF
# Written by scripts/debian-kernel.sh: how to build for and boot Debian's $release.
VB_DEBIAN_RELEASE=$release
VB_DEBIAN_PKGVER=$pkgver
VB_DEBIAN_SUITE=$suite
VB_CHROOT=$CH
VB_CHROOT_KDIR=$KDIR_IN
VB_KCC=$cc
VB_VMLINUZ=$vmlinuz
VB_MODULES=$moddir
VB_C_DRIVER=$OUT/virtio_balloon.ko
EOF
log "ready: $KDIR"
echo "$KDIR"
