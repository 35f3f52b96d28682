//! Fault injection on the debug kernel (issue 9), scoped to vballoon: `failslab` and
//! `fail_page_alloc` with the stack-trace filter (`CONFIG_FAULT_INJECTION_STACKTRACE_FILTER`)
//! set to the module area, so only allocations made with vballoon's code on the stack count
//! (vballoon is the only module loaded). `/proc/thread-self/fail-nth` fails the Nth of them in
//! the insmod task: probe (and module init) for N = 1, 2, ... until one goes through; then a
//! probability fails inflate's allocations while the balloon moves.

use crate::guest::{Vm, GIB, MIB};
use crate::scenarios::{assert_ballooned, boot, deflate_exact, load, Ctx, Drv, MOVE_TIMEOUT};
use anyhow::{bail, ensure, Context, Result};
use std::time::{Duration, Instant};

const ATTRS: [&str; 2] = ["failslab", "fail_page_alloc"];
/// What `times` starts at: each injected failure takes one off, so the difference counts them.
const TIMES: u64 = 1_000_000;
/// Where the probe loop gives up: a probe that allocates more than this is a finding itself.
const MAX_N: u32 = 300;
/// The top of x86-64's module area (`MODULES_END`).
const MODULES_END: &str = "0xffffffffff000000";

/// Sets both attributes up: count every allocation whose stack goes through the module area
/// (from the kernel image's `_etext` to `MODULES_END`), whatever its GFP flags or order; inject
/// nothing until told to.
///
/// Except (the reject range) allocations made inside the virtio-pci transport (the `vp_*`
/// functions and what lies between them), which `find_vqs` makes on the driver's behalf: when
/// one in `request_irq` fails, the IRQ core goes on without the IRQ's `/proc` entry and WARNs
/// in `remove_proc_entry` ("name 'smp_affinity'") when the queues are deleted, the same for any
/// virtio driver. `VB_FAULT_TRANSPORT=1` drops the exception to show it.
fn setup(vm: &mut Vm) -> Result<()> {
    let etext = vm.sh("awk '$3 == \"_etext\" { print $1 }' /proc/kallsyms")?;
    let etext = etext.trim();
    ensure!(
        !etext.is_empty() && etext.trim_start_matches('0').len() > 8,
        "no usable _etext in /proc/kallsyms: {etext:?}"
    );
    let (reject_start, reject_end) = if std::env::var("VB_FAULT_TRANSPORT").as_deref() == Ok("1") {
        ("0".to_string(), "0".to_string())
    } else {
        let vp =
            vm.sh("grep -E ' [tT] vp_' /proc/kallsyms | sort | sed -n '1p;$p' | cut -d' ' -f1")?;
        let v: Vec<u64> = vp
            .split_whitespace()
            .filter_map(|a| u64::from_str_radix(a, 16).ok())
            .collect();
        ensure!(v.len() == 2, "no vp_* symbols in /proc/kallsyms: {vp:?}");
        // The last vp_ function is shorter than a page.
        (format!("{:#x}", v[0]), format!("{:#x}", v[1] + 0x1000))
    };
    for a in ATTRS {
        let mut cmd = format!(
            "cd /sys/kernel/debug/{a} && echo 0 > probability && echo 1 > interval && \
             echo {TIMES} > times && echo 0 > verbose && echo N > ignore-gfp-wait && \
             echo 32 > stacktrace-depth && echo 0x{etext} > require-start && \
             echo {MODULES_END} > require-end && echo {reject_start} > reject-start && \
             echo {reject_end} > reject-end"
        );
        if a == "fail_page_alloc" {
            cmd.push_str(" && echo N > ignore-gfp-highmem && echo 0 > min-order");
        }
        vm.sh(&cmd).with_context(|| {
            format!("setting up {a} (CONFIG_FAULT_INJECTION_STACKTRACE_FILTER?)")
        })?;
    }
    Ok(())
}

