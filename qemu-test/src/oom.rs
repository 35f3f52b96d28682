//! Deflate-on-OOM scenarios (issue 7): the guest takes memory back from the balloon instead of
//! killing a process, and does not re-inflate until the host sets a new target.

use crate::guest::{Vm, GIB, MIB};
use crate::scenarios::{boot_with_property, load, Ctx, Drv, MOVE_TIMEOUT};
use anyhow::{ensure, Result};
use std::time::{Duration, Instant};

/// `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`.
const F_DEFLATE_ON_OOM: u64 = 1 << 2;

fn boot(ctx: &Ctx, name: &str, on: bool) -> Result<Vm> {
    boot_with_property(ctx, name, "deflate-on-oom", on)
}

/// With the feature: a 2 GiB guest ballooned to 512 MiB runs a hog that needs 1 GiB; the hog
/// completes, nothing is OOM-killed, the balloon shrank, MemTotal never dropped, `actual`
/// stays where the OOM deflate left it for 10 s, then a new target is followed; rmmod gives
/// everything back. Both drivers, one after the other in the same boot.
pub fn deflate_on_oom(ctx: &Ctx) -> Result<()> {
    let mut vm = boot(ctx, "deflate_on_oom", true)?;
    let total0 = vm.mem_total()?;
    for &drv in ctx.drivers() {
        load(&mut vm, drv)?;
        let f = vm.balloon_features()?;
        ensure!(
            f & F_DEFLATE_ON_OOM != 0,
            "{drv:?}: DEFLATE_ON_OOM not negotiated ({f:#x})"
        );
        vm.balloon(512 * MIB)?;
        vm.wait_actual(512 * MIB, MOVE_TIMEOUT)?;
        ensure!(
            vm.mem_total()? == total0,
            "{drv:?}: MemTotal dropped while inflated with deflate-on-oom"
        );
        let kills0 = oom_kills(&mut vm)?;
        let start = Instant::now();
        let (rc, out) = vm.sh_rc("hog 1024", Duration::from_secs(300))?;
        let after = vm.actual()?;
        println!(
            "    {drv:?}: 1 GiB hog in a 512 MiB guest: exit {rc} after {:.1} s; balloon gave back {} MiB",
            start.elapsed().as_secs_f64(),
            (after - 512 * MIB) / MIB
        );
        ensure!(rc == 0, "{drv:?}: the hog did not complete ({rc}): {out}");
        ensure!(
            oom_kills(&mut vm)? == kills0,
            "{drv:?}: a process was OOM-killed"
        );
        ensure!(after > 512 * MIB, "{drv:?}: the balloon did not shrink");
        ensure!(vm.mem_total()? == total0, "{drv:?}: MemTotal changed");
        // No ping-pong: the balloon stays where the OOM path left it.
        let held = vm.actual()?;
        std::thread::sleep(Duration::from_secs(10));
        let later = vm.actual()?;
        ensure!(
            later == held,
            "{drv:?}: balloon moved without a new target: {} -> {} MiB",
            held / MIB,
            later / MIB
        );
        // A new target is followed again.
        vm.balloon(GIB)?;
        vm.wait_actual(GIB, MOVE_TIMEOUT)?;
        // rmmod with the balloon inflated: everything back.
        let (rc, out) = vm.sh_rc(drv.rmmod(), Duration::from_secs(120))?;
        ensure!(rc == 0, "{drv:?}: rmmod: {out}");
        ensure!(vm.mem_total()? == total0, "{drv:?}: MemTotal after rmmod");
        vm.balloon(2 * GIB)?;
        vm.assert_dmesg_clean()?;
    }
    // Reload works.
    load(&mut vm, Drv::Rust)?;
    vm.sh("rmmod vballoon")?;
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}

/// Without the feature: the balloon holds (the hog is OOM-killed instead) and MemTotal follows
/// the balloon.
pub fn no_deflate_on_oom(ctx: &Ctx) -> Result<()> {
    let mut vm = boot(ctx, "no_deflate_on_oom", false)?;
    let total0 = vm.mem_total()?;
    load(&mut vm, Drv::Rust)?;
    let f = vm.balloon_features()?;
    ensure!(
        f & F_DEFLATE_ON_OOM == 0,
        "DEFLATE_ON_OOM negotiated ({f:#x})"
    );
    vm.balloon(768 * MIB)?;
    vm.wait_actual(768 * MIB, MOVE_TIMEOUT)?;
    let t = vm.mem_total()?;
    ensure!(
        (total0 - t).abs_diff(1280 * MIB) <= total0 / 256,
        "MemTotal did not follow the balloon: {} MiB",
        t / MIB
    );
    let kills0 = oom_kills(&mut vm)?;
    let (rc, _) = vm.sh_rc("hog 1024", Duration::from_secs(300))?;
    println!("    without deflate-on-oom: 1 GiB hog in a 768 MiB guest exits {rc}");
    ensure!(rc != 0, "the hog got 1 GiB in a 768 MiB guest");
    ensure!(oom_kills(&mut vm)? > kills0, "no OOM kill");
    ensure!(vm.actual()? == 768 * MIB, "the balloon moved");
    ensure!(vm.mem_total()? == t, "MemTotal moved");
    vm.sh("rmmod vballoon")?;
    ensure!(vm.mem_total()? == total0, "MemTotal after rmmod");
    vm.assert_no_splats()?;
    vm.shutdown()
}

pub fn oom_kills(vm: &mut Vm) -> Result<u64> {
    let out = vm.sh("grep '^oom_kill ' /proc/vmstat || echo 'oom_kill 0'")?;
    Ok(out
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}
