//! `validate` and `PAGE_POISON` (issue 7): the negotiated features equal the C driver's for
//! every guest setting and device option, and a device that needs `ACCESS_PLATFORM` is refused.

use crate::guest::{Vm, VmOpts, MIB};
use crate::scenarios::{load, Ctx, Drv, MOVE_TIMEOUT};
use crate::stats::{guest_stats, set_polling, wait_update};
use anyhow::{ensure, Result};
use std::time::Duration;

const F_PAGE_POISON: u64 = 1 << 4;
const F_REPORTING: u64 = 1 << 5;

/// Loads `drv`, reads the negotiated features, does a small inflate/deflate, unloads.
fn features_and_balloon(vm: &mut Vm, drv: Drv) -> Result<u64> {
    Ok(features_balloon_stats(vm, drv, false)?.0)
}

/// As [`features_and_balloon`]; with `stats`, also waits for a stats update (the stats queue
/// is where both sides expect it) and returns the features the host sees.
fn features_balloon_stats(vm: &mut Vm, drv: Drv, stats: bool) -> Result<(u64, Vec<String>)> {
    load(vm, drv)?;
    let f = vm.balloon_features()?;
    let host = if stats {
        vm.host_seen_features()?
    } else {
        Vec::new()
    };
    let size = vm.actual()?;
    vm.balloon(size - 64 * MIB)?;
    vm.wait_actual(size - 64 * MIB, MOVE_TIMEOUT)?;
    vm.balloon(size)?;
    vm.wait_actual(size, MOVE_TIMEOUT)?;
    if stats {
        let (_, last) = guest_stats(vm)?;
        wait_update(vm, last, Duration::from_secs(30))?;
    }
    let (rc, out) = vm.sh_rc(drv.rmmod(), Duration::from_secs(60))?;
    ensure!(rc == 0, "{drv:?}: rmmod: {out}");
    Ok((f, host))
}

/// Issue 8's feature matrix: deflate-on-oom × free-page-hint × free-page-reporting on the
/// device (QEMU always offers stats), among them reporting without hinting (a queue-index
/// hole). One short boot each, both drivers in turn: the negotiated features (guest's sysfs
/// and the host's `x-query-virtio-status`) are the C driver's, and a small inflate/deflate and
/// a stats update work with each.
pub fn feature_matrix(ctx: &Ctx) -> Result<()> {
    let mut rows = Vec::new();
    for oom in ["off", "on"] {
        for hint in ["off", "on"] {
            for reporting in ["off", "on"] {
                let opts = VmOpts {
                    mem_mib: 1024,
                    balloon_device: format!(
                        "virtio-balloon-pci,id=balloon0,deflate-on-oom={oom},free-page-hint={hint},free-page-reporting={reporting}{}",
                        if hint == "on" { ",iothread=iot0" } else { "" }
                    ),
                    extra: if hint == "on" {
                        vec!["-object".into(), "iothread,id=iot0".into()]
                    } else {
                        vec![]
                    },
                    ..VmOpts::default()
                };
                let name = format!("features_oom{oom}_hint{hint}_rep{reporting}");
                let mut vm = Vm::boot(&name, ctx.paths, ctx.initramfs, &opts)?;
                set_polling(&mut vm, 1)?;
                let (ours, ours_host) = features_balloon_stats(&mut vm, Drv::Rust, true)?;
                let (theirs, theirs_host) = features_balloon_stats(&mut vm, Drv::C, true)?;
                rows.push(format!(
                    "deflate-on-oom={oom:<3} free-page-hint={hint:<3} reporting={reporting:<3}: vballoon {ours:#x} C {theirs:#x}; host sees {}",
                    ours_host.join(",")
                ));
                ensure!(
                    ours == theirs,
                    "{name}: vballoon negotiated {ours:#x}, the C driver {theirs:#x}"
                );
                ensure!(
                    ours_host == theirs_host,
                    "{name}: the host sees {ours_host:?} with vballoon, {theirs_host:?} with C"
                );
                vm.assert_dmesg_clean()?;
                vm.shutdown()?;
            }
        }
    }
    for r in rows {
        println!("    {r}");
    }
    Ok(())
}

/// Guest command line × `page-poison` × `free-page-reporting`: one short boot each, both
/// drivers in turn; the negotiated features are the same, and the balloon works.
pub fn poison_matrix(ctx: &Ctx) -> Result<()> {
    let mut rows = Vec::new();
    for append in ["", "page_poison=1", "init_on_free=1"] {
        for poison in ["on", "off"] {
            for reporting in ["on", "off"] {
                let opts = VmOpts {
                    mem_mib: 1024,
                    balloon_device: format!(
                        "virtio-balloon-pci,id=balloon0,page-poison={poison},free-page-reporting={reporting}"
                    ),
                    append: append.into(),
                    ..VmOpts::default()
                };
                let name = format!("poison_{}_{poison}_{reporting}", append.replace('=', ""));
                let mut vm = Vm::boot(&name, ctx.paths, ctx.initramfs, &opts)?;
                let ours = features_and_balloon(&mut vm, Drv::Rust)?;
                let theirs = features_and_balloon(&mut vm, Drv::C)?;
                let bits = |f: u64| {
                    format!(
                        "poison {} reporting {}",
                        u8::from(f & F_PAGE_POISON != 0),
                        u8::from(f & F_REPORTING != 0)
                    )
                };
                rows.push(format!(
                    "{:<15} page-poison={poison:<3} reporting={reporting:<3}: vballoon {} | C {}",
                    if append.is_empty() { "(none)" } else { append },
                    bits(ours),
                    bits(theirs)
                ));
                ensure!(
                    ours == theirs,
                    "{name}: vballoon negotiated {ours:#x}, the C driver {theirs:#x}"
                );
                vm.assert_dmesg_clean()?;
                vm.shutdown()?;
            }
        }
    }
    for r in rows {
        println!("    {r}");
    }
    Ok(())
}

/// A balloon device that needs `VIRTIO_F_ACCESS_PLATFORM` (`iommu_platform=on`): both drivers
/// refuse it at feature negotiation with one clear line, leak nothing, and unload; the guest
/// is fine.
pub fn iommu_platform_refused(ctx: &Ctx) -> Result<()> {
    let opts = VmOpts {
        balloon_device: "virtio-balloon-pci,id=balloon0,iommu_platform=on,disable-legacy=on".into(),
        ..VmOpts::default()
    };
    let mut vm = Vm::boot("iommu_platform_refused", ctx.paths, ctx.initramfs, &opts)?;
    for drv in [Drv::C, Drv::Rust] {
        let before = vm.dmesg()?.matches("device refuses features").count();
        vm.sh(drv.insmod())?;
        let bound = vm.sh(&format!(
            "ls /sys/bus/virtio/drivers/{}/ | grep -c virtio || true",
            drv.sysfs_name()
        ))?;
        ensure!(
            bound.trim() == "0",
            "{drv:?} bound an ACCESS_PLATFORM device"
        );
        let after = vm.dmesg()?.matches("device refuses features").count();
        ensure!(
            after == before + 1,
            "{drv:?}: expected one 'device refuses features' line, got {}",
            after - before
        );
        vm.sh(drv.rmmod())?;
    }
    let out = vm.sh("echo alive")?;
    ensure!(out.contains("alive"), "guest shell");
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}
