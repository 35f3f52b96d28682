//! The hostile host (issue 9): the project's own balloon device (`vballoon-host`, a vhost-user
//! backend on the rust-vmm crates) behind the project's QEMU build, which lets `-device` create
//! the generic `vhost-user-device-pci`. The host behaves like QEMU's balloon by default and turns
//! on one misbehaviour at a time; its protocol checker fails a scenario when the driver posts a
//! buffer of more than 256 PFNs, a PFN twice without a deflate in between, or a PFN outside
//! guest RAM.

use crate::guest::{LateDevice, Vm, VmOpts, MIB};
use crate::scenarios::{Ctx, Drv};
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// 4 KiB pages per MiB: the unit of the balloon protocol.
const PAGES_PER_MIB: u64 = 256;
/// The driver's `host_timeout_ms` in these scenarios.
const LIMIT_MS: u64 = 1000;
/// Guest RAM (the shared memfd has to match `-m`).
const GUEST_MIB: u64 = 2048;

/// A running `vballoon-host`.
pub struct Host {
    child: Child,
    ctl: PathBuf,
    pub sock: PathBuf,
}

impl Host {
    /// Starts the host for a guest in `dir`, offering `features` (`stats,oom,reporting`).
    pub fn start(bin: &Path, dir: &Path, features: &str) -> Result<Host> {
        std::fs::create_dir_all(dir)?;
        let sock = dir.join("vhost.sock");
        let ctl = dir.join("host-ctl.sock");
        let args = vec![
            "--socket".into(),
            sock.display().to_string(),
            "--control".into(),
            ctl.display().to_string(),
            "--features".into(),
            features.into(),
            "--log".into(),
            dir.join("host.log").display().to_string(),
        ];
        let child = Self::spawn(bin, &args, dir)?;
        let mut h = Host { child, ctl, sock };
        h.wait_ready()?;
        Ok(h)
    }

    fn spawn(bin: &Path, args: &[String], dir: &Path) -> Result<Child> {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("host.stderr"))?;
        Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if UnixStream::connect(&self.ctl).is_ok() && self.sock.exists() {
                return Ok(());
            }
            if let Some(st) = self.child.try_wait()? {
                bail!("vballoon-host exited early: {st}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("vballoon-host did not open {}", self.ctl.display())
    }

    /// Sends one control command; returns the host's JSON answer (which must say ok).
    pub fn cmd(&self, line: &str) -> Result<Value> {
        let mut s = UnixStream::connect(&self.ctl).context("host control socket")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(line.as_bytes())?;
        s.write_all(b"\n")?;
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer)?;
        let v: Value = serde_json::from_str(answer.trim())
            .with_context(|| format!("host answer to {line:?}: {answer:?}"))?;
        ensure!(v["ok"] == Value::Bool(true), "host refused {line:?}: {v}");
        Ok(v)
    }

    pub fn query(&self) -> Result<Value> {
        self.cmd("query")
    }

    pub fn target_mib(&self, mib: u64) -> Result<()> {
        self.cmd(&format!("target {}", mib * PAGES_PER_MIB))
            .map(drop)
    }

    pub fn mode(&self, m: &str) -> Result<()> {
        self.cmd(&format!("mode {m}")).map(drop)
    }

    /// The host's `actual` (the guest's last write), in MiB.
    pub fn actual_mib(&self) -> Result<u64> {
        num(&self.query()?, "actual").map(|p| p / PAGES_PER_MIB)
    }

