//! Boot scenarios: each boots its own guest and asserts what a user would check.

use crate::guest::{Paths, Vm, VmOpts, GIB, MIB};
use anyhow::{ensure, Result};
use std::path::Path;
use std::time::Duration;

/// Which driver a scenario loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drv {
    /// vballoon.ko
    Rust,
    /// The in-tree virtio_balloon.ko
    C,
}

impl Drv {
    pub fn insmod(self) -> &'static str {
        match self {
            Drv::Rust => "insmod /vballoon.ko",
            Drv::C => "insmod /virtio_balloon.ko",
        }
    }
    pub fn rmmod(self) -> &'static str {
        match self {
            Drv::Rust => "rmmod vballoon",
            Drv::C => "rmmod virtio_balloon",
        }
    }
    pub fn sysfs_name(self) -> &'static str {
        match self {
            Drv::Rust => "vballoon",
            Drv::C => "virtio_balloon",
        }
    }
}

pub struct Ctx<'a> {
    pub paths: &'a Paths,
    pub initramfs: &'a Path,
}

/// How long a balloon move of a few GiB may take under TCG.
const MOVE_TIMEOUT: Duration = Duration::from_secs(240);

/// MemTotal may differ from the exact balloon size by one page per 256 (page tables etc.).
fn close(a: u64, b: u64) -> bool {
    a.abs_diff(b) <= b / 256
}

pub fn boot(ctx: &Ctx, name: &str) -> Result<Vm> {
    Vm::boot(name, ctx.paths, ctx.initramfs, &VmOpts::default())
}

fn load(vm: &mut Vm, drv: Drv) -> Result<()> {
    vm.sh(drv.insmod())?;
    // Bound: the device shows up under the driver in sysfs.
    let bound = vm.sh(&format!("ls /sys/bus/virtio/drivers/{}/", drv.sysfs_name()))?;
    ensure!(
        bound.contains("virtio"),
        "{} did not bind the balloon device: {bound}",
        drv.sysfs_name()
    );
    Ok(())
}

/// The module loads, binds the balloon device (and the in-tree driver is not loaded), and the
/// kernel log stays clean.
pub fn module_binds(ctx: &Ctx) -> Result<()> {
    let mut vm = boot(ctx, "module_binds")?;
    let before = vm.sh("cat /proc/modules")?;
    ensure!(
        before.trim().is_empty(),
        "modules loaded before insmod: {before}"
    );
    load(&mut vm, Drv::Rust)?;
    let mods = vm.sh("cat /proc/modules")?;
    ensure!(
        mods.contains("vballoon"),
        "vballoon not in /proc/modules: {mods}"
    );
    ensure!(
        !mods.contains("virtio_balloon"),
        "in-tree driver loaded: {mods}"
    );
    let drv = vm.sh("cat /sys/bus/virtio/devices/*/driver/module/../../../module/vballoon/refcnt 2>/dev/null; readlink /sys/bus/virtio/drivers/vballoon/virtio*/driver")?;
    ensure!(drv.contains("vballoon"), "device driver link: {drv}");
    let log = vm.dmesg()?;
    ensure!(log.contains("vballoon bound"), "no bind message in dmesg");
    vm.assert_dmesg_clean()?;
    vm.sh("rmmod vballoon")?;
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}

/// 2 GiB guest → 1 GiB → 2 GiB: query-balloon and MemTotal follow, both ways.
pub fn inflate_deflate(ctx: &Ctx, drv: Drv) -> Result<()> {
    let mut vm = boot(ctx, &format!("inflate_deflate_{drv:?}"))?;
    let total0 = vm.mem_total()?;
    load(&mut vm, drv)?;
    ensure!(
        vm.actual()? == 2 * GIB,
        "actual before inflating: {} MiB",
        vm.actual()? / MIB
    );
    vm.balloon(GIB)?;
    let t = vm.wait_actual(GIB, MOVE_TIMEOUT)?;
    let total1 = vm.mem_total()?;
    println!(
        "    {drv:?}: inflated 1 GiB in {:.2} s; MemTotal {} -> {} MiB",
        t.as_secs_f64(),
        total0 / MIB,
        total1 / MIB
    );
    ensure!(
        close(total0 - total1, GIB),
        "MemTotal dropped by {} MiB, expected 1024",
        (total0 - total1) / MIB
    );
    vm.balloon(2 * GIB)?;
    let t = vm.wait_actual(2 * GIB, MOVE_TIMEOUT)?;
    let total2 = vm.mem_total()?;
    println!(
        "    {drv:?}: deflated 1 GiB in {:.2} s; MemTotal {} MiB",
        t.as_secs_f64(),
        total2 / MIB
    );
    ensure!(
        total2 == total0,
        "MemTotal after deflate {total2} != before {total0}"
    );
    vm.assert_dmesg_clean()?;
    vm.sh(drv.rmmod())?;
    vm.shutdown()
}

