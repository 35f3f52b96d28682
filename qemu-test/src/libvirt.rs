//! A real libvirt daemon (Debian's packages), started by the test itself, running the guest
//! from domain XML with `<memballoon model='virtio'><stats period='2'/></memballoon>`:
//! `virsh setmem --live` and `virsh dommemstat`, for both drivers, side by side.

use crate::guest::{pick_accel, Shell, GIB, MIB};
use crate::scenarios::{Ctx, Drv};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A scenario that cannot run on this machine; the runner reports it as skipped, with the reason.
#[derive(Debug)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

impl std::error::Error for Skip {}

const URI: &str = "qemu:///system";
const DOMAIN: &str = "vballoon-test";
const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
const CONF_MARK: &str = "# vballoon test settings";

fn virsh(args: &[&str]) -> Result<String> {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(URI)
        .args(args)
        .output()
        .context("running virsh")?;
    if !out.status.success() {
        bail!(
            "virsh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// libvirtd started for this test, stopped on drop.
struct Daemon {
    pid_file: PathBuf,
}

impl Daemon {
    fn start(work: &Path) -> Result<Daemon> {
        if !Path::new("/usr/sbin/libvirtd").exists() {
            return Err(
                Skip("libvirtd is not installed (scripts/setup.sh installs it)".into()).into(),
            );
        }
        // Root without systemd: QEMU as root, no security driver, no cgroups, logs to files.
        let conf = std::fs::read_to_string(QEMU_CONF).unwrap_or_default();
        if !conf.contains(CONF_MARK) {
            let add = format!(
                "\n{CONF_MARK}\nuser = \"root\"\ngroup = \"root\"\nsecurity_driver = \"none\"\ncgroup_controllers = [ ]\nstdio_handler = \"file\"\n"
            );
            std::fs::write(QEMU_CONF, conf + &add).context("writing qemu.conf")?;
        }
        let pid_file = work.join("libvirtd.pid");
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            std::thread::sleep(Duration::from_millis(500));
        }
        let st = Command::new("/usr/sbin/libvirtd")
            .arg("--daemon")
            .arg(format!("--pid-file={}", pid_file.display()))
            .status()
            .context("starting libvirtd")?;
        if !st.success() {
            return Err(Skip(format!("libvirtd could not be started here ({st})")).into());
        }
        let d = Daemon { pid_file };
        let start = Instant::now();
        while virsh(&["version"]).is_err() {
            if start.elapsed() > Duration::from_secs(90) {
                return Err(Skip(
                    "libvirtd started but never answered virsh version in 90 s".into(),
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(d)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", DOMAIN]);
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn domain_xml(ctx: &Ctx, console: &Path, cmd: &Path, autodeflate: bool) -> String {
    let (accel, _) = pick_accel();
    let dtype = if accel == "kvm" { "kvm" } else { "qemu" };
    format!(
        r#"<domain type='{dtype}'>
  <name>{DOMAIN}</name>
  <memory unit='MiB'>2048</memory>
  <currentMemory unit='MiB'>2048</currentMemory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1</cmdline>
  </os>
  <features><acpi/></features>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <serial type='unix'><source mode='bind' path='{cmd}'/><target port='1'/></serial>
    <memballoon model='virtio'{autodeflate}><stats period='2'/></memballoon>
  </devices>
</domain>
"#,
        kernel = ctx.paths.kernel.display(),
        initrd = ctx.initramfs.display(),
        console = console.display(),
        cmd = cmd.display(),
        autodeflate = if autodeflate { " autodeflate='on'" } else { "" },
    )
}

/// `virsh dommemstat` as a map (KiB values, counts, seconds).
fn dommemstat() -> Result<BTreeMap<String, i64>> {
    Ok(virsh(&["dommemstat", DOMAIN])?
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect())
}

fn stat(m: &BTreeMap<String, i64>, k: &str) -> Result<i64> {
    m.get(k)
        .copied()
        .ok_or_else(|| anyhow!("dommemstat has no {k}: {m:?}"))
}

fn wait_stat(k: &str, want: i64, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let m = dommemstat()?;
        if m.get(k) == Some(&want) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("dommemstat {k} is {:?}, wanted {want}", m.get(k));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Fresh stats: waits until `last_update` moves past `after`.
fn fresh_stats(after: i64) -> Result<BTreeMap<String, i64>> {
    let start = Instant::now();
    loop {
        let m = dommemstat()?;
        if m.get("last_update").is_some_and(|l| *l > after) {
            return Ok(m);
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("dommemstat last_update did not move past {after}: {m:?}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

const FIELDS: [&str; 12] = [
    "actual",
    "unused",
    "available",
    "usable",
    "swap_in",
    "swap_out",
    "major_fault",
    "minor_fault",
    "disk_caches",
    "last_update",
    // The test kernel has hugetlb pages, so these are present too.
    "hugetlb_pgalloc",
    "hugetlb_pgfail",
];

/// setmem to half and back with one driver; returns dommemstat at full size.
fn setmem_cycle(sh: &mut Shell, drv: Drv) -> Result<BTreeMap<String, i64>> {
    let total0 = sh.mem_total()?;
    sh.sh(drv.insmod())?;
    let full_kib = (2 * GIB / 1024) as i64;
    let half_kib = full_kib / 2;
    virsh(&["setmem", DOMAIN, &half_kib.to_string(), "--live"])?;
    wait_stat("actual", half_kib, Duration::from_secs(240))?;
    let total1 = sh.mem_total()?;
    ensure!(
        (total0 - total1).abs_diff(GIB) <= GIB / 256,
        "{drv:?}: MemTotal dropped by {} MiB after setmem to 1 GiB",
        (total0 - total1) / MIB
    );
    let last = stat(&dommemstat()?, "last_update").unwrap_or(0);
    let half = fresh_stats(last)?;
    ensure!(
        stat(&half, "available")? * 1024 == total1 as i64,
        "{drv:?}: available != MemTotal at 1 GiB"
    );
    virsh(&["setmem", DOMAIN, &full_kib.to_string(), "--live"])?;
    wait_stat("actual", full_kib, Duration::from_secs(240))?;
    ensure!(
        sh.mem_total()? == total0,
        "{drv:?}: MemTotal not restored after setmem back to 2 GiB"
    );
    let last = stat(&dommemstat()?, "last_update")?;
    let m = fresh_stats(last)?;
    for k in FIELDS {
        stat(&m, k)?;
    }
    let (avail, unused, usable) = (
        stat(&m, "available")?,
        stat(&m, "unused")?,
        stat(&m, "usable")?,
    );
    ensure!(
        avail * 1024 == total0 as i64,
        "{drv:?}: available {avail} KiB != MemTotal"
    );
    ensure!(
        unused > 0 && unused <= avail,
        "{drv:?}: unused {unused} KiB implausible"
    );
    ensure!(
        usable > 0 && usable <= avail,
        "{drv:?}: usable {usable} KiB implausible"
    );
    ensure!(stat(&m, "minor_fault")? > 0, "{drv:?}: no minor faults");
    ensure!(stat(&m, "last_update")? > 0, "{drv:?}: last_update 0");
    sh.assert_dmesg_clean()?;
    sh.sh(drv.rmmod())?;
    Ok(m)
}

/// Starts a libvirtd of our own and boots the test domain under it; returns the daemon (which
/// stops with the domain when dropped) and the guest shell.
fn start_domain(ctx: &Ctx, name: &str, autodeflate: bool) -> Result<(Daemon, Shell)> {
    let work = ctx.paths.work.join(name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let daemon = Daemon::start(&work)?;
    let _ = virsh(&["destroy", DOMAIN]);
    let console = work.join("console.log");
    let cmd = work.join("cmd.sock");
    let xml = work.join("domain.xml");
    std::fs::write(&xml, domain_xml(ctx, &console, &cmd, autodeflate))?;
    virsh(&["create", "--paused", &xml.to_string_lossy()])?;
    let stream = UnixStream::connect(&cmd).context("connecting to the guest shell socket")?;
    let mut sh = Shell::new(stream, console);
    virsh(&["resume", DOMAIN])?;
    sh.wait_line("VB_READY", Duration::from_secs(180))
        .context("guest under libvirt did not boot")?;
    Ok((daemon, sh))
}

/// `<memballoon model='virtio' autodeflate='on'>` under a real libvirtd: vballoon negotiates
/// deflate-on-OOM, and after `virsh setmem` to 512 MiB a 1 GiB hog completes with nothing
/// OOM-killed while `dommemstat` shows the balloon gave memory back.
pub fn libvirt_autodeflate(ctx: &Ctx) -> Result<()> {
    let (_daemon, mut sh) = start_domain(ctx, "libvirt_autodeflate", true)?;
    sh.sh(Drv::Rust.insmod())?;
    let f = sh.balloon_features()?;
    ensure!(f & (1 << 2) != 0, "DEFLATE_ON_OOM not negotiated ({f:#x})");
    let half_kib = (512 * MIB / 1024) as i64;
    virsh(&["setmem", DOMAIN, &half_kib.to_string(), "--live"])?;
    wait_stat("actual", half_kib, Duration::from_secs(240))?;
    let (rc, out) = sh.sh_rc("hog 1024", Duration::from_secs(300))?;
    ensure!(
        rc == 0,
        "the hog did not complete under autodeflate ({rc}): {out}"
    );
    let actual = stat(&dommemstat()?, "actual")?;
    println!(
        "    autodeflate: 1 GiB hog completed; dommemstat actual {} MiB (was 512)",
        actual / 1024
    );
    ensure!(actual > half_kib, "dommemstat actual did not grow");
    let kills = sh.sh("grep '^oom_kill ' /proc/vmstat")?;
    ensure!(
        kills.trim() == "oom_kill 0",
        "OOM kill under autodeflate: {kills}"
    );
    sh.sh(Drv::Rust.rmmod())?;
    sh.assert_dmesg_clean()?;
    virsh(&["destroy", DOMAIN])?;
    Ok(())
}

pub fn libvirt_setmem_dommemstat(ctx: &Ctx) -> Result<()> {
    let (_daemon, mut sh) = start_domain(ctx, "libvirt", false)?;
    let c = setmem_cycle(&mut sh, Drv::C)?;
    let r = setmem_cycle(&mut sh, Drv::Rust)?;
    println!(
        "    {:<16} {:>14} {:>14}",
        "dommemstat", "C driver", "vballoon"
    );
    for (k, v) in &r {
        println!(
            "    {:<16} {:>14} {:>14}",
            k,
            c.get(k).map_or("-".into(), |v| v.to_string()),
            v
        );
    }
    for k in ["actual", "available"] {
        ensure!(stat(&c, k)? == stat(&r, k)?, "{k} differs between drivers");
    }
    for k in ["unused", "usable"] {
        let (a, b) = (stat(&c, k)?, stat(&r, k)?);
        ensure!(
            (a - b).abs() < 64 * 1024,
            "{k} differs by more than noise: C {a} KiB, vballoon {b} KiB"
        );
    }
    virsh(&["destroy", DOMAIN])?;
    Ok(())
}
