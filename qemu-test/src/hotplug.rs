//! QEMU-driven scenarios of issue 9, side by side with the C driver: `device_del` of the
//! balloon in the middle of an inflate and a later `device_add` (ACPI PCI hotplug on the `pc`
//! machine), then 40 targets in one second. vballoon's results are asserted; what happens to
//! the C driver is reported (a hang or an error there is a finding, and every step is bounded).

use crate::guest::{Vm, GIB, MIB};
use crate::scenarios::{assert_ballooned, boot, deflate_exact, load, Ctx, Drv, MOVE_TIMEOUT};
use crate::stress::{Rng, Soak};
use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};

/// How long the guest may take to eject the device after `device_del`.
const EJECT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn hotplug_and_burst(ctx: &Ctx) -> Result<()> {
    for &drv in ctx.drivers() {
        let mut vm = boot(ctx, &format!("hotplug_{drv:?}"))?;
        let total0 = vm.mem_total()?;
        load(&mut vm, drv)?;
        let r = unplug_mid_inflate(&mut vm, drv, total0)
            .and_then(|()| burst(&mut vm, drv, total0))
            .and_then(|()| vm.assert_dmesg_clean());
        match (drv, r) {
            (Drv::Rust, r) => {
                r?;
                vm.shutdown()?;
            }
            (Drv::C, Ok(())) => {
                println!("    C driver: same checks pass");
                vm.shutdown()?;
            }
            // The guest may be wedged: dropping the Vm kills QEMU.
            (Drv::C, Err(e)) => println!("    C driver: {e:#} (finding)"),
        }
    }
    Ok(())
}

fn bound(vm: &mut Vm, drv: Drv) -> Result<bool> {
    let (rc, _) = vm.sh_rc(
        &format!("ls -d /sys/bus/virtio/drivers/{}/virtio*", drv.sysfs_name()),
        Duration::from_secs(10),
    )?;
    Ok(rc == 0)
}

/// Ask for 1 GiB, unplug the device once the balloon has started to move, plug a new one in:
/// the unplug completes, every page is back (MemTotal exact), the loaded driver binds the new
/// device by itself and follows its target.
fn unplug_mid_inflate(vm: &mut Vm, drv: Drv, total0: u64) -> Result<()> {
    vm.balloon(GIB)?;
    vm.wait_actual_change(2 * GIB, Duration::from_secs(30))?;
    let mid = vm.actual()?;
    let took = vm
        .device_del("balloon0", EJECT_TIMEOUT)?
        .with_context(|| format!("device_del: still there after {EJECT_TIMEOUT:?}"))?;
    println!(
        "    {drv:?}: device_del at {} MiB of 1024 inflated: gone after {took:?}",
        (2 * GIB - mid) / MIB
    );
    ensure!(!bound(vm, drv)?, "the driver still has a device");
    ensure!(
        vm.mem_total()? == total0,
        "after device_del MemTotal is {} MiB, was {} MiB",
        vm.mem_total()? / MIB,
        total0 / MIB
    );
    vm.assert_dmesg_clean().context("after device_del")?;
    vm.device_add("virtio-balloon-pci", "balloon0", serde_json::json!({}))?;
    let t = Instant::now();
    while !bound(vm, drv)? {
        ensure!(
            t.elapsed() < EJECT_TIMEOUT,
            "the new device was not bound within {EJECT_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        vm.actual()? == 2 * GIB,
        "new device: actual {} MiB",
        vm.actual()? / MIB
    );
    vm.balloon(1536 * MIB)?;
    vm.wait_actual(1536 * MIB, MOVE_TIMEOUT)
        .context("new device: inflate")?;
    assert_ballooned(vm, total0, 512, "new device")?;
    deflate_exact(vm, total0, "new device")?;
    Ok(())
}

/// 40 random targets between 1 and 2 GiB within one second, then a last one: the balloon
/// ends exactly there, then deflates exactly.
fn burst(vm: &mut Vm, drv: Drv, total0: u64) -> Result<()> {
    let seed = Soak::seed();
    let mut rng = Rng(seed);
    let t = Instant::now();
    for i in 0..40u32 {
        let mib = 1024 + rng.below(1024);
        vm.balloon(mib * MIB)?;
        let due = Duration::from_millis(25 * u64::from(i + 1));
        if let Some(wait) = due.checked_sub(t.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let sent = t.elapsed();
    let last = 1280 * MIB;
    vm.balloon(last)?;
    let took = vm.wait_actual(last, MOVE_TIMEOUT)?;
    println!(
        "    {drv:?}: 40 targets in {sent:?} (VB_SEED={seed}); at the last one {took:?} later"
    );
    assert_ballooned(vm, total0, 768, "after the burst")?;
    deflate_exact(vm, total0, "after the burst")?;
    Ok(())
}
