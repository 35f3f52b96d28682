//! `validate` and `PAGE_POISON` (issue 7): the negotiated features equal the C driver's for
//! every guest setting and device option, and a device that needs `ACCESS_PLATFORM` is refused.

use crate::guest::{Vm, VmOpts, MIB};
use crate::scenarios::{load, Ctx, Drv, MOVE_TIMEOUT};
use anyhow::{ensure, Result};
use std::time::Duration;

const F_PAGE_POISON: u64 = 1 << 4;
const F_REPORTING: u64 = 1 << 5;

/// Loads `drv`, reads the negotiated features, does a small inflate/deflate, unloads.
fn features_and_balloon(vm: &mut Vm, drv: Drv) -> Result<u64> {
    load(vm, drv)?;
    let f = vm.balloon_features()?;
    let size = vm.actual()?;
    vm.balloon(size - 64 * MIB)?;
    vm.wait_actual(size - 64 * MIB, MOVE_TIMEOUT)?;
    vm.balloon(size)?;
    vm.wait_actual(size, MOVE_TIMEOUT)?;
    let (rc, out) = vm.sh_rc(drv.rmmod(), Duration::from_secs(60))?;
    ensure!(rc == 0, "{drv:?}: rmmod: {out}");
    Ok(f)
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
