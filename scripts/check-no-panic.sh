#!/usr/bin/env bash
# Fails if any function of the vballoon crate itself can panic (calls into core::panicking or
# a slice-index failure): kernel paths must not panic. Generic code of the kernel crate that is
# instantiated in the module is the kernel's own and is not counted.
#   scripts/check-no-panic.sh path/to/vballoon.o
set -euo pipefail
obj=${1:?object file}
hits=$(objdump -dr --no-show-raw-insn "$obj" |
    awk '/^[0-9a-f]+ <.*>:$/{fn=$2} /R_X86_64.*(4core9panicking|slice_index_fail|len_mismatch_fail|unwrap_failed|expect_failed)/{print fn}' |
    sort -u | awk 'match($0, /Cs[A-Za-z0-9]+_[0-9]+[a-z_]+/) && substr($0, RSTART, RLENGTH) ~ /_8vballoon$/' || true)
if [ -n "$hits" ]; then
    echo "[check] functions of vballoon that can panic:" >&2
    echo "$hits" >&2
    exit 1
fi
echo "[check] no panic paths in vballoon's own code" >&2
