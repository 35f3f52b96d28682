#!/usr/bin/env bash
# Install everything vballoon needs on a fresh Debian 12 machine. Idempotent: every step
# checks first and does nothing when its result is already there.
set -euo pipefail
. "$(dirname "$0")/env.sh"

log() { printf '[setup] %s\n' "$*"; }
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

BASE_PKGS=(rustc-web rust-web-src clang-19 lld-19 llvm-19 libclang-19-dev flex bison bc
           libelf-dev libssl-dev cpio kmod busybox-static make gcc xz-utils python3
           rust-web-clippy libc6-dev
           # the vhost-user QEMU build (scripts/qemu.sh) for the hostile-host scenarios
           ninja-build libglib2.0-dev libpixman-1-dev python3-venv python3-pip pkg-config
           libfdt-dev dpkg-dev
           # the memory-pressure scenario's ext4 disk image (mkfs.ext4 -d)
           e2fsprogs
           # dkms.conf's test (scripts/package-test.sh); --no-install-recommends (below) keeps it
           # from pulling in a Debian kernel's headers
           dkms
           # Debian's own kernels (scripts/debian-kernel.sh): trixie and sid chroots; the
           # vballoon-dkms package (scripts/deb.sh: dpkg-buildpackage, debhelper, dh-dkms)
           debootstrap debhelper dh-dkms)
# Without a cargo on PATH (no rustup; env.sh has added ~/.cargo/bin if it exists), Debian's
# cargo-web builds the host crates and bindgen-cli: the same 1.96 as rustc-web, from
# bookworm-security (it Provides cargo). rustfmt-web gives rustfmt and cargo fmt for the lints;
# rust-web-clippy (above) gives cargo clippy.
if ! command -v cargo >/dev/null; then
    BASE_PKGS+=(cargo-web rustfmt-web)
elif ! command -v rustfmt >/dev/null; then
    BASE_PKGS+=(rustfmt-web)
fi
BPO_PKGS=(qemu-system-x86)
# libvirt 11 from backports for the virsh setmem/dommemstat test. Named per package (not
# -t bookworm-backports), which would also upgrade systemd.
LIBVIRT_PKGS=(libvirt-daemon-driver-qemu libvirt-clients libvirt-daemon libvirt0 libvirt-common
              libvirt-daemon-common libvirt-daemon-log)

missing=()
for p in "${BASE_PKGS[@]}" "${BPO_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# qemu must come from backports (10.x); bookworm's 7.2 lacks things the tests use.
if dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null | grep -q '^1:7'; then
    missing+=(qemu-system-x86)
fi

for p in "${LIBVIRT_PKGS[@]}"; do
    dpkg-query -W -f='${Version}' "$p" 2>/dev/null | grep -q '^11\.' || { missing+=(libvirt); break; }
done

if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    if [ ! -f /etc/apt/sources.list.d/bookworm-backports.list ]; then
        echo 'deb http://deb.debian.org/debian bookworm-backports main' |
            $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
    fi
    # Third-party lists on some images are unreachable here; their failure must not stop us.
    $SUDO apt-get update -q || log "apt-get update reported errors (continuing)"
    # One retry: an install interrupted half-way (seen here once: a downloaded archive vanished
    # before dpkg unpacked it) succeeds when run again after dpkg finishes what it started.
    apt_install() {
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@" && return 0
        log "apt-get install failed; repairing and retrying once"
        DEBIAN_FRONTEND=noninteractive $SUDO dpkg --configure -a || true
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@"
    }
    base_missing=(); for p in "${missing[@]}"; do
        case " ${BPO_PKGS[*]} libvirt " in *" $p "*) ;; *) base_missing+=("$p");; esac
    done
    if ((${#base_missing[@]})); then
        apt_install "${base_missing[@]}"
    fi
    apt_install -t bookworm-backports "${BPO_PKGS[@]}"
    apt_install "${LIBVIRT_PKGS[@]/%//bookworm-backports}"
else
    log "Debian packages: all present"
fi

# bindgen-cli from crates.io, pinned, installed into our own root so it never depends on PATH.
if [ ! -x "$BINDGEN" ] || ! "$BINDGEN" --version 2>/dev/null | grep -q "$BINDGEN_VERSION"; then
    log "installing bindgen-cli $BINDGEN_VERSION (about 80 s)"
    LIBCLANG_PATH=$LIBCLANG_PATH cargo install bindgen-cli --version "$BINDGEN_VERSION" \
        --locked --root "$TOOLS_DIR" -q
else
    log "bindgen-cli $BINDGEN_VERSION: present"
fi

"$RUSTC" --version >/dev/null
log "toolchain: $("$RUSTC" --version), $("$BINDGEN" --version), $(clang-19 --version | head -1)"
log "host crates: $(command -v cargo) ($(cargo --version))"
log "qemu: $(qemu-system-x86_64 --version | head -1)"
