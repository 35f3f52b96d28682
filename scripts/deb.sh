#!/usr/bin/env bash
# Build the Debian package vballoon-dkms_<VERSION>_all.deb with Debian's own tools
# (dpkg-buildpackage, debhelper, dh-dkms) from a clean copy of the sources dkms needs.
#   scripts/deb.sh            prints the .deb's path on its last line
set -euo pipefail
. "$(dirname "$0")/env.sh"
log() { printf '[deb] %s\n' "$*" >&2; }
version=$(<"$VB_ROOT/VERSION")
changelog=$(dpkg-parsechangelog -l "$VB_ROOT/debian/changelog" -S Version)
[ "$changelog" = "$version" ] || { log "ERROR: debian/changelog is at $changelog, VERSION is $version"; exit 1; }
for t in dpkg-buildpackage dh dh_dkms; do
    command -v "$t" >/dev/null || { log "ERROR: $t is missing (scripts/setup.sh installs dpkg-dev, debhelper and dh-dkms)"; exit 1; }
done
out=$VB_ROOT/build/deb
src=$out/vballoon-$version
rm -rf "$out"; mkdir -p "$src"
cp -r "$VB_ROOT/debian" "$VB_ROOT/dkms.conf" "$VB_ROOT/Makefile" "$VB_ROOT/Kbuild" \
    "$VB_ROOT/VERSION" "$VB_ROOT/README.md" "$VB_ROOT/rust" "$src/"
log "dpkg-buildpackage -b in $src"
(cd "$src" && dpkg-buildpackage -us -uc -b) > "$out/build.log" 2>&1 ||
    { tail -30 "$out/build.log" >&2; log "ERROR: dpkg-buildpackage failed (log: $out/build.log)"; exit 1; }
deb=$out/vballoon-dkms_${version}_all.deb
[ -f "$deb" ] || { log "ERROR: no $deb after the build"; exit 1; }
log "built $deb: $(dpkg-deb -c "$deb" | wc -l) entries"
echo "$deb"
