//! Reboot with a standing target: the driver, loaded at boot by the guest's init, returns the
//! balloon to the host's target without a new command from the host.

use crate::guest::{Vm, VmOpts, GIB, MIB};
use crate::scenarios::{Ctx, Drv, MOVE_TIMEOUT};
use anyhow::{ensure, Result};

/// For vballoon and (test kernel) the C driver: a guest whose init loads it at boot is ballooned to 1 GiB, then reset
/// (QMP `system_reset`); after the reboot the balloon is back at 1 GiB with no new target.
pub fn reboot_reinflates(ctx: &Ctx) -> Result<()> {
    for &drv in ctx.drivers() {
        let opts = VmOpts {
            append: format!("vbload={}", if drv == Drv::Rust { "vballoon" } else { "c" }),
            allow_reset: true,
            ..VmOpts::default()
        };
        let mut vm = Vm::boot(&format!("reboot_{drv:?}"), ctx.paths, ctx.initramfs, &opts)?;
        let total0 = vm.mem_total()?;
        let mods = vm.sh("cat /proc/modules")?;
        ensure!(
            mods.contains(drv.sysfs_name()),
            "{drv:?}: not loaded at boot: {mods}"
        );
        vm.balloon(GIB)?;
        vm.wait_actual(GIB, MOVE_TIMEOUT)?;
        vm.system_reset()?;
        let t = vm.wait_actual(GIB, MOVE_TIMEOUT)?;
        let total = vm.mem_total()?;
        println!(
            "    {drv:?}: back at the 1 GiB target {:.2} s after the reboot's shell came up; MemTotal {} MiB",
            t.as_secs_f64(),
            total / MIB
        );
        ensure!(
            (total0 - total).abs_diff(GIB) <= total0 / 256,
            "{drv:?}: MemTotal after reboot {} MiB",
            total / MIB
        );
        vm.balloon(2 * GIB)?;
        vm.wait_actual(2 * GIB, MOVE_TIMEOUT)?;
        ensure!(vm.mem_total()? == total0, "{drv:?}: MemTotal after deflate");
        vm.assert_dmesg_clean()?;
        vm.shutdown()?;
    }
    Ok(())
}
