//! A real libvirt daemon (Debian's packages), started by the test itself, running the guest
//! from domain XML with `<memballoon model='virtio'><stats period='2'/></memballoon>`:
//! `virsh setmem --live` and `virsh dommemstat`, for both drivers, side by side.

use crate::guest::{pick_accel, Shell, GIB, MIB};
use crate::scenarios::{Ctx, Drv};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// How long a process we stop gets to exit after SIGTERM, and then after SIGKILL.
const TERM_WAIT: Duration = Duration::from_secs(15);
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long `virsh version` may go unanswered after libvirtd started.
const ANSWER_WAIT: Duration = Duration::from_secs(90);
/// The QEMU driver's lock, held (with the holder's pid in it) by whichever daemon runs
/// `qemu:///system`: ours, or the system's libvirtd or virtqemud.
const DRIVER_PID: &str = "/run/libvirt/qemu/driver.pid";
/// The pid files a system libvirt writes in its own run directory.
const SYSTEM_PIDS: [&str; 2] = ["/run/libvirt/libvirtd.pid", "/run/libvirt/virtqemud.pid"];

/// How long one `virsh` call may take before it is killed: libvirt's keepalive does not notice
/// a daemon that stopped answering (a `virsh dommemstat` against a stopped libvirtd waited for
/// more than 5 minutes), and a scenario must end rather than hang.
const VIRSH_WAIT: Duration = Duration::from_secs(120);

fn virsh(args: &[&str]) -> Result<String> {
    virsh_for(args, VIRSH_WAIT)
}

/// Reads a child's pipe to the end on a thread of its own, so that a full pipe never blocks it.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// `virsh -c qemu:///system ARGS`, killed after `timeout`; its stdout.
fn virsh_for(args: &[&str], timeout: Duration) -> Result<String> {
    let mut child = Command::new("virsh")
        .arg("-c")
        .arg(URI)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running virsh")?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let start = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "virsh {} did not return in {} s (killed)",
                args.join(" "),
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    if !st.success() {
        bail!("virsh {} ({st}): {}", args.join(" "), err.trim());
    }
    Ok(out)
}

/// Whether `pid` is a live process. A zombie counts as gone: it holds no lock, file or memory,
/// and the init of a container may never reap it.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// `/proc/PID/cmdline` with spaces between the arguments ("" once the process is gone).
fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The pid in a pid file, if there is one and it names a live process.
fn live_pid(file: &Path) -> Option<i32> {
    let pid = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    (pid > 0 && alive(pid)).then_some(pid)
}

/// Polls until `pid` is gone or `timeout` passed; whether it is gone.
fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Stops `pid`: SIGTERM, up to `TERM_WAIT` for it to be gone, then SIGKILL and up to
/// `KILL_WAIT`. Prints one line saying how it ended; an error if it outlived SIGKILL too.
fn stop(pid: i32, what: &str) -> Result<()> {
    if !alive(pid) {
        return Ok(());
    }
    let start = Instant::now();
    // SAFETY: kill(2) only sends a signal; `pid` is positive, never a process group.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if wait_gone(pid, TERM_WAIT) {
        println!(
            "    {what} (pid {pid}) exited after SIGTERM in {} ms",
            start.elapsed().as_millis()
        );
        return Ok(());
    }
    let killed = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    if wait_gone(pid, KILL_WAIT) {
        println!(
            "    {what} (pid {pid}) still running {} s after SIGTERM: needed SIGKILL, gone {} ms later",
            TERM_WAIT.as_secs(),
            killed.elapsed().as_millis()
        );
        return Ok(());
    }
    bail!(
        "{what} (pid {pid}) still running {} s after SIGTERM and {} s after SIGKILL",
        TERM_WAIT.as_secs(),
        KILL_WAIT.as_secs()
    )
}

/// The pid file libvirt keeps for the test domain's QEMU.
fn qemu_pid_file() -> PathBuf {
    Path::new("/run/libvirt/qemu").join(format!("{DOMAIN}.pid"))
}

/// The live QEMU libvirt started for the test domain, if any: the pid in libvirt's pid file,
/// checked against the process's command line (`-name guest=vballoon-test,...`) so that a
/// reused pid is never killed.
fn domain_qemu() -> Option<i32> {
    live_pid(&qemu_pid_file()).filter(|&p| is_domain_qemu(p))
}

fn is_domain_qemu(pid: i32) -> bool {
    cmdline(pid).contains(&format!("guest={DOMAIN},"))
}

