# Shared settings for every vballoon script (sourced, not run).
# Everything lives under VB_CACHE (default: ~/.cache/vballoon) so repeat runs are fast; caches are
# keyed by what went into them, never trusted by name alone.
# cargo (rustup's, for the host crates and `cargo install bindgen-cli`) may not be on PATH in a
# non-login shell such as CI's. The kernel and module always use Debian's rustc (RUSTC below).
[ -d "$HOME/.cargo/bin" ] && case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) PATH="$HOME/.cargo/bin:$PATH";; esac
export PATH
VB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VB_CACHE=${VB_CACHE:-$HOME/.cache/vballoon}
TOOLS_DIR=$VB_CACHE/tools
BINDGEN_VERSION=0.73.2
BINDGEN=$TOOLS_DIR/bin/bindgen
RUSTC=/usr/bin/rustc
RUSTDOC=/usr/bin/rustdoc
LIBCLANG_PATH=/usr/lib/llvm-19/lib
export LIBCLANG_PATH
# Pinned kernel source; if it has left the registry, kernel-fetch.sh picks the newest 7.3.
KERNEL_PKG=linux-source-7.3
KMAKE_VARS=(LLVM=-19 RUSTC=$RUSTC RUSTDOC=$RUSTDOC HOSTRUSTC=$RUSTC BINDGEN=$BINDGEN)

# The make variables for building a module against KDIR, from the kernel's own .config: clang
# kernels get LLVM=-<major> (and that LLVM's libclang for bindgen), GCC kernels the gcc named in
# CONFIG_CC_VERSION_TEXT. Kbuild refuses a rustc that is not the kernel's.
kmake_vars_for() {
    local cfg=$1/.config v cc
    if grep -q '^CONFIG_CC_IS_CLANG=y' "$cfg" 2>/dev/null; then
        v=$(sed -n 's/^CONFIG_CLANG_VERSION=\([0-9]*\)$/\1/p' "$cfg")
        KMAKE_VARS=(LLVM=-$((v / 10000)) RUSTC=$RUSTC RUSTDOC=$RUSTDOC HOSTRUSTC=$RUSTC BINDGEN=$BINDGEN)
        LIBCLANG_PATH=/usr/lib/llvm-$((v / 10000))/lib
    elif grep -q '^CONFIG_CC_IS_GCC=y' "$cfg" 2>/dev/null; then
        cc=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\([^ ]*\).*/\1/p' "$cfg")
        KMAKE_VARS=(CC=${cc:-gcc} RUSTC=$RUSTC RUSTDOC=$RUSTDOC HOSTRUSTC=$RUSTC BINDGEN=$BINDGEN)
    fi
}

# Run a command in a Debian chroot of the project's (scripts/debian-kernel.sh makes them), in a
# private mount namespace: /proc and /dev are mounted for it and vanish with it, so nothing is
# left mounted whatever happens. The environment is a clean one of that userland.
#   in_chroot ROOT CMD...
in_chroot() {
    local root=$1; shift
    unshare --mount --fork -- bash -c '
        r=$1; shift
        mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" || exit 1
        exec chroot "$r" "$@"' _ "$root" \
        env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}
