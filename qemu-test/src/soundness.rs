//! Soundness round 2 (issue 17): teardown with pages under migration, shutdown with work in
//! flight, and `poison_val` after a resume.

use crate::guest::{Vm, VmOpts, GIB, MIB, SPLATS};
use crate::hostile::{boot_vhost, boot_vhost_beside};
use crate::pm::try_suspend;
use crate::scenarios::{load, Ctx, Drv, MOVE_TIMEOUT};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::time::{Duration, Instant};

/// The driver's `host_timeout_ms` where the host stops answering.
const LIMIT_MS: u64 = 1000;
/// Guest RAM of the vhost-user guests.
const GUEST_MIB: u64 = 2048;
/// What the guest's free pages hold with `page_poison=1` (`PAGE_POISON`), as `poison_val`.
const POISON: u64 = 0xaaaa_aaaa;

/// A counter of /proc/vmstat, with the per-CPU deltas folded in first (`vm.stat_refresh`):
/// read straight after a change, the global value can be off by a CPU's batch.
fn vmstat(vm: &mut Vm, key: &str) -> Result<u64> {
    let out = vm.sh(&format!(
        "echo 1 > /proc/sys/vm/stat_refresh; grep '^{key} ' /proc/vmstat"
    ))?;
    out.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no {key} in /proc/vmstat: {out}"))
}

