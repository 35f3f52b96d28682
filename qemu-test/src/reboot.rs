//! Reboot with a standing target: the driver, loaded at boot, returns the balloon to the host's
//! target without a new command from the host.
//!
//! vballoon's half also loads it the way an installed system does (issue 11): the initramfs has
//! /lib/modules/<release> with the in-tree driver in `kernel/drivers/virtio/` and vballoon put
//! in `extra/` by the project's installer (`scripts/install.sh --destdir`, which blacklists the
//! in-tree driver and runs depmod). Nobody runs insmod: with `vbload=autoload` the guest's init
//! does what udev or mdev do at coldplug, `modprobe` of every device's modalias (busybox
//! modprobe: modules.alias, modules.dep, the blacklist in /etc/modprobe.d). Both modules carry
//! the balloon device's alias `virtio:d00000005v*`, so only the blacklist keeps the in-tree
//! driver out. The C driver's half loads its module with insmod at boot.

use crate::guest::{Vm, VmOpts, GIB, MIB};
use crate::scenarios::{Ctx, Drv, MOVE_TIMEOUT};
use anyhow::{bail, ensure, Context, Result};

/// The balloon device's alias, which vballoon and the in-tree driver both carry.
const BALLOON_ALIAS: &str = "virtio:d00000005v*";

/// For vballoon (autoloaded) and (test kernel) the C driver (insmod by init): a guest whose
/// driver is loaded at boot is ballooned to 1 GiB, then reset (QMP `system_reset`); after the
/// reboot the driver is loaded again and the balloon is back at 1 GiB with no new target,
/// MemTotal within 1/256 of the first boot's less 1 GiB; deflating then raises MemTotal by
/// exactly 1 GiB (a kernel may come up with a few KiB more or less each boot), dmesg stays clean.
pub fn reboot_reinflates(ctx: &Ctx) -> Result<()> {
    for &drv in ctx.drivers() {
        let autoload = drv == Drv::Rust;
        if autoload {
            installed_on_host(ctx)?;
        }
        let opts = VmOpts {
            append: if autoload {
                "vbload=autoload"
            } else {
                "vbload=c"
            }
            .into(),
            allow_reset: true,
            ..VmOpts::default()
        };
        let mut vm = Vm::boot(&format!("reboot_{drv:?}"), ctx.paths, ctx.initramfs, &opts)?;
        let total0 = vm.mem_total()?;
        loaded_at_boot(&mut vm, drv, "boot")?;
        if autoload {
            modinfo_in_guest(&mut vm, ctx)?;
        }
        vm.balloon(GIB)?;
        vm.wait_actual(GIB, MOVE_TIMEOUT)?;
        let total1 = vm.mem_total()?;
        vm.system_reset()?;
        loaded_at_boot(&mut vm, drv, "reboot")?;
        let t = vm.wait_actual(GIB, MOVE_TIMEOUT)?;
        let total = vm.mem_total()?;
        println!(
            "    {drv:?}: back at the 1 GiB target {:.2} s after the reboot's shell came up; MemTotal {} MiB (before the reset {} MiB)",
            t.as_secs_f64(),
            total / MIB,
            total1 / MIB
        );
        ensure!(
            (total0 - total).abs_diff(GIB) <= total0 / 256,
            "{drv:?}: MemTotal after reboot {} MiB",
            total / MIB
        );
        // A kernel need not come up with the same MemTotal every boot (Debian's moves by a
        // few KiB: 966060 KiB after the reset, 966056 KiB before it, for the C driver), so the
        // exact check is the balloon's own share in this boot: deflated, MemTotal rises by
        // exactly 1 GiB.
        vm.balloon(2 * GIB)?;
        vm.wait_actual(2 * GIB, MOVE_TIMEOUT)?;
        let deflated = vm.mem_total()?;
        ensure!(
            deflated.checked_sub(total) == Some(GIB),
            "{drv:?}: after the reboot the balloon held {} KiB, not 1 GiB (MemTotal {} KiB, {} KiB deflated; {} KiB before the reset)",
            deflated.saturating_sub(total) / 1024,
            total / 1024,
            deflated / 1024,
            total1 / 1024
        );
        vm.assert_dmesg_clean()?;
        vm.shutdown()?;
    }
    Ok(())
}

/// The installer put vballoon into the initramfs tree (else its output says why not).
fn installed_on_host(ctx: &Ctx) -> Result<()> {
    let dir = ctx.paths.guest_modules()?;
    for f in ["extra/vballoon.ko", "modules.dep", "modules.alias"] {
        if !dir.join(f).exists() {
            let log = std::fs::read_to_string(ctx.paths.install_log()).unwrap_or_default();
            bail!(
                "no {} in the initramfs: scripts/install.sh --destdir did not install vballoon:\n{}",
                dir.join(f).display(),
                log.trim()
            );
        }
    }
    Ok(())
}

