#!/usr/bin/env bash
# make test:       host unit tests, lints, packaging, then the boot tests on the debug kernel and
#                  on Debian's packaged kernels (the full list on trixie-backports' 7.3, the
#                  basics on sid's 7.2)
# make test-debug: the boot tests on the debug kernel only
# Both end with one line "N passed, N failed" over everything they ran.
#   scripts/test.sh all|guest|debug|debian [qemu-test args, e.g. --only stats]
# (guest: the boot tests on the project's test kernel, which make test no longer runs: Debian's
# 7.3 runs everything it did; debian: only the boot tests on Debian's packaged kernels)
set -uo pipefail
. "$(dirname "$0")/env.sh"
what=${1:-all}
shift || true
start=$(date +%s)
passed=0; failed=0; skipped=0
# Every failed scenario, repeated at the end: CI keeps only the tail of a run.
failures=$(mktemp)
finish() {
    if [ -s "$failures" ]; then
        echo "[test] failed scenarios (first lines of each):"
        cat "$failures"
    fi
    rm -f "$failures"
    if [ -n "${deb_prep_pid:-}" ]; then
        pkill -TERM -P "$deb_prep_pid" 2>/dev/null; kill "$deb_prep_pid" 2>/dev/null
    fi
    [ -z "${deb_prep:-}" ] || rm -rf "$deb_prep"
    echo "[test] took $(( $(date +%s) - start )) s"
    echo "$passed passed, $failed failed, $skipped skipped"
    [ "$failed" = 0 ]
    exit $?
}
fail_step() { echo "[test] $1"; failed=$((failed + 1)); finish; }

bash "$VB_ROOT/scripts/setup.sh" || fail_step "setup failed"
cd "$VB_ROOT"

# Debian's kernels are prepared in the background from the start (debootstrap and the downloads
# wait on the network, not the CPU); their boot tests run last and wait for it.
deb_prep=$(mktemp -d)
if [ "$what" = all ] || [ "$what" = debian ]; then
    ( for s in trixie-backports sid; do
          bash "$VB_ROOT/scripts/debian-kernel.sh" "$s" > "$deb_prep/$s.log" 2>&1
          echo $? > "$deb_prep/$s.rc"
          # The real guest's image needs trixie's KDIR; made here too, the test finds it cached.
          [ "$s" != trixie-backports ] || [ "$(cat "$deb_prep/$s.rc")" != 0 ] ||
              bash "$VB_ROOT/scripts/debian-image.sh" "$(tail -1 "$deb_prep/$s.log")" > "$deb_prep/image.log" 2>&1
      done ) &
    deb_prep_pid=$!
fi

if [ "$what" != debug ] && [ "$what" != debian ]; then
    echo "[test] host unit tests (cargo test)"
    out=$(cargo test --workspace 2>&1); rc=$?
    echo "$out" | grep -E '^test |test result|^error'
    while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
        echo "$out" | sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p')
    [ $rc = 0 ] || { echo "[test] cargo test failed (exit $rc)"; [ "$failed" -gt 0 ] || failed=$((failed + 1)); }
fi

if [ "$what" != debug ] && [ "$what" != debian ]; then
    echo "[test] lint (rustfmt, cargo clippy, CLIPPY=1 module build)"
    if bash "$VB_ROOT/scripts/lint.sh"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
fi

if [ "$what" != debug ] && [ "$what" != debian ]; then
    # Builds the module against the test kernel (the boot tests' build below is then a no-op).
    echo "[test] packaging (install.sh, make install, dkms)"
    pout=$(mktemp)
    bash "$VB_ROOT/scripts/package-test.sh" 2>&1 | tee "$pout"; rc=${PIPESTATUS[0]}
    pp=$(grep -c '^PASS ' "$pout"); pf=$(grep -c '^FAIL ' "$pout"); ps=$(grep -c '^SKIP ' "$pout")
    grep '^FAIL ' "$pout" >> "$failures"
    rm -f "$pout"
    passed=$((passed + pp)); failed=$((failed + pf)); skipped=$((skipped + ps))
    [ "$rc" = 0 ] || [ "$pf" -gt 0 ] || { echo "[test] package tests failed (exit $rc)"; failed=$((failed + 1)); }
fi

cargo build -q --release -p qemu-test -p vhost-balloon || fail_step "harness build failed"
# The hostile-host scenarios run on the project's own QEMU build (vhost-user-device-pci).
vhost_qemu=$(bash "$VB_ROOT/scripts/qemu.sh" | tail -1) || fail_step "vhost-user QEMU build failed"
# One qemu-test run, its lines prefixed with [TAG]; its counts go into the totals and the
# first lines of each failure into the summary.
#   boot_tests TAG QEMU-TEST-ARGS...
boot_tests() {
    local tag=$1 bout; shift
    bout=$(mktemp)
    "$VB_ROOT/target/release/qemu-test" test "$@" | sed -u "s/^/[$tag] /" | tee "$bout"
    awk '/^\[[a-z0-9.-]+\] FAIL /{n=12} n>0{print substr($0,1,300); n--}' "$bout" >> "$failures"
    read -r bp bf bs < <(sed -nE 's/^\[[a-z0-9.-]+\] boot tests: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped$/\1 \2 \3/p' "$bout")
    rm -f "$bout"
    if [ -z "${bp:-}" ]; then
        echo "[test] the $tag boot harness did not finish"; failed=$((failed + 1))
    else
        passed=$((passed + bp)); failed=$((failed + bf)); skipped=$((skipped + bs))
    fi
    unset bp bf bs
}