/// How many failures both attributes have injected since [`setup`].
fn injected(vm: &mut Vm) -> Result<u64> {
    let mut n = 0;
    for a in ATTRS {
        let left: u64 = vm
            .sh(&format!("cat /sys/kernel/debug/{a}/times"))?
            .trim()
            .parse()
            .context("times")?;
        n += TIMES - left;
    }
    Ok(n)
}

fn set_probability(vm: &mut Vm, percent: u32) -> Result<()> {
    for a in ATTRS {
        vm.sh(&format!(
            "echo {percent} > /sys/kernel/debug/{a}/probability"
        ))?;
    }
    Ok(())
}

fn bound(vm: &mut Vm) -> Result<bool> {
    Ok(vm
        .sh_rc(
            "ls -d /sys/bus/virtio/drivers/vballoon/virtio*",
            Duration::from_secs(10),
        )?
        .0
        == 0)
}

pub fn fault_injection(ctx: &Ctx) -> Result<()> {
    let mut vm = boot(ctx, "fault_injection")?;
    let total0 = vm.mem_total()?;
    setup(&mut vm)?;
    // Leaks are judged on what happens from here on.
    vm.sh("echo scan > /sys/kernel/debug/kmemleak; echo clear > /sys/kernel/debug/kmemleak")?;
    let n = probe_failures(&mut vm, total0)?;
    inflate_under_failures(&mut vm, total0)?;
    vm.sh("rmmod vballoon")?;
    ensure!(vm.mem_total()? == total0, "rmmod: MemTotal not back");
    ensure!(
        vm.sh("cat /proc/modules")?.trim().is_empty(),
        "a module is still loaded"
    );
    vm.assert_no_splats()?;
    kmemleak_clean(&mut vm)?;
    println!("    fault injection: {n} allocations of insmod + probe, every failure unwound, kmemleak clean");
    vm.shutdown()
}

/// One try of [`probe_failures`], in one shell round trip (the debug guest answers each in tens
/// of ms, and there are a few hundred tries): the injected-failure counts around an insmod with
/// fail-nth set to `n`, whether it bound, and an rmmod (the loop may come back to a lower N).
struct Try {
    /// Failures injected by this try.
    hit: u64,
    /// insmod's exit status and output.
    rc: i32,
    out: String,
    bound: bool,
    /// Loaded after insmod; rmmod's exit status (0 if not run) and output; loaded after it.
    loaded: bool,
    rmmod_rc: i32,
    rmmod_out: String,
    still_loaded: bool,
    mem_total: u64,
    /// The failure was absorbed by the counters' files, which `ready` adds after the probe
    /// (the driver said "no counters in sysfs"): every later allocation is made in `ready`.
    in_ready: bool,
}