    /// Waits until the guest says it holds `mib`; returns how long it took.
    pub fn wait_actual(&self, mib: u64, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let a = self.actual_mib()?;
            if a == mib {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!("host actual {a} MiB, wanted {mib} MiB after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The control socket (one command per line, one JSON answer per line; a client may stay
    /// connected).
    pub fn control_path(&self) -> &Path {
        &self.ctl
    }

    /// Fails if the protocol checker saw a violation.
    pub fn assert_protocol_clean(&self) -> Result<()> {
        let q = self.query()?;
        let v = q["violations"]
            .as_array()
            .ok_or_else(|| anyhow!("no violations field: {q}"))?;
        ensure!(v.is_empty(), "protocol checker: {v:?}");
        let max = num(&q, "max_pfns_in_buffer")?;
        ensure!(max <= 256, "a buffer had {max} PFNs");
        Ok(())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn num(v: &Value, key: &str) -> Result<u64> {
    v[key]
        .as_u64()
        .ok_or_else(|| anyhow!("host query has no {key}: {v}"))
}

/// Where `vballoon-host` is: next to this harness binary (same cargo workspace).
pub fn host_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .ok_or_else(|| anyhow!("harness has no directory"))?
        .join("vballoon-host");
    ensure!(bin.exists(), "{} not built", bin.display());
    Ok(bin)
}

/// Where a scenario's host keeps its sockets and logs.
fn host_dir(ctx: &Ctx, name: &str) -> PathBuf {
    ctx.paths.work.join(format!("{name}-host"))
}

/// Boots a guest whose balloon is `vballoon-host` behind the project's QEMU, loading `drv`.
fn boot_hostile(ctx: &Ctx, name: &str, drv: Drv, features: &str, ring: u32) -> Result<(Vm, Host)> {
    let load = match drv {
        Drv::Rust => format!("vbload=vballoon vbparams=host_timeout_ms={LIMIT_MS}"),
        Drv::C => "vbload=c".into(),
    };
    let (mut vm, host) = boot_vhost(ctx, name, GUEST_MIB, &load, features, ring)?;
    let bound = vm.sh(&format!("ls /sys/bus/virtio/drivers/{}/", drv.sysfs_name()))?;
    ensure!(
        bound.contains("virtio"),
        "{} did not bind the vhost-user balloon: {bound}",
        drv.sysfs_name()
    );
    Ok((vm, host))
}

/// Boots a `mem_mib` guest (RAM on a shared memfd) whose balloon is a `vballoon-host` offering
/// `features` with rings of `ring` entries, behind the project's QEMU; `append` goes on the
/// kernel command line (e.g. `vbload=vballoon`; empty: no driver loaded at boot).
pub fn boot_vhost(
    ctx: &Ctx,
    name: &str,
    mem_mib: u64,
    append: &str,
    features: &str,
    ring: u32,
) -> Result<(Vm, Host)> {
    boot_vhost_beside(ctx, name, mem_mib, append, features, ring, "")
}

/// As [`boot_vhost`], with QEMU's own balloon device `balloon_device` (a `-device` argument;
/// empty for none) beside the vhost-user one.
pub fn boot_vhost_beside(
    ctx: &Ctx,
    name: &str,
    mem_mib: u64,
    append: &str,
    features: &str,
    ring: u32,
    balloon_device: &str,
) -> Result<(Vm, Host)> {
    let qemu = ctx
        .vhost_qemu
        .ok_or_else(|| anyhow!("no vhost-user QEMU (--vhost-qemu; scripts/qemu.sh builds it)"))?;
    // Beside the guest's directory, which `Vm::boot` empties.
    let dir = host_dir(ctx, name);
    let _ = std::fs::remove_dir_all(&dir);
    let host = Host::start(&host_bin()?, &dir, features)?;
    // `poison_val` (bytes 12..16) only where the host offers PAGE_POISON, as QEMU's device.
    let config_size = if features.split(',').any(|f| f == "poison") {
        16
    } else {
        12
    };
    let opts = VmOpts {
        qemu: Some(qemu.to_path_buf()),
        balloon_device: balloon_device.into(),
        machine: Some("pc,memory-backend=mem".into()),
        mem_mib,
        append: append.into(),
        allow_reset: true,
        extra: vec![
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={mem_mib}M,share=on"),
            "-chardev".into(),
            format!("socket,id=vb,path={},reconnect-ms=200", host.sock.display()),
            "-L".into(),
            "/usr/share/seabios".into(),
            "-L".into(),
            "/usr/share/qemu".into(),
        ],
        late_device: Some(LateDevice {
            chardev: "vb".into(),
            driver: "vhost-user-device-pci".into(),
            id: "balloon0".into(),
            props: serde_json::json!({
                "chardev": "vb", "virtio-id": 5, "num_vqs": 4, "config_size": config_size, "vq_size": ring
            }),
        }),
        ..VmOpts::default()
    };
    let vm = Vm::boot(name, ctx.paths, ctx.initramfs, &opts)?;
    Ok((vm, host))
}

/// Inflates to `mib` and back to 0 through the host; MemTotal follows exactly and comes back
/// to `start` exactly; the protocol checker stays clean.
fn round_trip(vm: &mut Vm, host: &Host, start: u64, mib: u64, what: &str) -> Result<()> {
    host.target_mib(mib)?;
    host.wait_actual(mib, Duration::from_secs(120))
        .with_context(|| format!("{what}: inflate to {mib} MiB"))?;
    let t = vm.mem_total()?;
    ensure!(
        start - t == mib * MIB,
        "{what}: MemTotal went down {} MiB for a {mib} MiB balloon",
        (start - t) / MIB
    );
    let q = host.query()?;
    ensure!(
        num(&q, "ballooned")? == mib * PAGES_PER_MIB,
        "{what}: host holds {} pages, guest says {mib} MiB",
        num(&q, "ballooned")?
    );
    host.target_mib(0)?;
    host.wait_actual(0, Duration::from_secs(120))
        .with_context(|| format!("{what}: deflate"))?;
    ensure!(
        vm.mem_total()? == start,
        "{what}: MemTotal not back at its start value"
    );
    host.assert_protocol_clean().context(what.to_owned())?;
    vm.assert_dmesg_clean().context(what.to_owned())?;
    Ok(())
}

/// Counts kernel log lines containing `pat`.
fn log_lines(vm: &mut Vm, pat: &str) -> Result<usize> {
    Ok(vm.dmesg()?.lines().filter(|l| l.contains(pat)).count())
}

/// Runs `cmd` in the guest and fails if the shell takes longer than `max` to answer.
fn responsive(vm: &mut Vm, max: Duration, what: &str) -> Result<()> {
    let t = Instant::now();
    vm.sh_rc("cat /proc/meminfo >/dev/null", max)
        .with_context(|| format!("{what}: guest shell did not answer within {max:?}"))?;
    println!("    {what}: shell answered in {:?}", t.elapsed());
    Ok(())
}

/// Never ack, then recover: one log line, the balloon stops, the guest stays usable; the
/// host answering late is picked up again without a reload.
fn never_ack_recovers(vm: &mut Vm, host: &Host, start: u64) -> Result<()> {
    // Earlier steps may have had a slow transfer of their own: count from here.
    let lines0 = log_lines(vm, "has not used")?;
    let recovered0 = log_lines(vm, "used its buffers after")?;
    host.mode("never-ack")?;
    host.target_mib(256)?;
    std::thread::sleep(Duration::from_millis(3 * LIMIT_MS + 500));
    let stuck = host.actual_mib()?;
    ensure!(stuck < 256, "never-ack: the balloon reached the target");
    ensure!(
        log_lines(vm, "has not used")? == lines0 + 1,
        "never-ack: wanted exactly one 'has not used' line:\n{}",
        vm.dmesg()?
    );
    responsive(vm, Duration::from_secs(10), "never-ack")?;
    // One cat says why the balloon stopped: the host is past its limit.
    let c = crate::counters::Counters::read(vm)?;
    println!("    never-ack: counters say {}", c.line());
    ensure!(
        c.state() == "host_slow" && c.num("host_timeouts")? >= 1,
        "never-ack: counters {}",
        c.line()
    );
    std::thread::sleep(Duration::from_millis(2 * LIMIT_MS));
    ensure!(
        log_lines(vm, "has not used")? == lines0 + 1,
        "never-ack: the line repeats"
    );
    host.cmd("release")?;
    host.mode("normal")?;
    let took = host.wait_actual(256, Duration::from_secs(60))?;
    println!(
        "    never-ack: stuck at {stuck} MiB, reached 256 MiB {took:?} after the host answered"
    );
    ensure!(
        log_lines(vm, "used its buffers after")? > recovered0,
        "never-ack: no recovery line"
    );
    host.target_mib(0)?;
    host.wait_actual(0, Duration::from_secs(60))?;
    ensure!(vm.mem_total()? == start, "never-ack: MemTotal not back");
    host.assert_protocol_clean()?;
    vm.assert_dmesg_clean()
}

/// Never ack, then unbind (rmmod): it finishes within a bound, gives every page back
/// (MemTotal exact) after resetting the device, and the driver binds again afterwards.
fn never_ack_rmmod(vm: &mut Vm, host: &Host, drv: Drv, start: u64) -> Result<Option<Duration>> {
    host.target_mib(128)?;
    host.wait_actual(128, Duration::from_secs(60))?;
    host.mode("never-ack")?;
    host.target_mib(384)?;
    std::thread::sleep(Duration::from_millis(LIMIT_MS + 500));
    // In the background, so a driver that hangs cannot hang the suite.
    vm.sh(&format!(
        "rm -f /tmp/rmmod.rc; ( {}; echo $? > /tmp/rmmod.rc.new; mv /tmp/rmmod.rc.new /tmp/rmmod.rc ) >/dev/null 2>&1 &",
        drv.rmmod()
    ))?;
    let t = Instant::now();
    let bound = Duration::from_secs(20);
    let took = loop {
        let (rc, _) = vm.sh_rc("test -e /tmp/rmmod.rc", Duration::from_secs(10))?;
        if rc == 0 {
            break Some(t.elapsed());
        }
        if t.elapsed() > bound {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let Some(took) = took else {
        return Ok(None);
    };
    ensure!(vm.sh("cat /tmp/rmmod.rc")?.trim() == "0", "rmmod failed");
    ensure!(
        vm.mem_total()? == start,
        "after rmmod with a silent host MemTotal is {} MiB, started at {} MiB",
        vm.mem_total()? / MIB,
        start / MIB
    );
    vm.assert_dmesg_clean()?;
    host.mode("normal")?;
    host.target_mib(0)?;
    crate::scenarios::load(vm, drv)?;
    round_trip(vm, host, start, 64, "after rebind")?;
    Ok(Some(took))
}

/// Every misbehaviour of the host against vballoon, in one boot (they do not disturb each
/// other: each step starts and ends at an empty balloon with the host back to normal).
pub fn hostile_host(ctx: &Ctx) -> Result<()> {
    let (mut vm, host) = boot_hostile(ctx, "hostile_host", Drv::Rust, "stats", 128)?;
    let start = vm.mem_total()?;
    round_trip(&mut vm, &host, start, 256, "correct host")?;
    let q = host.query()?;
    ensure!(
        num(&q, "stats_updates")? >= 1 && q["stats"].as_object().is_some_and(|m| !m.is_empty()),
        "no stats reached the host: {q}"
    );
    if !ctx.debug {
        for (mode, mib) in [("wrong-len", 192), ("out-of-order", 192), ("delay 300", 64)] {
            host.mode(mode)?;
            round_trip(&mut vm, &host, start, mib, mode)?;
            host.mode("normal")?;
        }
        // Target flipping every millisecond, then a settled target: the balloon follows.
        host.mode(&format!(
            "flip {} {}",
            64 * PAGES_PER_MIB,
            320 * PAGES_PER_MIB
        ))?;
        std::thread::sleep(Duration::from_secs(3));
        responsive(&mut vm, Duration::from_secs(10), "flip")?;
        host.mode("normal")?;
        round_trip(&mut vm, &host, start, 128, "after flip")?;
        // A target above guest RAM: the balloon stops at the floor, nothing is OOM-killed.
        host.target_mib(4 * GUEST_MIB)?;
        let held = {
            let t = Instant::now();
            let mut last = 0;
            loop {
                std::thread::sleep(Duration::from_secs(2));
                let a = host.actual_mib()?;
                if a == last || t.elapsed() > Duration::from_secs(120) {
                    break a;
                }
                last = a;
            }
        };
        responsive(&mut vm, Duration::from_secs(20), "above RAM")?;
        ensure!(
            held > GUEST_MIB / 2 && held < GUEST_MIB,
            "above RAM: balloon at {held} MiB"
        );
        println!("    target above RAM: held at {held} MiB of {GUEST_MIB} MiB");
        host.target_mib(0)?;
        host.wait_actual(0, Duration::from_secs(120))?;
        ensure!(vm.mem_total()? == start, "above RAM: MemTotal not back");
        vm.assert_dmesg_clean()?;
        // Target 0 while an inflate is in flight.
        host.mode("zero-when-inflating")?;
        host.target_mib(512)?;
        host.wait_actual(0, Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(500));
        ensure!(
            host.actual_mib()? == 0,
            "zero-when-inflating: did not end at 0"
        );
        ensure!(
            vm.mem_total()? == start,
            "zero-when-inflating: MemTotal not back"
        );
        host.mode("normal")?;
        // Stats requests back to back.
        let before = num(&host.query()?, "stats_updates")?;
        host.mode("stats-storm")?;
        std::thread::sleep(Duration::from_secs(3));
        responsive(&mut vm, Duration::from_secs(10), "stats storm")?;
        host.mode("normal")?;
        let served = num(&host.query()?, "stats_updates")? - before;
        ensure!(served > 10, "stats storm: only {served} answers");
        println!("    stats storm: {served} stats answers in 3 s");
        round_trip(&mut vm, &host, start, 64, "after stats storm")?;
    }
    // Config-change notifications in a tight loop (debug kernel too).
    host.mode("config-storm")?;
    std::thread::sleep(Duration::from_secs(3));
    responsive(&mut vm, Duration::from_secs(20), "config storm")?;
    host.mode("normal")?;
    round_trip(&mut vm, &host, start, 128, "after config storm")?;
    // A machine reset (QMP `system_reset`) in the middle of an inflate: the guest boots again,
    // the driver binds and follows the standing target; the host saw the device reset.
    host.mode("delay 200")?;
    host.target_mib(512)?;
    std::thread::sleep(Duration::from_millis(600));
    vm.system_reset()?;
    host.mode("normal")?;
    host.wait_actual(512, Duration::from_secs(120))
        .context("after system_reset mid-inflate")?;
    let held = vm.mem_total()?;
    host.target_mib(0)?;
    host.wait_actual(0, Duration::from_secs(120))?;
    // A kernel need not come up with the same MemTotal every boot (Debian's 7.3.4 moves by a
    // few KiB), so the exact check is the balloon's own share in this boot: deflated, MemTotal
    // rises by exactly 512 MiB. Against the first boot it is only close; later checks start
    // from this boot's value.
    let after = vm.mem_total()?;
    ensure!(
        after.checked_sub(held) == Some(512 * MIB),
        "system_reset: deflating 512 MiB gave MemTotal {} KiB back ({} KiB held, {} KiB deflated; {} KiB before the reset)",
        after.saturating_sub(held) / 1024,
        held / 1024,
        after / 1024,
        start / 1024
    );
    ensure!(
        after.abs_diff(start) <= start / 256,
        "system_reset: MemTotal {} KiB after the reset, {} KiB before it",
        after / 1024,
        start / 1024
    );
    let start = after;
    host.assert_protocol_clean()
        .context("system_reset mid-inflate")?;
    vm.assert_dmesg_clean()?;
    never_ack_recovers(&mut vm, &host, start)?;
    let took = never_ack_rmmod(&mut vm, &host, Drv::Rust, start)?
        .ok_or_else(|| anyhow!("rmmod with a silent host did not finish in 20 s"))?;
    println!("    rmmod with a silent host took {took:?} (host_timeout_ms={LIMIT_MS})");
    vm.shutdown()
}

/// Small ring (4 entries) and reporting without stats (so the reporting queue is the third).
pub fn hostile_small_ring(ctx: &Ctx) -> Result<()> {
    let (mut vm, host) = boot_hostile(ctx, "hostile_small_ring", Drv::Rust, "reporting", 4)?;
    let start = vm.mem_total()?;
    round_trip(&mut vm, &host, start, 256, "ring of 4")?;
    let t = Instant::now();
    while num(&host.query()?, "reported_bytes")? == 0 {
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "no free page report reached the host"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "    reported {} MiB without a stats queue",
        num(&host.query()?, "reported_bytes")? / MIB
    );
    vm.sh("rmmod vballoon")?;
    ensure!(vm.mem_total()? == start, "rmmod: MemTotal not back");
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}

/// The C driver against the same host: a correct host works the same; with a host that never
/// answers, what happens to rmmod is reported (a hang there is a finding, not a failure).
pub fn hostile_c_driver(ctx: &Ctx) -> Result<()> {
    let (mut vm, host) = boot_hostile(ctx, "hostile_c_driver", Drv::C, "stats", 128)?;
    let start = vm.mem_total()?;
    round_trip(&mut vm, &host, start, 256, "C driver, correct host")?;
    match never_ack_rmmod(&mut vm, &host, Drv::C, start) {
        Ok(Some(took)) => println!("    C driver: rmmod with a silent host took {took:?}"),
        Ok(None) => {
            println!("    C driver: rmmod with a silent host still hangs after 20 s (finding)")
        }
        Err(e) => println!("    C driver: rmmod with a silent host: {e:#} (finding)"),
    }
    Ok(())
}