flavors=(debug); [ "$what" = all ] || flavors=("$what"); [ "$what" != debian ] || flavors=()
for flavor in "${flavors[@]}"; do
    kdir=$(bash "$VB_ROOT/scripts/kernel.sh" "$flavor" | tail -1) || fail_step "$flavor kernel build failed"
    module=$(bash "$VB_ROOT/scripts/module.sh" --kdir "$kdir" | tail -1) || fail_step "module build against the $flavor kernel failed"
    echo "[test] boot tests on the $flavor kernel ($kdir)"
    boot_tests "$flavor" --kdir "$kdir" --module "$module" --work "$VB_CACHE/run-$flavor" \
        --flavor "$flavor" --vhost-qemu "$vhost_qemu" "$@"
done

# Debian's own kernels, as users run them: the newest Rust-enabled kernel of trixie-backports and
# of sid, resolved now (scripts/debian-kernel.sh says which), with the Rust half their headers
# lack rebuilt in that suite's chroot. vballoon and Debian's own virtio_balloon.ko side by side.
# The full list on trixie-backports' kernel (every scenario but the debug kernel's two, plus the
# real Debian guest); the build and the basics on sid's.
DEBIAN_BASIC=(module_binds inflate_deflate_vballoon inflate_deflate_c_driver stats_vballoon
              stats_c_driver rmmod_inflated)
debian_kernel() { # SUITE [SCENARIO...] (none: the full list)
    local suite=$1; shift
    local kdir module only=() s
    [ -z "${deb_prep_pid:-}" ] || { wait "$deb_prep_pid"; deb_prep_pid=; }
    sed 's/^/[prepare] /' "$deb_prep/$suite.log"
    kdir=$(tail -1 "$deb_prep/$suite.log")
    if [ "$(cat "$deb_prep/$suite.rc" 2>/dev/null)" != 0 ] || [ ! -f "$kdir/vballoon-debian.env" ]; then
        echo "[test] FAIL debian-$suite: could not prepare $suite's kernel (above)"; failed=$((failed + 1))
        echo "FAIL debian-$suite: preparing the kernel (scripts/debian-kernel.sh $suite)" >> "$failures"
        return
    fi
    # shellcheck disable=SC1091
    . "$kdir/vballoon-debian.env"
    if ! module=$(bash "$VB_ROOT/scripts/module.sh" --kdir "$kdir" | tail -1); then
        echo "[test] FAIL debian-$suite: the module build against $VB_DEBIAN_RELEASE failed"; failed=$((failed + 1))
        echo "FAIL debian-$suite: module build against $VB_DEBIAN_RELEASE" >> "$failures"
        return
    fi
    passed=$((passed + 1))
    echo "[test] PASS debian-$suite: vballoon.ko built against Debian's $VB_DEBIAN_RELEASE ($VB_DEBIAN_PKGVER)"
    local cout; cout=$(bash "$VB_ROOT/scripts/debian-checks.sh" "$kdir" 2>&1)
    echo "$cout" | sed "s/^/[debian-$suite] /"
    passed=$((passed + $(grep -c '^PASS ' <<<"$cout"))); failed=$((failed + $(grep -c '^FAIL ' <<<"$cout")))
    grep '^FAIL ' <<<"$cout" | sed "s/^/[debian-$suite] /" >> "$failures"
    if [ "$suite" = trixie-backports ]; then
        # The Debian packages, installed with apt in trixie (scripts/debian-package-test.sh).
        cout=$(bash "$VB_ROOT/scripts/debian-package-test.sh" "$kdir" 2>&1)
        echo "$cout" | sed "s/^/[debian-package] /"
        passed=$((passed + $(grep -c '^PASS ' <<<"$cout"))); failed=$((failed + $(grep -c '^FAIL ' <<<"$cout")))
        grep '^FAIL ' <<<"$cout" | sed "s/^/[debian-package] /" >> "$failures"
        # The real Debian guest (debian_guest): a trixie image with vballoon installed by apt.
        local img
        if img=$(bash "$VB_ROOT/scripts/debian-image.sh" "$kdir" | tail -1) && [ -f "$img/root.img" ]; then
            only+=(--image "$img")
        else
            echo "[test] FAIL debian_guest: building the Debian guest image failed (above)"; failed=$((failed + 1))
            echo "FAIL debian_guest: building the image (scripts/debian-image.sh)" >> "$failures"
        fi
    fi
    for s in "$@"; do only+=(--only "$s"); done
    local tag=debian-${VB_DEBIAN_RELEASE%%+*}
    echo "[test] boot tests on Debian's $VB_DEBIAN_RELEASE ($VB_DEBIAN_SUITE, packaged vmlinuz)"
    boot_tests "$tag" --kdir "$kdir" --module "$module" --kernel "$VB_VMLINUZ" \
        --c-driver "$VB_C_DRIVER" --kernel-modules "$VB_MODULES" --work "$VB_CACHE/run-$tag" \
        --flavor "$tag" \
        --vhost-qemu "$vhost_qemu" "${only[@]}"
}
if [ "$what" = all ] || [ "$what" = debian ]; then
    debian_kernel trixie-backports
    debian_kernel sid "${DEBIAN_BASIC[@]}"
fi
finish