/// Whether `pid` is a libvirtd (and not some process that reused its pid).
fn is_libvirtd(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "libvirtd")
}

/// The last lines of libvirtd's log, for an error saying why it did not start or answer.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        format!("{} is empty", log.display())
    } else {
        format!("last lines of {}: {tail}", log.display())
    }
}

/// libvirtd started for this test. `stop` ends it and the domain's QEMU, waiting until both are
/// gone; drop does the same when `stop` was not reached (an error or panic in between).
struct Daemon {
    pid: i32,
    /// The domain's QEMU, once `virsh create` started it.
    qemu: Option<i32>,
    stopped: bool,
}

impl Daemon {
    /// Starts libvirtd with its pid file in `root` (the run's work directory, which a scenario
    /// never wipes, so that a daemon an earlier run left behind is found) and its log in `work`.
    /// Every failure is an error: scripts/setup.sh installs libvirt, so a libvirt scenario that
    /// cannot run is broken, not skipped. Only a machine without libvirtd that says so with
    /// `VB_NO_LIBVIRT=1` skips.
    fn start(root: &Path, work: &Path) -> Result<Daemon> {
        if !Path::new("/usr/sbin/libvirtd").exists() {
            if std::env::var_os("VB_NO_LIBVIRT").is_some_and(|v| v == "1") {
                return Err(
                    Skip("libvirtd is not installed and VB_NO_LIBVIRT=1 is set".into()).into(),
                );
            }
            bail!(
                "libvirtd is not installed (/usr/sbin/libvirtd missing; scripts/setup.sh installs it, \
                 VB_NO_LIBVIRT=1 skips the libvirt scenarios instead)"
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
        let pid_file = root.join("libvirtd.pid");
        if let Some(pid) = live_pid(&pid_file).filter(|&p| is_libvirtd(p)) {
            stop(pid, "stale libvirtd of an earlier run").context("stopping a stale libvirtd")?;
        }
        let _ = std::fs::remove_file(&pid_file);
        for file in std::iter::once(DRIVER_PID).chain(SYSTEM_PIDS) {
            if let Some(pid) = live_pid(Path::new(file)) {
                bail!(
                    "a libvirt daemon this run did not start holds /run/libvirt: {file} names pid {pid} \
                     ({}); it is the system's or another run's (ours would be named in {}); stop it \
                     and run again",
                    cmdline(pid),
                    pid_file.display()
                );
            }
        }
        // No daemon manages the domain now, so a QEMU of it still running is left over too.
        if let Some(q) = domain_qemu() {
            stop(q, "stale QEMU of the test domain").context("stopping a stale QEMU")?;
        }
        let log = work.join("libvirtd.log");
        let st = Command::new("/usr/sbin/libvirtd")
            .arg("--daemon")
            .arg(format!("--pid-file={}", pid_file.display()))
            .env("LIBVIRT_LOG_OUTPUTS", format!("3:file:{}", log.display()))
            .status()
            .context("starting libvirtd")?;
        // The daemon writes its pid file before the parent returns; allow a moment anyway.
        let start = Instant::now();
        let mut pid = None;
        while start.elapsed() < Duration::from_secs(5) {
            pid = live_pid(&pid_file).filter(|&p| is_libvirtd(p));
            if pid.is_some() || !st.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let Some(pid) = pid else {
            bail!(
                "libvirtd did not start ({st}, no live pid in {}); {}",
                pid_file.display(),
                log_tail(&log)
            );
        };
        let d = Daemon {
            pid,
            qemu: None,
            stopped: false,
        };
        if !st.success() {
            let s = d.stop();
            bail!(
                "libvirtd --daemon failed ({st}) though pid {pid} came up (stopped: {}); {}",
                s.map_or_else(|e| format!("{e:#}"), |()| "gone".into()),
                log_tail(&log)
            );
        }
        let start = Instant::now();
        while let Err(e) = virsh_for(&["version"], Duration::from_secs(10)) {
            if !alive(pid) {
                bail!(
                    "libvirtd (pid {pid}) exited {} ms after starting, before answering virsh version ({e:#}); {}",
                    start.elapsed().as_millis(),
                    log_tail(&log)
                );
            }
            if start.elapsed() > ANSWER_WAIT {
                let s = d.stop();
                bail!(
                    "libvirtd (pid {pid}) started but never answered virsh version in {} s ({e:#}); \
                     stopping it: {}; {}",
                    ANSWER_WAIT.as_secs(),
                    s.map_or_else(|e| format!("{e:#}"), |()| "gone".into()),
                    log_tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(d)
    }

    /// Destroys the domain, stops libvirtd (SIGTERM, SIGKILL after `TERM_WAIT`), then stops any
    /// QEMU of the domain that outlived both. Each step is bounded; an error names what is left.
    fn stop(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let qemus: Vec<i32> = self.qemu.into_iter().chain(domain_qemu()).collect();
        if alive(self.pid) {
            // Fails harmlessly when the scenario destroyed the domain already.
            let _ = virsh_for(&["destroy", DOMAIN], Duration::from_secs(30));
        }
        let mut errs = Vec::new();
        if is_libvirtd(self.pid) {
            if let Err(e) = stop(self.pid, "libvirtd") {
                errs.push(format!("{e:#}"));
            }
        }
        for q in qemus.into_iter().chain(domain_qemu()) {
            if alive(q) && is_domain_qemu(q) {
                if let Err(e) = stop(q, "QEMU of the domain, left after libvirtd") {
                    errs.push(format!("{e:#}"));
                }
            }
        }
        ensure!(errs.is_empty(), "libvirt teardown: {}", errs.join("; "));
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            println!("    {e:#}");
        }
    }
}

/// The test domain boots either the test initramfs or, with `disk`, the real Debian guest: its
/// kernel and initramfs, and a copy-on-write overlay of its image (the image stays as built).
struct DiskDomain<'a> {
    image_dir: &'a Path,
    overlay: &'a Path,
}

fn domain_xml(
    ctx: &Ctx,
    console: &Path,
    cmd: &Path,
    autodeflate: bool,
    disk: Option<&DiskDomain<'_>>,
) -> String {
    let (accel, _) = pick_accel();
    let dtype = if accel == "kvm" { "kvm" } else { "qemu" };
    let (kernel, initrd, cmdline, disk_xml) = match disk {
        None => (
            ctx.paths.kernel.clone(),
            ctx.initramfs.to_path_buf(),
            "console=ttyS0 panic=-1".to_string(),
            String::new(),
        ),
        Some(d) => (
            d.image_dir.join("vmlinuz"),
            d.image_dir.join("initrd.img"),
            "console=ttyS0 panic=-1 root=LABEL=vbroot ro".to_string(),
            format!(
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda' bus='virtio'/></disk>",
                d.overlay.display()
            ),
        ),
    };
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
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {disk_xml}
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <serial type='unix'><source mode='bind' path='{cmd}'/><target port='1'/></serial>
    <memballoon model='virtio'{autodeflate}><stats period='2'/></memballoon>
  </devices>
</domain>
"#,
        kernel = kernel.display(),
        initrd = initrd.display(),
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

/// Starts a libvirtd of our own, boots the test domain under it and runs `body` on the guest
/// shell; then, whatever the outcome, destroys the domain and stops the daemon, waiting until
/// libvirtd and the domain's QEMU are gone. A teardown that leaves a process behind fails the
/// scenario.
fn with_domain(
    ctx: &Ctx,
    name: &str,
    autodeflate: bool,
    body: impl FnOnce(&mut Shell) -> Result<()>,
) -> Result<()> {
    with_domain_on(ctx, name, autodeflate, None, body)
}

/// [`with_domain`], on the real Debian guest's image when `image_dir` is given.
fn with_domain_on(
    ctx: &Ctx,
    name: &str,
    autodeflate: bool,
    image_dir: Option<&Path>,
    body: impl FnOnce(&mut Shell) -> Result<()>,
) -> Result<()> {
    let work = ctx.paths.work.join(name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let overlay = work.join("root.qcow2");
    if let Some(dir) = image_dir {
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(dir.join("root.img"))
            .arg(&overlay)
            .status()
            .context("qemu-img")?;
        ensure!(st.success(), "qemu-img create of the overlay failed ({st})");
    }
    let disk = image_dir.map(|image_dir| DiskDomain {
        image_dir,
        overlay: &overlay,
    });
    let mut daemon = Daemon::start(&ctx.paths.work, &work)?;
    let r =
        boot(ctx, &work, autodeflate, disk.as_ref(), &mut daemon).and_then(|mut sh| body(&mut sh));
    let s = daemon.stop();
    if let (Err(_), Err(e)) = (&r, &s) {
        println!("    {e:#}");
    }
    r.and(s)
}

fn boot(
    ctx: &Ctx,
    work: &Path,
    autodeflate: bool,
    disk: Option<&DiskDomain<'_>>,
    daemon: &mut Daemon,
) -> Result<Shell> {
    let _ = virsh(&["destroy", DOMAIN]);
    let console = work.join("console.log");
    let cmd = work.join("cmd.sock");
    let xml = work.join("domain.xml");
    std::fs::write(&xml, domain_xml(ctx, &console, &cmd, autodeflate, disk))?;
    virsh(&["create", "--paused", &xml.to_string_lossy()])?;
    daemon.qemu = domain_qemu();
    let stream = UnixStream::connect(&cmd).context("connecting to the guest shell socket")?;
    let mut sh = Shell::new(stream, console);
    virsh(&["resume", DOMAIN])?;
    sh.wait_line("VB_READY", Duration::from_secs(300))
        .context("guest under libvirt did not boot")?;
    Ok(sh)
}

/// `<memballoon model='virtio' autodeflate='on'>` under a real libvirtd: vballoon negotiates
/// deflate-on-OOM, and after `virsh setmem` to 512 MiB a 1 GiB hog completes with nothing
/// OOM-killed while `dommemstat` shows the balloon gave memory back.
pub fn libvirt_autodeflate(ctx: &Ctx) -> Result<()> {
    with_domain(ctx, "libvirt_autodeflate", true, |sh| {
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
    })
}

pub fn libvirt_setmem_dommemstat(ctx: &Ctx) -> Result<()> {
    with_domain(ctx, "libvirt", false, |sh| {
        let c = setmem_cycle(sh, Drv::C)?;
        let r = setmem_cycle(sh, Drv::Rust)?;
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
    })
}

/// The real Debian guest (`--image`) under a libvirtd of our own: vballoon, loaded by udev and
/// not by the test, follows `virsh setmem --live` to 1 GiB and back with MemTotal exact, and
/// `virsh dommemstat` has every field with plausible values.
pub fn debian_guest_libvirt(ctx: &Ctx) -> Result<()> {
    let Some(dir) = ctx.image else {
        bail!("needs --image (scripts/debian-image.sh)");
    };
    with_domain_on(ctx, "debian_guest_libvirt", false, Some(dir), |sh| {
        let bound = sh.sh(crate::guest::BALLOON_DRIVER_SH)?;
        ensure!(
            bound.trim() == "vballoon",
            "the balloon is bound to {:?}, not vballoon",
            bound.trim()
        );
        let total0 = sh.mem_total()?;
        let full_kib = (2 * GIB / 1024) as i64;
        let half_kib = full_kib / 2;
        virsh(&["setmem", DOMAIN, &half_kib.to_string(), "--live"])?;
        wait_stat("actual", half_kib, Duration::from_secs(240))?;
        let total1 = sh.mem_total()?;
        ensure!(
            total0 - total1 == GIB,
            "MemTotal dropped by {} MiB after setmem to 1 GiB",
            (total0 - total1) / MIB
        );
        let last = stat(&dommemstat()?, "last_update").unwrap_or(0);
        let m = fresh_stats(last)?;
        for k in FIELDS {
            stat(&m, k)?;
        }
        ensure!(
            stat(&m, "available")? * 1024 == total1 as i64,
            "dommemstat available {} KiB != MemTotal {} KiB at 1 GiB",
            stat(&m, "available")?,
            total1 / 1024
        );
        let unused = stat(&m, "unused")?;
        ensure!(
            unused > 0 && unused < stat(&m, "available")?,
            "dommemstat unused {unused} KiB implausible"
        );
        println!(
            "    setmem 1 GiB: actual {} MiB, available {} MiB, unused {} MiB, usable {} MiB, rss {} MiB",
            stat(&m, "actual")? / 1024,
            stat(&m, "available")? / 1024,
            unused / 1024,
            stat(&m, "usable")? / 1024,
            stat(&m, "rss")? / 1024
        );
        virsh(&["setmem", DOMAIN, &full_kib.to_string(), "--live"])?;
        wait_stat("actual", full_kib, Duration::from_secs(240))?;
        ensure!(
            sh.mem_total()? == total0,
            "MemTotal not restored after setmem back to 2 GiB"
        );
        sh.assert_dmesg_clean()?;
        virsh(&["destroy", DOMAIN])?;
        Ok(())
    })
}