/// The driver is in /proc/modules and the balloon device (ID 5) is bound to it. Autoloaded
/// (vballoon): the in-tree driver is not loaded, and the coldplug loop's modprobe of the
/// balloon device's modalias is what loaded it.
fn loaded_at_boot(vm: &mut Vm, drv: Drv, when: &str) -> Result<()> {
    let mods = vm.sh("cut -d' ' -f1 /proc/modules")?;
    ensure!(
        mods.lines().any(|m| m == drv.sysfs_name()),
        "{drv:?}: not loaded at {when}: {mods}"
    );
    let dev = vm.sh(
        "for d in /sys/bus/virtio/devices/*; do grep -q 0x0005 $d/device && echo $(basename $d) $(cat $d/modalias) $(readlink $d/driver); done; true",
    )?;
    let mut it = dev.split_whitespace();
    let (name, alias, link) = (it.next(), it.next(), it.next());
    let (Some(name), Some(alias), Some(link)) = (name, alias, link) else {
        bail!("{drv:?}: the balloon device has no driver at {when}: {dev:?}");
    };
    ensure!(
        link.ends_with(&format!("/{}", drv.sysfs_name())),
        "{drv:?}: at {when} the balloon device {name} is bound to {link}"
    );
    if drv != Drv::Rust {
        return Ok(());
    }
    ensure!(
        !mods.lines().any(|m| m == "virtio_balloon"),
        "at {when} the in-tree virtio_balloon was loaded too: {mods}"
    );
    let coldplug = vm.sh("cat /tmp/coldplug")?;
    ensure!(
        coldplug.lines().any(|l| l == format!("0 {alias}")),
        "at {when} the init's modprobe of the balloon's modalias {alias} did not succeed: {coldplug}"
    );
    println!(
        "    autoloaded at {when}: modprobe {alias} (one of {} modaliases) -> {name} bound to vballoon; virtio_balloon not loaded",
        coldplug.lines().count()
    );
    Ok(())
}

/// What the installed module says about itself (busybox `modinfo vballoon`, which finds it
/// through modules.dep), and that both modules were candidates for the balloon's alias, so the
/// blacklist decided.
fn modinfo_in_guest(vm: &mut Vm, ctx: &Ctx) -> Result<()> {
    let vfile = ctx.paths.root.join("VERSION");
    let version = std::fs::read_to_string(&vfile)
        .with_context(|| format!("{}", vfile.display()))?
        .trim()
        .to_string();
    let info = vm.sh("modinfo vballoon")?;
    let fields: Vec<(&str, &str)> = info
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let has = |k: &str, v: &str| fields.iter().any(|&(fk, fv)| fk == k && fv == v);
    ensure!(
        fields
            .iter()
            .any(|&(k, v)| k == "filename" && v.ends_with("/extra/vballoon.ko")),
        "modinfo vballoon: not the installed extra/vballoon.ko:\n{info}"
    );
    ensure!(
        has("version", &version),
        "modinfo vballoon: no version {version} (VERSION):\n{info}"
    );
    ensure!(
        has("alias", BALLOON_ALIAS),
        "modinfo vballoon: no alias {BALLOON_ALIAS}:\n{info}"
    );
    ensure!(
        has("license", "GPL"),
        "modinfo vballoon: license not GPL:\n{info}"
    );
    for p in ["floor_mib", "block_kib", "host_timeout_ms"] {
        let described = fields.iter().any(|&(k, v)| {
            k == "parm"
                && v.strip_prefix(p)
                    .and_then(|d| d.strip_prefix(':'))
                    .is_some_and(|d| !d.trim().is_empty())
        });
        ensure!(
            described,
            "modinfo vballoon: no parm line with a description for {p}:\n{info}"
        );
    }
    let sysfs = vm.sh("cat /sys/module/vballoon/version")?;
    ensure!(
        sysfs.trim() == version,
        "/sys/module/vballoon/version is {:?}, VERSION is {version}",
        sysfs.trim()
    );
    let aliases = vm.sh(&format!(
        "grep -F 'alias {BALLOON_ALIAS} ' /lib/modules/$(uname -r)/modules.alias"
    ))?;
    for m in ["vballoon", "virtio_balloon"] {
        ensure!(
            aliases.lines().any(|l| l.ends_with(&format!(" {m}"))),
            "modules.alias has no {BALLOON_ALIAS} for {m}: {aliases}"
        );
    }
    let blacklist = vm.sh("cat /etc/modprobe.d/*.conf")?;
    ensure!(
        blacklist
            .lines()
            .any(|l| l.split_whitespace().eq(["blacklist", "virtio_balloon"])),
        "no blacklist virtio_balloon in /etc/modprobe.d: {blacklist}"
    );
    println!(
        "    modinfo vballoon: version {version}, alias {BALLOON_ALIAS}, license GPL, parm floor_mib/block_kib/host_timeout_ms described; modules.alias offers both drivers for the alias, modprobe.d blacklists virtio_balloon"
    );
    Ok(())
}