/// The host asks for more than the guest can give: the balloon stops at the floor, the guest
/// keeps working, and deflating recovers everything.
pub fn floor_holds(ctx: &Ctx) -> Result<()> {
    let mut vm = boot(ctx, "floor_holds")?;
    let total0 = vm.mem_total()?;
    load(&mut vm, Drv::Rust)?;
    vm.balloon(16 * MIB)?;
    let settled = vm.wait_actual_settled(Duration::from_secs(4), MOVE_TIMEOUT)?;
    println!(
        "    host asked for 16 MiB; balloon settled with the guest at {} MiB",
        settled / MIB
    );
    ensure!(settled > 16 * MIB, "balloon went all the way to 16 MiB");
    ensure!(
        settled < GIB,
        "balloon barely inflated: guest still {} MiB",
        settled / MIB
    );
    // Still alive and responsive: run a few commands, touch some memory.
    let out = vm.sh("echo alive; ls / | wc -l; dd if=/dev/zero of=/tmp/x bs=1M count=8 2>/dev/null; rm /tmp/x; echo done")?;
    ensure!(
        out.contains("alive") && out.contains("done"),
        "guest shell output: {out}"
    );
    let avail = vm.meminfo_kb("MemAvailable")? * 1024;
    println!("    MemAvailable at the floor: {} MiB", avail / MIB);
    ensure!(
        avail >= 48 * MIB,
        "MemAvailable {} MiB is below the 64 MiB floor by too much",
        avail / MIB
    );
    let log = vm.dmesg()?;
    let n = log.matches("is at the floor").count();
    ensure!(n == 1, "expected exactly one floor message, got {n}");
    vm.balloon(2 * GIB)?;
    vm.wait_actual(2 * GIB, MOVE_TIMEOUT)?;
    let total1 = vm.mem_total()?;
    ensure!(
        total1 == total0,
        "MemTotal after recovery {total1} != {total0}"
    );
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}

/// rmmod while inflated gives every page back; insmod again re-inflates to the standing target.
pub fn rmmod_inflated(ctx: &Ctx) -> Result<()> {
    let mut vm = boot(ctx, "rmmod_inflated")?;
    let total0 = vm.mem_total()?;
    load(&mut vm, Drv::Rust)?;
    vm.balloon(GIB)?;
    vm.wait_actual(GIB, MOVE_TIMEOUT)?;
    vm.sh("rmmod vballoon")?;
    let total1 = vm.mem_total()?;
    ensure!(
        total1 == total0,
        "MemTotal after rmmod {total1} != before insmod {total0}"
    );
    let mods = vm.sh("cat /proc/modules")?;
    ensure!(!mods.contains("vballoon"), "still loaded: {mods}");
    load(&mut vm, Drv::Rust)?;
    vm.wait_actual(GIB, MOVE_TIMEOUT)?;
    let total2 = vm.mem_total()?;
    ensure!(
        close(total0 - total2, GIB),
        "re-inflated MemTotal drop {} MiB",
        (total0 - total2) / MIB
    );
    vm.balloon(2 * GIB)?;
    vm.wait_actual(2 * GIB, MOVE_TIMEOUT)?;
    ensure!(vm.mem_total()? == total0, "MemTotal after final deflate");
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}

/// All scenarios, in order.
pub fn all() -> Vec<(&'static str, fn(&Ctx) -> Result<()>)> {
    vec![
        ("module_binds", module_binds as fn(&Ctx) -> Result<()>),
        ("inflate_deflate_vballoon", |c| {
            inflate_deflate(c, Drv::Rust)
        }),
        ("inflate_deflate_c_driver", |c| inflate_deflate(c, Drv::C)),
        ("floor_holds", floor_holds),
        ("rmmod_inflated", rmmod_inflated),
    ]
}
