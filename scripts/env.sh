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
