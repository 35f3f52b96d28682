#!/usr/bin/env bash
# make test / make test-debug: set up, build kernel (cached) and module, run the host unit tests
# and the boot tests. The last line is "N passed, N failed" over both.
set -uo pipefail
. "$(dirname "$0")/env.sh"
flavor=${1:-guest}
shift || true
start=$(date +%s)
bash "$VB_ROOT/scripts/setup.sh" || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
kdir=$(bash "$VB_ROOT/scripts/kernel.sh" "$flavor" | tail -1) || { echo "kernel build failed"; echo "0 passed, 1 failed"; exit 1; }
module=$(bash "$VB_ROOT/scripts/module.sh" --kdir "$kdir" | tail -1) || { echo "module build failed"; echo "0 passed, 1 failed"; exit 1; }
echo "[test] kernel: $kdir"
echo "[test] module: $module"

passed=0; failed=0
echo "[test] host unit tests (cargo test)"
cd "$VB_ROOT"
out=$(cargo test --workspace 2>&1); rc=$?
echo "$out" | grep -E '^test |test result|error' 
while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
    echo "$out" | sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p')
[ $rc = 0 ] || { echo "[test] cargo test failed (exit $rc)"; [ "$failed" -gt 0 ] || failed=$((failed + 1)); }

echo "[test] boot tests ($flavor kernel)"
cargo build -q --release -p qemu-test || { echo "harness build failed"; failed=$((failed + 1)); }
bout=$(mktemp)
"$VB_ROOT/target/release/qemu-test" test --kdir "$kdir" --module "$module" \
    --work "$VB_CACHE/run-$flavor" "$@" | tee "$bout"
read -r bp bf < <(sed -nE 's/^boot tests: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$bout")
if [ -z "${bp:-}" ]; then echo "[test] boot harness did not finish"; failed=$((failed + 1)); else
    passed=$((passed + bp)); failed=$((failed + bf)); fi
rm -f "$bout"
echo "[test] took $(( $(date +%s) - start )) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
