//! Free page reporting scenarios (issue 7): freed guest memory goes back to the host.

use crate::guest::{Vm, MIB};
use crate::scenarios::{boot_with_property, load, Ctx, Drv};
use anyhow::{bail, ensure, Result};
use std::time::{Duration, Instant};

/// `VIRTIO_BALLOON_F_REPORTING`.
const F_REPORTING: u64 = 1 << 5;

fn boot(ctx: &Ctx, name: &str, on: bool) -> Result<Vm> {
    boot_with_property(ctx, name, "free-page-reporting", on)
}

/// Touches 1 GiB in the guest and frees it; returns QEMU's RSS while the guest held it.
///
/// The peak is read while the hog still holds its memory. Read after the hog exits, it came
/// too late on a slow run: reporting starts 2 s after the free, and a CI run read a "peak"
/// some 240 MiB below the real one, so the fall measured from it missed the 768 MiB asked for
/// although about 1000 MiB went back.
fn touch_and_free(vm: &mut Vm) -> Result<u64> {
    let pid = vm.hog_held(1024, "")?;
    let peak = vm.qemu_rss()?;
    vm.sh(&format!("kill {pid}; wait {pid}; true"))?;
    Ok(peak)
}

/// Waits until QEMU's RSS is at least `drop` below `peak`; returns how long that took.
fn wait_rss_drop(vm: &Vm, peak: u64, drop: u64, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let rss = vm.qemu_rss()?;
        if peak.saturating_sub(rss) >= drop {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!(
                "QEMU RSS fell only {} MiB of the {} MiB needed in {timeout:?}",
                peak.saturating_sub(rss) / MIB,
                drop / MIB
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// With the device's reporting on: a guest process touches and frees 1 GiB and the QEMU
/// process's RSS falls by at least 768 MiB within 60 s (512 MiB on the debug kernel). vballoon, then the C driver in the
/// same boot; then rmmod with reporting registered, and a reload.
pub fn free_page_reporting(ctx: &Ctx) -> Result<()> {
    let mut vm = boot(ctx, "free_page_reporting", true)?;
    let total0 = vm.mem_total()?;
    for &drv in ctx.drivers() {
        load(&mut vm, drv)?;
        let f = vm.balloon_features()?;
        ensure!(
            f & F_REPORTING != 0,
            "{drv:?}: REPORTING not negotiated ({f:#x})"
        );
        let peak = touch_and_free(&mut vm)?;
        // Reporting hands back only whole free 2 MiB blocks. The debug kernel's checkers
        // (kmemleak metadata, KFENCE, lockdep) scatter allocations through the freed memory,
        // so fewer blocks come back whole there: it fell 766 MiB in a 60 s window once, where
        // the test kernel gives back 946-952 MiB. The control below stays under 256 MiB.
        let need = if ctx.debug { 512 * MIB } else { 768 * MIB };
        let t = wait_rss_drop(&vm, peak, need, Duration::from_secs(60))?;
        let rss = vm.qemu_rss()?;
        println!(
            "    {drv:?}: after touching and freeing 1 GiB, QEMU RSS fell {} MiB (from {} MiB) in {:.1} s",
            (peak - rss) / MIB,
            peak / MIB,
            t.as_secs_f64()
        );
        let (rc, out) = vm.sh_rc(drv.rmmod(), Duration::from_secs(60))?;
        ensure!(rc == 0, "{drv:?}: rmmod with reporting registered: {out}");
        ensure!(vm.mem_total()? == total0, "{drv:?}: MemTotal after rmmod");
        vm.assert_dmesg_clean()?;
    }
    load(&mut vm, Drv::Rust)?;
    vm.sh("rmmod vballoon")?;
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}

/// The control: with the device's reporting off, REPORTING is not negotiated and the RSS
/// stays up.
pub fn no_free_page_reporting(ctx: &Ctx) -> Result<()> {
    let mut vm = boot(ctx, "no_free_page_reporting", false)?;
    load(&mut vm, Drv::Rust)?;
    let f = vm.balloon_features()?;
    ensure!(f & F_REPORTING == 0, "REPORTING negotiated ({f:#x})");
    let peak = touch_and_free(&mut vm)?;
    std::thread::sleep(Duration::from_secs(10));
    let rss = vm.qemu_rss()?;
    println!(
        "    reporting off: QEMU RSS {} MiB 10 s after freeing 1 GiB (peak {} MiB)",
        rss / MIB,
        peak / MIB
    );
    ensure!(
        peak.saturating_sub(rss) < 256 * MIB,
        "RSS fell {} MiB without reporting",
        peak.saturating_sub(rss) / MIB
    );
    vm.sh("rmmod vballoon")?;
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}
