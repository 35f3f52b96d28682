#!/usr/bin/env bash
# Build-side checks against one of Debian's kernels (a KDIR from scripts/debian-kernel.sh), in its
# chroot, as a user would meet them. One "PASS name" / "FAIL name: reason" line each.
#   scripts/debian-checks.sh KDIR
# - rustc_mismatch_refused: a rustc other than the kernel's is refused by Kbuild with one line
#   naming both versions, before anything is compiled.
# - rust_half_missing_refused: Debian's own headers directory (no Rust half) is refused with one
#   line naming what is missing and what to run.
# - dkms_debian: Debian's dkms in the chroot builds and installs vballoon for the kernel from
#   dkms.conf alone (it finds /var/lib/vballoon/kdir/<release>, the kernel's gcc and rustc); with
#   that KDIR hidden, the same install is skipped with the reason, not failed.
# - dkms_rustc_mismatch_skipped: dkms with another rustc skips the kernel, saying so.
# - clippy_clean: the CLIPPY=1 build with that suite's clippy (the kernel lints and clippy's)
#   has no warning: the lint rule holds with every supported toolchain.
set -uo pipefail
. "$(dirname "$0")/env.sh"
kdir=${1:?KDIR}
# shellcheck disable=SC1091
. "$kdir/vballoon-debian.env"
rel=$VB_DEBIAN_RELEASE
failed=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failed=1; }

work=/var/tmp/vballoon-checks/$rel
rm -rf "$VB_CHROOT$work"; mkdir -p "$VB_CHROOT$work/src/rust"
cp -p "$VB_ROOT/Kbuild" "$VB_ROOT/VERSION" "$VB_CHROOT$work/src/"
cp -rp "$VB_ROOT/rust/." "$VB_CHROOT$work/src/rust/"
want=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"$/\1/p' "$kdir/.config")

# A rustc that says it is another version (what a user's rustup or backports rustc would say).
cat > "$VB_CHROOT$work/rustc-other" <<'EOF'
#!/bin/sh
[ "$1" = --version ] && { echo "rustc 1.96.0 (b1b1b1b1b 2026-09-01)"; exit 0; }
exec rustc "$@"
EOF
chmod +x "$VB_CHROOT$work/rustc-other"
out=$(in_chroot "$VB_CHROOT" make -C "$VB_CHROOT_KDIR" M="$work/src" CC="$VB_KCC" \
    RUSTC="$work/rustc-other" BINDGEN=bindgen modules 2>&1); rc=$?
line="vballoon: this kernel was built with \"$want\" but RUSTC=$work/rustc-other is \"rustc 1.96.0 (b1b1b1b1b 2026-09-01)\""
if [ $rc = 0 ]; then
    fail rustc_mismatch_refused "the build with rustc 1.96.0 against $rel succeeded"
elif ! grep -qF "$line" <<<"$out"; then
    fail rustc_mismatch_refused "exit $rc without the line '$line': $(tail -3 <<<"$out" | tr '\n' ' ')"
elif grep -qE '^ +(RUSTC|BINDGEN|CC) |E0514' <<<"$out"; then
    fail rustc_mismatch_refused "something was compiled before the refusal: $(grep -m1 -E '^ +(RUSTC|BINDGEN|CC) |E0514' <<<"$out")"
else
    pass rustc_mismatch_refused
    echo "[debian] $rel, rustc 1.96.0: $(grep -o 'vballoon: this kernel.*' <<<"$out" | head -1)"
fi

out=$(in_chroot "$VB_CHROOT" make -C "/usr/src/linux-headers-$rel" M="$work/src" CC="$VB_KCC" \
    RUSTC=rustc BINDGEN=bindgen modules 2>&1); rc=$?
if [ $rc = 0 ]; then
    fail rust_half_missing_refused "the build against Debian's bare headers of $rel succeeded"
elif ! grep -q 'vballoon: this kernel tree lacks its Rust build files (.*rust/libkernel.rmeta.*make kdir-debian' <<<"$out"; then
    fail rust_half_missing_refused "exit $rc without the refusal line: $(tail -3 <<<"$out" | tr '\n' ' ')"
else
    pass rust_half_missing_refused
    echo "[debian] $rel, Debian's headers alone: $(grep -o 'vballoon: this kernel tree.*' <<<"$out" | head -1)"
fi
# dkms as a Debian system runs it (the chroot is that system; removed again afterwards).
ver=$(<"$VB_ROOT/VERSION")
if ! in_chroot "$VB_CHROOT" sh -c 'command -v dkms' >/dev/null; then
    in_chroot "$VB_CHROOT" apt-get -q -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root \
        install -y --no-install-recommends dkms >/dev/null 2>&1
