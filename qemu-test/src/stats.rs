//! Statistics scenarios (issue: stats queue with all 16 tags), against QEMU's `guest-stats`.

use crate::guest::{Vm, VmOpts, GIB, MIB};
use crate::scenarios::{Ctx, Drv};
use anyhow::{anyhow, bail, ensure, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BALLOON: &str = "/machine/peripheral/balloon0";

/// `guest-stats`: the `stats` map (name → value, -1 when unset) and `last-update`.
pub fn guest_stats(vm: &mut Vm) -> Result<(BTreeMap<String, i64>, i64)> {
    let v = vm.qom_get(BALLOON, "guest-stats")?;
    let last = v
        .get("last-update")
        .and_then(Value::as_i64)
        .ok_or_else(|| anyhow!("no last-update in {v}"))?;
    let stats = v
        .get("stats")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("no stats in {v}"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(-1)))
        .collect();
    Ok((stats, last))
}

pub fn set_polling(vm: &mut Vm, secs: u64) -> Result<()> {
    vm.qom_set(BALLOON, "guest-stats-polling-interval", json!(secs))
}

/// Waits until `last-update` moves past `after`; returns the new stats.
pub fn wait_update(
    vm: &mut Vm,
    after: i64,
    timeout: Duration,
) -> Result<(BTreeMap<String, i64>, i64)> {
    let start = Instant::now();
    loop {
        let (s, last) = guest_stats(vm)?;
        if last > after {
            return Ok((s, last));
        }
        if start.elapsed() > timeout {
            bail!("guest-stats last-update stuck at {last} for {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The tags the guest kernel supports: all 16 when it has hugetlb pages (this test kernel
/// has), QEMU's names for them.
pub const ALL_16: [&str; 16] = [
    "stat-swap-in",
    "stat-swap-out",
    "stat-major-faults",
    "stat-minor-faults",
    "stat-free-memory",
    "stat-total-memory",
    "stat-available-memory",
    "stat-disk-caches",
    "stat-htlb-pgalloc",
    "stat-htlb-pgfail",
    "stat-oom-kills",
    "stat-alloc-stalls",
    "stat-async-scans",
    "stat-direct-scans",
    "stat-async-reclaims",
    "stat-direct-reclaims",
];

fn get(s: &BTreeMap<String, i64>, k: &str) -> Result<i64> {
    s.get(k)
        .copied()
        .ok_or_else(|| anyhow!("no {k} in guest-stats: {s:?}"))
}

/// Seconds between `last-update` moves, averaged over `n` moves.
fn update_period(vm: &mut Vm, n: usize) -> Result<f64> {
    let (_, mut last) = guest_stats(vm)?;
    let (_, l) = wait_update(vm, last, Duration::from_secs(60))?;
    last = l;
    let start = Instant::now();
    for _ in 0..n {
        let (_, l) = wait_update(vm, last, Duration::from_secs(60))?;
        last = l;
    }
    Ok(start.elapsed().as_secs_f64() / n as f64)
}

/// The whole stats story against one driver.
pub fn stats_scenario(ctx: &Ctx, drv: Drv) -> Result<()> {
    let opts = VmOpts {
        allow_reset: true,
        ..VmOpts::default()
    };
    let mut vm = Vm::boot(&format!("stats_{drv:?}"), ctx.paths, ctx.initramfs, &opts)?;
    set_polling(&mut vm, 2)?;
    std::thread::sleep(Duration::from_secs(3));
    let (before, last0) = guest_stats(&mut vm)?;
    ensure!(last0 == 0, "last-update {last0} before any driver loaded");
    ensure!(
        before.values().all(|v| *v == -1),
        "stats set before any driver loaded: {before:?}"
    );

    vm.sh(drv.insmod())?;
    let (s, last1) = wait_update(&mut vm, 0, Duration::from_secs(30))?;
    for k in ALL_16 {
        ensure!(get(&s, k)? >= 0, "{k} unset after load: {s:?}");
    }
    let total = vm.mem_total()? as i64;
    ensure!(
        get(&s, "stat-total-memory")? == total,
        "stat-total-memory {} != MemTotal {total}",
        get(&s, "stat-total-memory")?
    );
    let avail = get(&s, "stat-available-memory")?;
    ensure!(
        avail > 0 && avail <= total,
        "stat-available-memory {avail} out of range"
    );
    ensure!(get(&s, "stat-free-memory")? <= total, "free > total");

    // Balloon grows by 512 MiB: free memory drops by about that much.
    let free0 = get(&s, "stat-free-memory")?;
    vm.balloon(2 * GIB - 512 * MIB)?;
    vm.wait_actual(2 * GIB - 512 * MIB, Duration::from_secs(240))?;
    let (_, l) = wait_update(&mut vm, last1, Duration::from_secs(30))?;
    let (s2, last2) = wait_update(&mut vm, l, Duration::from_secs(30))?;
    let free1 = get(&s2, "stat-free-memory")?;
    let drop = free0 - free1;
    println!(
        "    {drv:?}: stat-free-memory dropped by {} MiB for a 512 MiB balloon",
        drop / MIB as i64
    );
    ensure!(
        (drop - 512 * MIB as i64).abs() < 64 * MIB as i64,
        "free dropped by {} MiB, expected ~512",
        drop / MIB as i64
    );
    ensure!(
        get(&s2, "stat-total-memory")? == vm.mem_total()? as i64,
        "total after inflate != MemTotal"
    );

    // A workload that touches memory raises the fault counters.
    let minor0 = get(&s2, "stat-minor-faults")?;
    vm.sh("i=0; while [ $i -lt 20 ]; do cat /proc/meminfo > /dev/null; i=$((i+1)); done; dd if=/dev/zero of=/dev/null bs=4M count=16 2>/dev/null")?;
    let (s3, last3) = wait_update(&mut vm, last2, Duration::from_secs(30))?;
    let minor1 = get(&s3, "stat-minor-faults")?;
    ensure!(
        minor1 > minor0,
        "minor faults did not increase: {minor0} -> {minor1}"
    );

    // The polling interval sets how often the stats move.
    set_polling(&mut vm, 1)?;
    let fast = update_period(&mut vm, 3)?;
    set_polling(&mut vm, 4)?;
    let slow = update_period(&mut vm, 2)?;
    println!("    {drv:?}: update period {fast:.1} s at interval 1, {slow:.1} s at interval 4");
    ensure!(
        fast < 2.0 && slow > 3.0,
        "polling interval had no effect: {fast:.1} s vs {slow:.1} s"
    );
    let _ = last3;

    // After a reset the stats are unset until a driver loads again.
    vm.system_reset()?;
    set_polling(&mut vm, 2)?;
    std::thread::sleep(Duration::from_secs(3));
    let (after, _) = guest_stats(&mut vm)?;
    ensure!(
        after.values().all(|v| *v == -1),
        "stats still set after system_reset: {after:?}"
    );
    vm.sh(drv.insmod())?;
    let (s4, _) = wait_update(&mut vm, 0, Duration::from_secs(30))?;
    ensure!(get(&s4, "stat-total-memory")? > 0, "no stats after reload");
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}

/// The two drivers' stats for the same guest state, side by side: they must agree within noise.
pub fn stats_side_by_side(ctx: &Ctx) -> Result<()> {
    let mut vm = Vm::boot(
        "stats_side_by_side",
        ctx.paths,
        ctx.initramfs,
        &VmOpts::default(),
    )?;
    set_polling(&mut vm, 1)?;
    let read = |vm: &mut Vm, drv: Drv| -> Result<BTreeMap<String, i64>> {
        vm.sh(drv.insmod())?;
        let (_, l) = wait_update(vm, 0, Duration::from_secs(30))?;
        let (s, _) = wait_update(vm, l, Duration::from_secs(30))?;
        vm.sh(drv.rmmod())?;
        Ok(s)
    };
    let c = read(&mut vm, Drv::C)?;
    let r = read(&mut vm, Drv::Rust)?;
    println!(
        "    {:<24} {:>16} {:>16}",
        "guest-stats", "C driver", "vballoon"
    );
    for k in ALL_16 {
        println!("    {:<24} {:>16} {:>16}", k, get(&c, k)?, get(&r, k)?);
    }
    ensure!(
        get(&c, "stat-total-memory")? == get(&r, "stat-total-memory")?,
        "total-memory differs"
    );
    for k in [
        "stat-free-memory",
        "stat-available-memory",
        "stat-disk-caches",
    ] {
        let (a, b) = (get(&c, k)?, get(&r, k)?);
        ensure!(
            (a - b).abs() < 32 * MIB as i64,
            "{k} differs by more than noise: C {a}, vballoon {b}"
        );
    }
    for k in [
        "stat-minor-faults",
        "stat-major-faults",
        "stat-swap-in",
        "stat-swap-out",
        "stat-oom-kills",
        "stat-htlb-pgalloc",
        "stat-htlb-pgfail",
        "stat-alloc-stalls",
    ] {
        ensure!(
            get(&r, k)? >= get(&c, k)?,
            "{k} went backwards between the C run and the vballoon run"
        );
    }
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}
