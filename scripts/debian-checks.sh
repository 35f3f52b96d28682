#!/usr/bin/env bash
# Build-side checks against one of Debian's kernels (a KDIR from scripts/debian-kernel.sh), in its
# chroot, as a user would meet them. One "PASS name" / "FAIL name: reason" line each.
#   scripts/debian-checks.sh KDIR
# - rustc_mismatch_refused: a rustc other than the kernel's is refused by Kbuild with one line
#   naming both versions, before anything is compiled.
# - rust_half_missing_refused: Debian's own headers directory (no Rust half) is refused with one
#   line naming what is missing and what to run.
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