fi
src=/usr/src/vballoon-$ver
rm -rf "$VB_CHROOT$src"; mkdir -p "$VB_CHROOT$src"
cp -r "$VB_ROOT/dkms.conf" "$VB_ROOT/Makefile" "$VB_ROOT/Kbuild" "$VB_ROOT/VERSION" "$VB_ROOT/rust" "$VB_CHROOT$src/"
dk() { in_chroot "$VB_CHROOT" dkms "$@" -k "$rel" --kernelsourcedir "/usr/src/linux-headers-$rel"; }
in_chroot "$VB_CHROOT" dkms remove "vballoon/$ver" --all >/dev/null 2>&1
out=$(dk install "vballoon/$ver" --no-depmod 2>&1); rc=$?
ko=$(ls "$VB_CHROOT/lib/modules/$rel"/updates/dkms/vballoon.ko* 2>/dev/null | head -1)
status=$(in_chroot "$VB_CHROOT" dkms status vballoon 2>&1)
if [ $rc != 0 ] || [ -z "$ko" ]; then
    fail dkms_debian "dkms install for $rel: exit $rc, $(tail -3 <<<"$out" | tr '\n' ' ')"
elif ! grep -q "vballoon/$ver, $rel, x86_64: installed" <<<"$status"; then
    fail dkms_debian "dkms status: $status"
elif [ "$(modinfo -F vermagic "$ko" | awk '{print $1}')" != "$rel" ]; then
    fail dkms_debian "the module dkms built has vermagic $(modinfo -F vermagic "$ko")"
else
    in_chroot "$VB_CHROOT" dkms remove "vballoon/$ver" --all >/dev/null 2>&1
    # Without the Rust half: skipped with the reason (dkms's BUILD_EXCLUSIVE), exit 0 or 77.
    mv "$kdir/.vballoon-kdir" "$kdir/.vballoon-kdir.hidden"
    out=$(dk install "vballoon/$ver" --no-depmod 2>&1); rc=$?
    mv "$kdir/.vballoon-kdir.hidden" "$kdir/.vballoon-kdir"
    status=$(in_chroot "$VB_CHROOT" dkms status vballoon 2>&1)
    if [ $rc != 0 ] && [ $rc != 77 ]; then
        fail dkms_debian "without the Rust half, dkms install failed (exit $rc) instead of skipping: $(tail -3 <<<"$out" | tr '\n' ' ')"
    elif ! grep -q "vballoon: not built for $rel: its headers have no Rust build files" <<<"$out"; then
        fail dkms_debian "without the Rust half, no reason printed: $(tail -3 <<<"$out" | tr '\n' ' ')"
    elif grep -q 'installed' <<<"$status"; then
        fail dkms_debian "without the Rust half, dkms status says: $status"
    else
        pass dkms_debian
        echo "[debian] dkms: built and installed ${ko#"$VB_CHROOT"}; without the Rust half (exit $rc): $(grep -m1 -o 'vballoon: not built.*Rust build files' <<<"$out")"
    fi
    # Another rustc than the kernel's (as trixie-backports' 1.97.1 beside trixie's kernel):
    # skipped with the reason, not a failed build.
    in_chroot "$VB_CHROOT" dkms remove "vballoon/$ver" --all >/dev/null 2>&1
    out=$(in_chroot "$VB_CHROOT" env VB_RUSTC="$work/rustc-other" dkms install "vballoon/$ver" \
        -k "$rel" --kernelsourcedir "/usr/src/linux-headers-$rel" --no-depmod 2>&1); rc=$?
    status=$(in_chroot "$VB_CHROOT" dkms status vballoon 2>&1)
    if [ $rc != 0 ] && [ $rc != 77 ]; then
        fail dkms_rustc_mismatch_skipped "dkms install with rustc 1.96.0 failed (exit $rc) instead of skipping: $(tail -3 <<<"$out" | tr '\n' ' ')"
    elif ! grep -q "vballoon: not built for $rel: it was built with \"$want\" but $work/rustc-other is \"rustc 1.96.0" <<<"$out"; then
        fail dkms_rustc_mismatch_skipped "no reason printed: $(tail -3 <<<"$out" | tr '\n' ' ')"
    elif grep -q 'installed' <<<"$status"; then
        fail dkms_rustc_mismatch_skipped "installed anyway: $status"
    else
        pass dkms_rustc_mismatch_skipped
    fi
fi
in_chroot "$VB_CHROOT" dkms remove "vballoon/$ver" --all >/dev/null 2>&1
rm -rf "${VB_CHROOT:?}$src"

out=$(touch "$VB_ROOT/rust/vballoon.rs"; bash "$VB_ROOT/scripts/module.sh" --kdir "$kdir" --clippy 2>&1); rc=$?
if [ $rc != 0 ]; then
    fail clippy_clean "the CLIPPY=1 build against $rel failed: $(grep -m3 -E '^error' <<<"$out" | tr '\n' ' ')"
elif grep -qE '^(warning|error)' <<<"$out"; then
    grep -E '^(warning|error)' -A6 <<<"$out" | head -40
    fail clippy_clean "the CLIPPY=1 build against $rel has warnings (above)"
else
    pass clippy_clean
fi
rm -rf "${VB_CHROOT:?}$work"
exit $failed