fn try_nth(vm: &mut Vm, n: u32) -> Result<Try> {
    let times = ATTRS
        .iter()
        .map(|a| format!("/sys/kernel/debug/{a}/times"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = vm.sh(&format!(
        "o0=$(dmesg | grep -c 'no counters in sysfs'); set -- $(cat {times}); t0=$(($1 + $2)); \
         sh -c 'echo {n} > /proc/thread-self/fail-nth && exec insmod /vballoon.ko' > /tmp/try.out 2>&1; rc=$?; \
         set -- $(cat {times}); h=$((t0 - $1 - $2)); \
         b=0; ls -d /sys/bus/virtio/drivers/vballoon/virtio* > /dev/null 2>&1 && b=1; \
         l=0; grep -q '^vballoon ' /proc/modules && l=1; \
         rr=0; : > /tmp/rmmod.out; if [ $l = 1 ]; then rmmod vballoon > /tmp/rmmod.out 2>&1; rr=$?; fi; \
         l2=0; grep -q '^vballoon ' /proc/modules && l2=1; \
         o=$(( $(dmesg | grep -c 'no counters in sysfs') - o0 )); \
         echo \"TRY $h $rc $b $l $rr $l2 $(awk '/^MemTotal:/ {{ print $2 }}' /proc/meminfo) $o\"; \
         cat /tmp/try.out; echo __RMMOD__; cat /tmp/rmmod.out"
    ))?;
    let (head, rest) = out
        .split_once('\n')
        .with_context(|| format!("N={n}: no answer: {out}"))?;
    let f: Vec<i64> = head
        .strip_prefix("TRY ")
        .with_context(|| format!("N={n}: {out}"))?
        .split_whitespace()
        .map(|v| v.parse().context("a field of the try"))
        .collect::<Result<_>>()?;
    ensure!(f.len() == 8, "N={n}: {head}");
    let (ins, rm) = rest.split_once("__RMMOD__").unwrap_or((rest, ""));
    Ok(Try {
        hit: u64::try_from(f[0]).context("injected count went down")?,
        rc: f[1] as i32,
        out: ins.trim().to_string(),
        bound: f[2] == 1,
        loaded: f[3] == 1,
        rmmod_rc: f[4] as i32,
        rmmod_out: rm.trim().to_string(),
        still_loaded: f[5] == 1,
        mem_total: f[6] as u64 * 1024,
        in_ready: f[7] > 0,
    })
}

/// Past the probe, in `ready`, every [`SAMPLE_STRIDE`]th N is tried.
const SAMPLE_STRIDE: u32 = 4;

/// fail-nth for N = 1, 2, ...: each failed insmod or probe leaves nothing behind (the module
/// unloads, MemTotal is exact), the next try starts clean; returns how many allocations insmod
/// and probe make.
///
/// Every N is tried up to the first failure absorbed by the counters' files (added in `ready`,
/// after the probe has succeeded: the driver logs "no counters in sysfs"); from there on, in
/// `ready`, where every failure is absorbed by design (the balloon works without its files),
/// every [`SAMPLE_STRIDE`]th N. Should a sampled try be anything but absorbed, the N skipped
/// on the way are tried one by one.
fn probe_failures(vm: &mut Vm, total0: u64) -> Result<u32> {
    let (mut insmod_failed, mut probe_failed, mut absorbed) = (0, 0, 0);
    let mut tried = std::collections::BTreeSet::new();
    let (mut n, mut stride, mut in_ready) = (1u32, 1u32, false);
    // While back-filling, every N up to this one is tried, whatever they show.
    let (mut backfill_to, mut backfills) = (0u32, 0u32);
    while n <= MAX_N {
        let t = try_nth(vm, n)?;
        let absorbed_now = t.hit == 1 && t.rc == 0 && t.bound;
        if stride > 1 && !absorbed_now {
            // Something else lies within the stride: back to the first N skipped, and every
            // N through this one (which is then tried and checked again) one by one.
            backfill_to = n;
            backfills += 1;
            n = n + 1 - stride;
            stride = 1;
            continue;
        }
        let first = tried.insert(n);
        if t.hit == 0 {
            ensure!(
                t.rc == 0 && t.bound,
                "N={n}: nothing injected, yet insmod exited {} and bound={}: {}",
                t.rc,
                t.bound,
                t.out
            );
            println!(
                "    insmod + probe make {} allocations; failing each of {} of them (in `ready`, \
                 every {SAMPLE_STRIDE}th): insmod failed {insmod_failed}x, probe failed \
                 {probe_failed}x, absorbed (bound anyway) {absorbed}x; back-filled a stride \
                 {backfills}x",
                n - 1,
                tried.len() - 1
            );
            return Ok(n - 1);
        }
        ensure!(
            t.hit == 1,
            "N={n}: {} failures injected for one fail-nth",
            t.hit
        );
        if first {
            match (t.rc == 0, t.bound) {
                (false, _) => insmod_failed += 1,
                (true, false) => probe_failed += 1,
                (true, true) => absorbed += 1,
            }
        }
        if t.loaded {
            ensure!(
                t.rmmod_rc == 0,
                "N={n}: rmmod after a failed probe: {}",
                t.rmmod_out
            );
        }
        ensure!(!t.still_loaded, "N={n}: the module did not unload");
        ensure!(
            t.mem_total == total0,
            "N={n}: MemTotal {} MiB, started at {} MiB",
            t.mem_total / MIB,
            total0 / MIB
        );
        in_ready |= t.in_ready;
        if in_ready && absorbed_now && n >= backfill_to {
            stride = SAMPLE_STRIDE;
        }
        n += stride;
    }
    bail!("probe still failing after {MAX_N} injected allocation failures")
}

/// Inflate 1 GiB while a fifth of vballoon's allocations fail; the balloon keeps going where it
/// can, and reaches the target exactly once the failures stop. Then back to 0.
fn inflate_under_failures(vm: &mut Vm, total0: u64) -> Result<()> {
    if !bound(vm)? {
        load(vm, Drv::Rust)?;
    }
    let before = injected(vm)?;
    let c0 = crate::counters::Counters::read(vm)?;
    set_probability(vm, 20)?;
    vm.balloon(GIB)?;
    std::thread::sleep(Duration::from_secs(8));
    let during = vm.actual()?;
    let faults = injected(vm)? - before;
    set_probability(vm, 0)?;
    let t = Instant::now();
    vm.wait_actual(GIB, MOVE_TIMEOUT)
        .context("after the failures stopped")?;
    println!(
        "    inflate under 20% allocation failures: {faults} injected in 8 s, {} KiB of 1 GiB \
         inflated meanwhile (each retry, 200 ms apart, posts what it got); the rest {:?} after \
         they stopped",
        (2 * GIB - during) / 1024,
        t.elapsed()
    );
    ensure!(faults > 0, "no failure was injected while inflating");
    // The counters say what happened, and nothing else: allocation failures, and exactly the
    // pages that went in.
    let c1 = crate::counters::Counters::read(vm)?;
    println!("    counters: {}", c1.line());
    ensure!(
        c1.delta(&c0, "alloc_failures")? >= 1,
        "alloc_failures did not rise: {}",
        c1.line()
    );
    ensure!(
        c1.delta(&c0, "inflated_pages")? == 1024 * crate::counters::PAGES_PER_MIB as i64,
        "inflated_pages rose by {}",
        c1.delta(&c0, "inflated_pages")?
    );
    let changed = c1.changed_besides(
        &c0,
        &[
            "alloc_failures",
            "inflated_pages",
            "inflate_steps",
            "held_pages",
            "actual_mib",
            "target_pages",
            "target_mib",
            "config_changes",
            "last_config_change_ms",
            "stats_requests",
            "state",
        ],
    );
    ensure!(
        changed.is_empty(),
        "counters changed that allocation failures should not change: {changed:?}"
    );
    ensure!(c1.state() == "at_target", "state {:?}", c1.state());
    assert_ballooned(vm, total0, 1024, "inflate under failures")?;
    deflate_exact(vm, total0, "inflate under failures")?;
    Ok(())
}

/// Nothing allocated since the `clear` is unreferenced (two scans, past kmemleak's minimum
/// object age). The module is unloaded by now, so a leak's backtrace cannot be told by its
/// `[vballoon]` symbols: any report fails.
fn kmemleak_clean(vm: &mut Vm) -> Result<()> {
    std::thread::sleep(Duration::from_secs(6));
    let report = vm.sh(
        "echo scan > /sys/kernel/debug/kmemleak; echo scan > /sys/kernel/debug/kmemleak; \
         cat /sys/kernel/debug/kmemleak",
    )?;
    ensure!(
        !report.contains("unreferenced object"),
        "kmemleak after the failed probes:\n{report}"
    );
    Ok(())
}
