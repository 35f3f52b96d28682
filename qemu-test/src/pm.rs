//! Suspend scenarios: the drivers' freeze and restore through a real suspend.
//!
//! Under TCG the guest suspends to idle with `/sys/power/pm_test` at `devices`: the kernel
//! freezes tasks, calls every device's suspend callback (virtio's `freeze`), waits 5 s and
//! resumes (virtio's `restore`, which resets the device), with no wake-up source needed.

use crate::guest::{Vm, GIB, MIB};
use crate::scenarios::{boot, load, Ctx, Drv};
use crate::stats::{guest_stats, set_polling, wait_update};
use anyhow::{ensure, Result};
use std::time::Duration;

/// How long a guest may take to answer a new target after a suspend attempt.
const AFTER_SUSPEND: Duration = Duration::from_secs(90);

/// Tries to suspend the guest; returns the shell's exit code and the new kernel log lines.
pub fn try_suspend(vm: &mut Vm) -> Result<(i32, String)> {
    let before = vm.dmesg()?.lines().count();
    let (rc, _) = vm.sh_rc(
        "echo devices > /sys/power/pm_test && echo freeze > /sys/power/state",
        Duration::from_secs(60),
    )?;
    let log = vm.dmesg()?;
    let new: Vec<&str> = log.lines().skip(before).collect();
    Ok((rc, new.join("\n")))
}

/// After a suspend the balloon must follow a new target, answer stats, and unload.
fn works_after(vm: &mut Vm, drv: Drv, total0: u64) -> Result<()> {
    vm.balloon(1536 * MIB)?;
    let t = vm.wait_actual(1536 * MIB, AFTER_SUSPEND)?;
    println!(
        "    {drv:?}: new target reached {:.2} s after the suspend attempt",
        t.as_secs_f64()
    );
    let (_, last) = guest_stats(vm)?;
    let (s, _) = wait_update(vm, last, Duration::from_secs(30))?;
    let total = s.get("stat-total-memory").copied().unwrap_or(-1);
    ensure!(
        total == vm.mem_total()? as i64,
        "{drv:?}: stats total {total} != MemTotal after the suspend attempt"
    );
    vm.balloon(2 * GIB)?;
    vm.wait_actual(2 * GIB, AFTER_SUSPEND)?;
    let (rc, out) = vm.sh_rc(drv.rmmod(), Duration::from_secs(60))?;
    ensure!(rc == 0, "{drv:?}: rmmod after the suspend attempt: {out}");
    ensure!(
        vm.mem_total()? == total0,
        "{drv:?}: MemTotal not restored after rmmod"
    );
    Ok(())
}

/// With 1 GiB ballooned, suspend and resume (the devices' freeze and restore run): after the
/// resume `query-balloon` returns to the target, MemTotal is right, stats are answered, a new
/// target is followed and rmmod gives everything back. vballoon, then (test kernel) the C
/// driver, in the same boot.
pub fn suspend_resume(ctx: &Ctx) -> Result<()> {
    let mut vm = boot(ctx, "suspend_resume")?;
    let total0 = vm.mem_total()?;
    set_polling(&mut vm, 1)?;
    for &drv in ctx.drivers() {
        load(&mut vm, drv)?;
        vm.balloon(GIB)?;
        vm.wait_actual(GIB, crate::scenarios::MOVE_TIMEOUT)?;
        let inflated = vm.mem_total()?;
        let (rc, log) = try_suspend(&mut vm)?;
        println!("    {drv:?}: suspend and resume exit code {rc}");
        ensure!(
            rc == 0,
            "{drv:?}: the suspend did not go through (rc {rc}):\n{log}"
        );
        if drv == Drv::Rust {
            for line in [
                "suspend: gave back 1024 MiB",
                "resume: returning to the host's target",
            ] {
                ensure!(
                    log.matches(line).count() == 1,
                    "expected one '{line}' line:\n{log}"
                );
            }
        }
        let t = vm.wait_actual(GIB, AFTER_SUSPEND)?;
        println!(
            "    {drv:?}: back at the 1 GiB target {:.2} s after the resume",
            t.as_secs_f64()
        );
        ensure!(
            vm.mem_total()? == inflated,
            "{drv:?}: MemTotal after resume {} MiB, before suspend {} MiB",
            vm.mem_total()? / MIB,
            inflated / MIB
        );
        works_after(&mut vm, drv, total0)?;
    }
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}