/// Runs `cmd` in the guest's background and waits up to `bound` for it to finish; returns its
/// exit code and how long it took, or `None` if it is still running.
fn bounded(vm: &mut Vm, cmd: &str, bound: Duration) -> Result<Option<(i32, Duration)>> {
    vm.sh(&format!(
        "rm -f /tmp/bounded.rc; ( {cmd}; echo $? > /tmp/bounded.rc.new; mv /tmp/bounded.rc.new /tmp/bounded.rc ) >/dev/null 2>&1 &"
    ))?;
    let t = Instant::now();
    loop {
        let (rc, out) = vm.sh_rc("cat /tmp/bounded.rc", Duration::from_secs(30))?;
        if rc == 0 {
            let code = out.trim().parse().unwrap_or(-1);
            return Ok(Some((code, t.elapsed())));
        }
        if t.elapsed() > bound {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Item 1 and 2: `rmmod` with 1 GiB in the balloon and a host that stopped answering, while
/// two guest loops run compaction without pause. Teardown cannot tell the host, so the pages
/// are freed after the device reset, each page that compaction holds isolated at that moment
/// waited for. After each rmmod MemTotal is exact and mm counts no balloon page
/// (`nr_balloon_pages`): a page isolated during the drain and put back into a list that was
/// already freed stays counted (and is a use-after-free). Repeated `VB_TEARDOWN_REPS` times
/// (3 on the test kernel, 1 on the debug kernel; `make stress` runs more).
pub fn teardown_compaction(ctx: &Ctx) -> Result<()> {
    let reps: u32 = match std::env::var("VB_TEARDOWN_REPS") {
        Ok(v) => v.parse().context("VB_TEARDOWN_REPS")?,
        Err(_) if ctx.debug => 1,
        Err(_) => 3,
    };
    let (mut vm, host) = boot_vhost(ctx, "teardown_compaction", GUEST_MIB, "", "stats", 128)?;
    let start = vm.mem_total()?;
    ensure!(
        vmstat(&mut vm, "nr_balloon_pages")? == 0,
        "balloon pages before any driver loaded"
    );
    vm.sh(
        "rm -f /tmp/compact.pids; for i in 1 2; do ( while :; do echo 1 > /proc/sys/vm/compact_memory; done ) >/dev/null 2>&1 & echo $! >> /tmp/compact.pids; done",
    )?;
    let migrated0 = vmstat(&mut vm, "balloon_migrate")?;
    let mut freed_lines = 0;
    for rep in 1..=reps {
        host.mode("normal")?;
        host.target_mib(0)?;
        vm.sh(&format!("insmod /vballoon.ko host_timeout_ms={LIMIT_MS}"))?;
        host.target_mib(1024)?;
        // The host's `actual` is the last one written, maybe by the previous binding: wait
        // for the host's own count of ballooned PFNs too.
        let t = Instant::now();
        while num(&host.query()?, "ballooned")? != 1024 * 256 || host.actual_mib()? != 1024 {
            ensure!(
                t.elapsed() < MOVE_TIMEOUT,
                "rep {rep}: the balloon did not reach 1 GiB under compaction: {}",
                host.query()?
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The host stops answering with a bigger target asked for: a transfer is in flight.
        host.mode("never-ack")?;
        host.target_mib(1280)?;
        std::thread::sleep(Duration::from_millis(LIMIT_MS + 500));
        let before = vm.dmesg()?.lines().count();
        let Some((rc, took)) = bounded(&mut vm, "rmmod vballoon", Duration::from_secs(120))? else {
            bail!(
                "rep {rep}: rmmod with a silent host and compaction running did not finish in 120 s; console:\n{}",
                vm.console_tail(40)
            );
        };
        ensure!(rc == 0, "rep {rep}: rmmod failed ({rc})");
        let log = vm.dmesg()?;
        let new: Vec<&str> = log.lines().skip(before).collect();
        freed_lines += new
            .iter()
            .filter(|l| l.contains("left in the balloon at teardown"))
            .count();
        let total = vm.mem_total()?;
        let pages = vmstat(&mut vm, "nr_balloon_pages")?;
        println!(
            "    rep {rep}: rmmod took {:.2} s; MemTotal {} KiB of {} KiB, nr_balloon_pages {pages}",
            took.as_secs_f64(),
            total / 1024,
            start / 1024
        );
        ensure!(
            total == start && pages == 0,
            "rep {rep}: after rmmod MemTotal is {} KiB (started at {} KiB) and mm counts {pages} balloon pages:\n{}",
            total / 1024,
            start / 1024,
            new.join("\n")
        );
        vm.assert_dmesg_clean()
            .with_context(|| format!("rep {rep}"))?;
    }
    let migrated = vmstat(&mut vm, "balloon_migrate")? - migrated0;
    vm.sh("kill $(cat /tmp/compact.pids); true")?;
    println!(
        "    {reps} rmmods with a silent host under compaction: each freed the balloon after the reset ({freed_lines} 'left in the balloon' lines), {migrated} balloon pages migrated meanwhile"
    );
    ensure!(
        freed_lines == reps as usize,
        "wanted one 'left in the balloon at teardown' line per rmmod, saw {freed_lines}"
    );
    vm.shutdown()
}

/// Item 3: `poweroff -f` with an inflate in flight, reporting registered and a report likely
/// under way, and the hint queue set up: the driver's `.shutdown` stops its work first, the
/// machine goes down (QEMU exits by itself), the console has no error, warning or "stopped
/// taking buffers" line, and nothing of the driver's after its shutdown line. vballoon, then
/// (test kernel) the C driver, whose console is reported.
pub fn shutdown_clean(ctx: &Ctx) -> Result<()> {
    for &drv in ctx.drivers() {
        let opts = VmOpts {
            balloon_device:
                "virtio-balloon-pci,id=balloon0,free-page-reporting=on,free-page-hint=on,iothread=iot0"
                    .into(),
            extra: vec!["-object".into(), "iothread,id=iot0".into()],
            ..VmOpts::default()
        };
        let mut vm = Vm::boot(
            &format!("shutdown_clean_{drv:?}"),
            ctx.paths,
            ctx.initramfs,
            &opts,
        )?;
        load(&mut vm, drv)?;
        vm.balloon(GIB)?;
        vm.wait_actual(GIB, MOVE_TIMEOUT)?;
        // Free pages for reporting (its work runs 2 s after they come free), then a bigger
        // target, then down while both are under way.
        let pid = vm.hog_held(256, "")?;
        vm.sh(&format!("kill {pid}; wait {pid}; true"))?;
        std::thread::sleep(Duration::from_millis(1900));
        vm.balloon(512 * MIB)?;
        std::thread::sleep(Duration::from_millis(200));
        let console = vm.console.clone();
        let Some(took) = vm.poweroff(Duration::from_secs(60))? else {
            bail!(
                "{drv:?}: the guest did not power off within 60 s; console:\n{}",
                tail(&console, 40)
            );
        };
        let log = std::fs::read_to_string(&console)?;
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| {
                SPLATS.iter().any(|p| l.contains(p))
                    || l.contains("Call Trace")
                    || l.contains("stopped taking buffers")
                    || l.contains("has not used")
            })
            .collect();
        let down = log.lines().position(|l| l.contains("reboot: Power down"));
        if drv == Drv::C {
            println!(
                "    C driver: powered off in {:.2} s; console {}",
                took.as_secs_f64(),
                if bad.is_empty() {
                    "clean".to_string()
                } else {
                    format!("has {} error lines (reported, not asserted)", bad.len())
                }
            );
            continue;
        }
        let ours = log
            .lines()
            .position(|l| l.contains("vballoon") && l.contains("shutdown: stopped with"));
        let (Some(ours), Some(down)) = (ours, down) else {
            bail!(
                "vballoon: no 'shutdown: stopped with' line followed by 'reboot: Power down' on the console:\n{}",
                tail(&console, 40)
            );
        };
        let after: Vec<&str> = log
            .lines()
            .skip(ours + 1)
            .filter(|l| l.contains("vballoon"))
            .collect();
        println!(
            "    vballoon: powered off in {:.2} s; {}",
            took.as_secs_f64(),
            log.lines().nth(ours).unwrap_or_default().trim()
        );
        ensure!(
            bad.is_empty() && after.is_empty() && ours < down,
            "vballoon at poweroff: error lines {bad:?}; driver lines after its shutdown {after:?}"
        );
    }
    Ok(())
}

fn tail(path: &std::path::Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Item 4: with `page_poison=1`, PAGE_POISON and free page reporting, suspend and resume:
/// the device forgot `poison_val` at its reset (the host, which sees every config write,
/// zeroes it then as QEMU's device does), so the driver must write it again before the device
/// goes live, or the host discards reported pages that should hold the poison and the kernel
/// finds zeros where it poisoned (`pagealloc: memory corruption`) when it allocates them
/// again. After the resume 1 GiB is touched, freed (reported), and touched again. vballoon is
/// asserted; the C driver's half in its own boot (test kernel) is reported.
pub fn poison_resume(ctx: &Ctx) -> Result<()> {
    for &drv in ctx.drivers() {
        let (mut vm, host) = boot_vhost(
            ctx,
            &format!("poison_resume_{drv:?}"),
            GUEST_MIB,
            "page_poison=1",
            "stats,reporting,poison",
            128,
        )?;
        load(&mut vm, drv)?;
        let q = host.query()?;
        ensure!(
            num(&q, "poison_val")? == POISON,
            "{drv:?}: poison_val after probe is {:#x}: {q}",
            num(&q, "poison_val")?
        );
        host.target_mib(256)?;
        host.wait_actual(256, MOVE_TIMEOUT)?;
        let writes0 = num(&q, "poison_writes")?;
        let resets0 = num(&host.query()?, "resets")?;
        let (rc, log) = try_suspend(&mut vm)?;
        ensure!(rc == 0, "{drv:?}: the suspend did not go through:\n{log}");
        host.wait_actual(256, MOVE_TIMEOUT)
            .with_context(|| format!("{drv:?}: back at the target after the resume"))?;
        let q = host.query()?;
        let (val, writes) = (num(&q, "poison_val")?, num(&q, "poison_writes")? - writes0);
        ensure!(
            num(&q, "resets")? > resets0,
            "{drv:?}: the host saw no device reset across the suspend: {q}"
        );
        // Free, report, touch again.
        let reported0 = num(&q, "reported_bytes")?;
        let pid = vm.hog_held(1024, "")?;
        vm.sh(&format!("kill {pid}; wait {pid}; true"))?;
        let t = Instant::now();
        while num(&host.query()?, "reported_bytes")? - reported0 < 512 * MIB {
            ensure!(
                t.elapsed() < Duration::from_secs(60),
                "{drv:?}: less than 512 MiB reported within 60 s of the free"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let reported = (num(&host.query()?, "reported_bytes")? - reported0) / MIB;
        let pid = vm.hog_held(1024, "")?;
        vm.sh(&format!("kill {pid}; wait {pid}; true"))?;
        let corrupt = vm
            .dmesg()?
            .lines()
            .filter(|l| l.contains("pagealloc: memory corruption"))
            .count();
        let discarded = num(&host.query()?, "discarded_pages")?;
        println!(
            "    {drv:?}: after the resume poison_val {val:#x} ({writes} write(s) since the suspend); {reported} MiB reported, {discarded} pages discarded by the host; {corrupt} 'memory corruption' lines"
        );
        if drv == Drv::C {
            continue;
        }
        ensure!(
            val == POISON && writes >= 1,
            "vballoon did not write poison_val again after the resume ({val:#x}, {writes} writes)"
        );
        ensure!(corrupt == 0, "vballoon: the kernel found corrupted poison");
        let (rc, out) = vm.sh_rc(drv.rmmod(), Duration::from_secs(60))?;
        ensure!(rc == 0, "rmmod: {out}");
        vm.assert_dmesg_clean()?;
        host.assert_protocol_clean()?;
        vm.shutdown()?;
    }
    Ok(())
}

/// Two balloon devices in one guest: QEMU's `virtio-balloon-pci` and the vhost-user one, both
/// offering free page reporting. Both bind and balloon (MemTotal falls by the sum of their
/// targets), each has its view in `/sys/kernel/debug/vballoon/`, and the kernel, which takes
/// one page-reporting device, leaves the second working without reporting with one line that
/// says so. Unbinding one leaves the other's view readable; binding it again brings its view
/// and its balloon back; rmmod gives everything back and removes the directory.
pub fn two_devices(ctx: &Ctx) -> Result<()> {
    let (mut vm, host) = boot_vhost_beside(
        ctx,
        "two_devices",
        GUEST_MIB,
        "",
        "stats,reporting",
        128,
        "virtio-balloon-pci,id=qballoon,free-page-reporting=on",
    )?;
    let start = vm.mem_total()?;
    load(&mut vm, Drv::Rust)?;
    let list = |vm: &mut Vm, dir: &str| -> Result<Vec<String>> {
        Ok(vm
            .sh(&format!(
                "ls {dir} 2>/dev/null | grep '^virtio' | sort; true"
            ))?
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    };
    let bound = list(&mut vm, "/sys/bus/virtio/drivers/vballoon")?;
    let views = list(&mut vm, "/sys/kernel/debug/vballoon")?;
    println!("    bound: {bound:?}; debugfs views: {views:?}");
    ensure!(
        bound.len() == 2,
        "vballoon bound {bound:?}, wanted both devices"
    );
    ensure!(
        views == bound,
        "debugfs has views {views:?} for the bound devices {bound:?}"
    );
    let (qemu_mib, vhost_mib) = (256, 512);
    let inflate = |vm: &mut Vm, what: &str| -> Result<()> {
        vm.balloon((GUEST_MIB - qemu_mib) * MIB)?;
        host.target_mib(vhost_mib)?;
        vm.wait_actual((GUEST_MIB - qemu_mib) * MIB, MOVE_TIMEOUT)
            .with_context(|| format!("{what}: QEMU's balloon"))?;
        host.wait_actual(vhost_mib, MOVE_TIMEOUT)
            .with_context(|| format!("{what}: the vhost-user balloon"))?;
        let total = vm.mem_total()?;
        ensure!(
            start - total == (qemu_mib + vhost_mib) * MIB,
            "{what}: MemTotal fell {} MiB for {qemu_mib} + {vhost_mib} MiB in the two balloons",
            (start - total) / MIB
        );
        Ok(())
    };
    inflate(&mut vm, "both bound")?;
    let log = vm.dmesg()?;
    let off: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("free page reporting off"))
        .collect();
    println!("    {off:?}");
    ensure!(
        off.len() == 1 && off[0].contains("another device already reports"),
        "wanted one 'free page reporting off' line naming the other device, saw {off:?}"
    );
    // One goes, the other stays observable.
    let (gone, kept) = (&bound[0], &bound[1]);
    vm.sh(&format!(
        "echo {gone} > /sys/bus/virtio/drivers/vballoon/unbind"
    ))?;
    let views = list(&mut vm, "/sys/kernel/debug/vballoon")?;
    ensure!(
        views == [kept.clone()],
        "after unbinding {gone}, debugfs has {views:?}"
    );
    let view = vm.sh(&format!("cat /sys/kernel/debug/vballoon/{kept}"))?;
    ensure!(
        !view.trim().is_empty(),
        "{kept}'s view is empty after {gone} went"
    );
    vm.sh(&format!(
        "echo {gone} > /sys/bus/virtio/drivers/vballoon/bind"
    ))?;
    let views = list(&mut vm, "/sys/kernel/debug/vballoon")?;
    ensure!(
        views == bound,
        "after binding {gone} again, debugfs has {views:?}"
    );
    inflate(&mut vm, "after the rebind")?;
    let (rc, out) = vm.sh_rc(Drv::Rust.rmmod(), Duration::from_secs(60))?;
    ensure!(rc == 0, "rmmod: {out}");
    let left = vm.sh("ls -d /sys/kernel/debug/vballoon 2>/dev/null; true")?;
    ensure!(left.trim().is_empty(), "left after rmmod: {left}");
    ensure!(
        vm.mem_total()? == start,
        "MemTotal not back at its start after rmmod"
    );
    vm.assert_dmesg_clean()?;
    host.assert_protocol_clean()?;
    vm.shutdown()
}

fn num(v: &serde_json::Value, key: &str) -> Result<u64> {
    v[key]
        .as_u64()
        .ok_or_else(|| anyhow!("host query has no {key}: {v}"))
}
