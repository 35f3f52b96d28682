#!/usr/bin/env bash
# Fetch Debian's linux-source-7.3 (trixie-backports, through a private apt configuration so the
# machine's own sources stay bookworm) and build a guest kernel out of tree, cached.
#
#   scripts/kernel.sh [guest|debug|kasan]     prints the build directory (KDIR) on its last line
#
# The cache key covers the exact source package version, every config fragment that goes in, this
# script, and the toolchain versions, so a change to any of them builds a new tree.
set -euo pipefail
. "$(dirname "$0")/env.sh"
flavor=${1:-guest}
log() { printf '[kernel] %s\n' "$*" >&2; }

# Version we pin; if the registry no longer has it, take the newest linux-source-7.3 and say so.
PINNED_VERSION=7.3.4-1~bpo13+1

APT=$VB_CACHE/apt
aptopts=(-o Dir::Etc::SourceList=$APT/sources.list -o Dir::Etc::SourceParts=/dev/null
         -o Dir::State::Lists=$APT/lists -o Dir::Cache=$APT/cache -o APT::Get::List-Cleanup=0
         -o APT::Sandbox::User=root)

fetch_source() {
    local deb ver
    deb=$(ls "$APT"/debs/${KERNEL_PKG}_*.deb 2>/dev/null | head -1 || true)
    if [ -z "$deb" ]; then
        mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs"
        echo 'deb http://deb.debian.org/debian trixie-backports main' > "$APT/sources.list"
        log "apt-get update (private trixie-backports list)"
        apt-get "${aptopts[@]}" update -q >&2
        if (cd "$APT/debs" && apt-get "${aptopts[@]}" download "$KERNEL_PKG=$PINNED_VERSION" >&2); then
            log "downloaded $KERNEL_PKG $PINNED_VERSION"
        else
            ver=$(apt-cache "${aptopts[@]}" madison "$KERNEL_PKG" | awk '{print $3}' | sort -V | tail -1)
            [ -n "$ver" ] || { log "ERROR: no $KERNEL_PKG in trixie-backports"; exit 1; }
            log "NOTE: pinned $KERNEL_PKG $PINNED_VERSION has left the registry; using newest: $ver"
            (cd "$APT/debs" && apt-get "${aptopts[@]}" download "$KERNEL_PKG=$ver" >&2)
        fi
        deb=$(ls "$APT"/debs/${KERNEL_PKG}_*.deb | head -1)
    fi
    ver=$(dpkg-deb -f "$deb" Version)
    SRC=$VB_CACHE/src/linux-$ver
    KVER=$ver
    if [ ! -f "$SRC/.vb-extracted" ]; then
        log "extracting $deb"
        rm -rf "$SRC" "$VB_CACHE/src/x"; mkdir -p "$VB_CACHE/src/x"
        dpkg -x "$deb" "$VB_CACHE/src/x"
        local tarball; tarball=$(ls "$VB_CACHE"/src/x/usr/src/linux-source-*.tar.xz)
        mkdir -p "$SRC"; tar -xf "$tarball" -C "$SRC" --strip-components=1
        rm -rf "$VB_CACHE/src/x"
        touch "$SRC/.vb-extracted"
    fi
}

fetch_source
frags=("$VB_ROOT/scripts/config/guest.config")
case $flavor in
    guest) ;;
    debug) frags+=("$VB_ROOT/scripts/config/debug.config") ;;
    kasan) frags+=("$VB_ROOT/scripts/config/debug.config" "$VB_ROOT/scripts/config/kasan.config") ;;
    *) log "unknown flavor $flavor"; exit 2 ;;
esac

# Bump KEY_EPOCH when the build steps below change in a way that changes the result.
KEY_EPOCH=1
key=$( { echo "$KVER $KEY_EPOCH ${KMAKE_VARS[*]}"; cat "${frags[@]}";
         "$RUSTC" --version; "$BINDGEN" --version; clang-19 --version | head -1; } | sha256sum | cut -c1-16)
OUT=$VB_CACHE/kbuild/$flavor-$KVER-$key
if [ -f "$OUT/.vb-complete" ]; then
    log "cached $flavor kernel: $OUT"
    echo "$OUT"; exit 0
fi

log "building $flavor kernel $KVER into $OUT (about 7-15 min on 2 cores)"
start=$(date +%s)
# Only one tree per flavour is kept: drop older keys (each is about 400 MB).
for old in "$VB_CACHE/kbuild/$flavor-"*; do [ "$old" = "$OUT" ] || rm -rf "$old"; done
# An interrupted build of the same key resumes (make is incremental); a new key starts clean.
mkdir -p "$OUT"
km() { make -C "$SRC" O="$OUT" "${KMAKE_VARS[@]}" "$@"; }
km tinyconfig >/dev/null
km rustavailable >&2
"$SRC/scripts/kconfig/merge_config.sh" -m -O "$OUT" "$OUT/.config" "${frags[@]}" >/dev/null
km olddefconfig >/dev/null
# Kconfig silently drops options whose dependencies are missing: check every fragment line.
bad=0
for f in "${frags[@]}"; do
    while IFS= read -r line; do
        case "$line" in ''|'#'*) continue;; esac
        opt=${line%%=*}; val=${line#*=}
        if [ "$val" = n ]; then
            grep -qx "$opt=y" "$OUT/.config" && { log "ERROR: $opt should be off"; bad=1; }
        else
            grep -qx "$line" "$OUT/.config" || { log "ERROR: $line did not survive olddefconfig"; bad=1; }
        fi
    done < "$f"
done
[ $bad = 0 ] || exit 1
# Progress: one line per 200 objects so long builds show they are alive.
if ! km -j"$(nproc)" vmlinux bzImage modules 2>&1 | awk '/^  (CC|RUSTC|LD|AR)/{n++; if (n%200==0) {print "[kernel] ... " n " objects" > "/dev/stderr"; fflush("/dev/stderr")}} /error|Error/{print > "/dev/stderr"}'; then
    log "ERROR: kernel build failed"; exit 1
fi
log "built in $(( $(date +%s) - start )) s"
touch "$OUT/.vb-complete"
echo "$OUT"
