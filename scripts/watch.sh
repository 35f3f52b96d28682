#!/usr/bin/env bash
# make watch: follow vballoon's counters in a running test guest, one line a second.
#   scripts/watch.sh [FILE]   default: the newest watch.log of any guest the harness started
# The demo's guest always writes them (<cache>/run-demo/demo/watch.log); test guests do when
# the suite runs with VB_WATCH=1. The guest's init reads the sysfs counters under the balloon
# device every second and writes them to its third serial port, a file on the host.
set -euo pipefail
. "$(dirname "$0")/env.sh"
f=${1:-}
if [ -z "$f" ]; then
    echo "[watch] waiting for a guest that writes its counters (make demo, or VB_WATCH=1 make test) ..." >&2
    while :; do
        f=$(ls -t "$VB_CACHE"/run-*/*/watch.log 2>/dev/null | head -1 || true)
        [ -n "$f" ] && break
        sleep 1
    done
fi
echo "[watch] $f" >&2
printf '%9s %-13s %10s %10s %14s %14s %6s %6s %6s %6s %6s\n' uptime state target_mib actual_mib \
    inflated_pages deflated_pages allocf floor oom hostto lasterr
# A new guest in the same directory starts the file again: follow it by name. (A shell loop,
# not awk: mawk reads a pipe in blocks, so lines would show late.)
tail -n +1 -F "$f" 2>/dev/null | while read -r uptime rest; do
    declare -A v=()
    for kv in $rest; do v[${kv%%=*}]=${kv#*=}; done
    if [ "${v[state]:-}" = unbound ]; then
        printf '%9s %-13s\n' "$uptime" "(unbound)"
        continue
    fi
    printf '%9s %-13s %10s %10s %14s %14s %6s %6s %6s %6s %6s\n' "$uptime" "${v[state]:-?}" \
        "${v[target_mib]:-}" "${v[actual_mib]:-}" "${v[inflated_pages]:-}" "${v[deflated_pages]:-}" \
        "${v[alloc_failures]:-}" "${v[floor_episodes]:-}" "${v[oom_deflated_pages]:-}" \
        "${v[host_timeouts]:-}" "${v[last_error]:-}"
    unset v
done
