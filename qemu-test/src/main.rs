//! vballoon boot-test harness.
//!
//! `qemu-test test --kernel BZIMAGE --kdir KDIR --module vballoon.ko [--only NAME]` runs the
//! boot scenarios and ends with `N passed, N failed`; `qemu-test demo ...` shows the balloon
//! growing and shrinking live.

mod bench;
mod counters;
mod debian_guest;
mod demo;
mod faults;
mod guest;
mod hint;
mod hostile;
mod hotplug;
mod libvirt;
mod oom;
mod pm;
mod poison;
mod pressure;
mod reboot;
mod reporting;
mod scenarios;
mod soundness;
mod stats;
mod stress;
mod transport;

use anyhow::{bail, Context, Result};
use guest::Paths;
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    mode: String,
    paths: Paths,
    only: Vec<String>,
    /// `debug`: leave out the test-kernel-only matrices and controls.
    flavor: String,
    /// The project's QEMU build with `vhost-user-device-pci` (scripts/qemu.sh).
    vhost_qemu: Option<PathBuf>,
    /// The real Debian guest's image directory (`--image`).
    image: Option<PathBuf>,
    /// `stress`: inflate/deflate cycles and insmod/rmmod cycles.
    cycles: u32,
    loads: u32,
}

fn parse() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_default();
    let (mut kernel, mut kdir, mut module, mut work) = (None, None, None, None);
    let mut c_driver = None;
    let mut image = None;
    let mut kernel_modules = None;
    let mut only = Vec::new();
    let mut flavor = String::from("guest");
    let mut vhost_qemu = None;
    let (mut cycles, mut loads) = (1000, 100);
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--kernel" => kernel = Some(PathBuf::from(val()?)),
            "--kdir" => kdir = Some(PathBuf::from(val()?)),
            "--module" => module = Some(PathBuf::from(val()?)),
            "--c-driver" => c_driver = Some(PathBuf::from(val()?)),
            "--image" => image = Some(PathBuf::from(val()?)),
            "--kernel-modules" => kernel_modules = Some(PathBuf::from(val()?)),
            "--work" => work = Some(PathBuf::from(val()?)),
            "--only" => only.push(val()?),
            "--flavor" => flavor = val()?,
            "--vhost-qemu" => vhost_qemu = Some(PathBuf::from(val()?)),
            "--cycles" => cycles = val()?.parse()?,
            "--loads" => loads = val()?.parse()?,
            _ => bail!("unknown argument {a}"),
        }
    }
    let kdir: PathBuf = kdir.context("--kdir is required")?;
    let paths = Paths {
        kernel: kernel.unwrap_or_else(|| kdir.join("arch/x86/boot/bzImage")),
        // A distribution kernel's headers have no modules: its own virtio_balloon.ko comes
        // from its modules package (scripts/debian-kernel.sh unpacks it).
        c_driver: c_driver.unwrap_or_else(|| kdir.join("drivers/virtio/virtio_balloon.ko")),
        vballoon: module.context("--module is required")?,
        work: work.unwrap_or_else(|| std::env::temp_dir().join("vballoon-qemu-test")),
        kdir,
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
        kernel_modules,
    };
    if !["test", "demo", "bench", "stress"].contains(&mode.as_str()) {
        bail!("usage: qemu-test test|demo|bench|stress --kdir KDIR --module vballoon.ko [--kernel IMG] [--c-driver KO] [--kernel-modules DIR] [--image DIR] [--only NAME] [--cycles N --loads N]");
    }
    Ok(Args {
        mode,
        paths,
        only,
        flavor,
        vhost_qemu,
        image,
        cycles,
        loads,
    })
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("qemu-test: {e:#}");
            std::process::exit(2);
        }
    };
    let (_, accel_text) = guest::pick_accel();
    println!("accelerator: {accel_text}");
    std::fs::create_dir_all(&args.paths.work).ok();
    let initramfs = match guest::build_initramfs(&args.paths) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("qemu-test: building the initramfs: {e:#}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    };
    let ctx = scenarios::Ctx {
        paths: &args.paths,
        initramfs: &initramfs,
        // `debian-*` (Debian's packaged kernels) compare with the C driver as the test kernel does.
        debug: args.flavor == "debug" || args.flavor == "kasan",
        vhost_qemu: args.vhost_qemu.as_deref(),
        image: args.image.as_deref(),
    };
    if args.mode != "test" {
        let r = match args.mode.as_str() {
            "demo" => demo::run(&ctx),
            "stress" => stress::soak(
                &ctx,
                "stress",
                &stress::Soak {
                    cycles: args.cycles,
                    loads: args.loads,
                    seed: stress::Soak::seed(),
                    max_mib: 1024,
                },
            ),
            _ => bench::run(&ctx),
        };
        if let Err(e) = r {
            eprintln!("{} failed: {e:#}", args.mode);
            std::process::exit(1);
        }
        return;
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, f) in scenarios::all() {
        if !args.only.is_empty() && !args.only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        if ctx.debug && scenarios::TEST_KERNEL_ONLY.contains(&name) {
            continue;
        }
        if !ctx.debug && scenarios::DEBUG_KERNEL_ONLY.contains(&name) {
            continue;
        }
        if ctx.image.is_none() && scenarios::IMAGE_ONLY.contains(&name) {
            continue;
        }
        println!("RUN  {name}");
        let start = Instant::now();
        let r = std::panic::catch_unwind(|| f(&ctx));
        let secs = start.elapsed().as_secs_f64();
        match r {
            Ok(Ok(())) => {
                passed += 1;
                println!("PASS {name} ({secs:.1} s)");
            }
            Ok(Err(e)) if e.downcast_ref::<libvirt::Skip>().is_some() => {
                skipped += 1;
                println!("SKIP {name} ({secs:.1} s): {e:#}");
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("FAIL {name} ({secs:.1} s): {e:#}");
            }
            Err(_) => {
                failed += 1;
                println!("FAIL {name} ({secs:.1} s): panicked");
            }
        }
    }
    let retries = guest::boot_retries();
    if retries > 0 {
        println!(
            "boot retries: {retries} (a guest kernel stalled before init; see the BOOT RETRY lines)"
        );
    }
    println!("boot tests: {passed} passed, {failed} failed, {skipped} skipped");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
