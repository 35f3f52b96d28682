//! The same balloon over every transport a host may use: transitional (legacy) virtio-pci, and
//! virtio-mmio on QEMU's microvm in both layouts (legacy, QEMU's default there, and modern,
//! Firecracker's). A matrix, test kernel only: inflate/deflate, stats and rmmod, both drivers.

use crate::guest::{Vm, VmOpts, GIB, MIB};
use crate::scenarios::{kernel_module, load, Ctx, Drv, MOVE_TIMEOUT};
use crate::stats::{guest_stats, set_polling, wait_update};
use anyhow::{ensure, Result};
use std::time::Duration;

/// `VIRTIO_F_VERSION_1`: set on modern transports, clear on legacy ones.
const F_VERSION_1: u64 = 1 << 32;

/// Inflate by 512 MiB and back, a stats update, rmmod; MemTotal exact.
fn exercise(vm: &mut Vm, drv: Drv, total0: u64) -> Result<u64> {
    load(vm, drv)?;
    let f = vm.balloon_features()?;
    vm.balloon(1536 * MIB)?;
    vm.wait_actual(1536 * MIB, MOVE_TIMEOUT)?;
    let t = vm.mem_total()?;
    ensure!(
        (total0 - t).abs_diff(512 * MIB) <= total0 / 256,
        "{drv:?}: MemTotal dropped {} MiB for a 512 MiB balloon",
        (total0 - t) / MIB
    );
    let (_, last) = guest_stats(vm)?;
    let (s, _) = wait_update(vm, last, Duration::from_secs(30))?;
    let total = s.get("stat-total-memory").copied().unwrap_or(-1);
    ensure!(
        total == t as i64,
        "{drv:?}: stats total {total} != MemTotal {t}"
    );
    vm.balloon(2 * GIB)?;
    vm.wait_actual(2 * GIB, MOVE_TIMEOUT)?;
    vm.sh(drv.rmmod())?;
    ensure!(vm.mem_total()? == total0, "{drv:?}: MemTotal after rmmod");
    Ok(f)
}

/// One transport: its name, machine type, balloon device, extra QEMU arguments, and whether
/// it is modern (`VERSION_1`).
type Transport = (
    &'static str,
    Option<String>,
    &'static str,
    Vec<String>,
    bool,
);

pub fn transports(ctx: &Ctx) -> Result<()> {
    let microvm = Some("microvm".to_string());
    let matrix: [Transport; 3] = [
        (
            "pci_transitional",
            None,
            "virtio-balloon-pci,id=balloon0,disable-modern=on,disable-legacy=off",
            vec![],
            false,
        ),
        (
            "mmio_legacy",
            microvm.clone(),
            "virtio-balloon-device,id=balloon0",
            vec![],
            false,
        ),
        (
            "mmio_modern",
            microvm,
            "virtio-balloon-device,id=balloon0",
            vec!["-global".into(), "virtio-mmio.force-legacy=false".into()],
            true,
        ),
    ];
    let machine_is_mmio = |name: &str| name.starts_with("mmio");
    for (name, machine, device, extra, modern) in matrix {
        // The debug kernel runs one transport: the modern MMIO layout Firecracker uses.
        if ctx.debug && name != "mmio_modern" {
            continue;
        }
        let opts = VmOpts {
            balloon_device: device.into(),
            machine,
            extra,
            ..VmOpts::default()
        };
        let mut vm = Vm::boot(
            &format!("transport_{name}"),
            ctx.paths,
            ctx.initramfs,
            &opts,
        )?;
        if machine_is_mmio(name) {
            kernel_module(ctx, &mut vm, "virtio_mmio")?;
        }
        set_polling(&mut vm, 1)?;
        let total0 = vm.mem_total()?;
        let ours = exercise(&mut vm, Drv::Rust, total0)?;
        let theirs = if ctx.debug {
            ours
        } else {
            exercise(&mut vm, Drv::C, total0)?
        };
        println!(
            "    {name}: VERSION_1 {}, features vballoon {ours:#x} C {theirs:#x}",
            u8::from(ours & F_VERSION_1 != 0)
        );
        ensure!(
            (ours & F_VERSION_1 != 0) == modern,
            "{name}: VERSION_1 negotiated {} (wanted {modern})",
            ours & F_VERSION_1 != 0
        );
        ensure!(
            ours == theirs,
            "{name}: features differ from the C driver's"
        );
        vm.assert_dmesg_clean()?;
        vm.shutdown()?;
    }
    Ok(())
}
