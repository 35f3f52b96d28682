//! A test guest: busybox initramfs, QEMU process, QMP client and a shell on the second serial
//! port. The kernel log goes to the first serial port, captured to a file.

use anyhow::{anyhow, bail, ensure, Context, Result};
use qapi::{qmp, Qmp};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Where the test inputs are.
#[derive(Clone, Debug)]
pub struct Paths {
    pub kernel: PathBuf,
    pub vballoon: PathBuf,
    pub c_driver: PathBuf,
    pub work: PathBuf,
    /// The kernel build tree (`--kdir`): its `include/config/kernel.release` names the guest's
    /// /lib/modules/<release>.
    pub kdir: PathBuf,
    /// The project's tree: `scripts/install.sh` and `VERSION`.
    pub root: PathBuf,
    /// The kernel's own /lib/modules/<release> (`--kernel-modules`), for a kernel that builds
    /// as modules what the project's kernels build in (Debian's: virtio-mmio, virtio-blk, ext4).
    /// [`STAGED_MODULES`] and their dependencies go into the initramfs from there; a scenario
    /// loads one with `scenarios::kernel_module`.
    pub kernel_modules: Option<PathBuf>,
}

/// The modules a scenario may need that a distribution kernel has as modules: transports
/// (`transports`) and the page cache's disk and file system (`memory_pressure`).
pub const STAGED_MODULES: [&str; 3] = ["virtio_mmio", "virtio_blk", "ext4"];

impl Paths {
    /// The kernel release of the build tree (`include/config/kernel.release`).
    pub fn kernel_release(&self) -> Result<String> {
        let f = self.kdir.join("include/config/kernel.release");
        let rel = std::fs::read_to_string(&f).with_context(|| format!("{}", f.display()))?;
        Ok(rel.trim().to_string())
    }

    /// The guest's /lib/modules/<release> inside the initramfs tree (see [`build_initramfs`]).
    pub fn guest_modules(&self) -> Result<PathBuf> {
        Ok(self
            .work
            .join("initramfs/lib/modules")
            .join(self.kernel_release()?))
    }

    /// The installer's output while [`build_initramfs`] ran it.
    pub fn install_log(&self) -> PathBuf {
        self.work.join("install.log")
    }
}

/// Which accelerator QEMU runs with: KVM only where it is real hardware virtualization.
pub fn pick_accel() -> (&'static str, String) {
    let real_kvm = (Path::new("/sys/module/kvm_intel").exists()
        || Path::new("/sys/module/kvm_amd").exists())
        && !Path::new("/sys/module/kvm_pvm").exists()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
    if std::env::var("VB_ACCEL").as_deref() == Ok("tcg") {
        ("tcg", "TCG (forced by VB_ACCEL=tcg)".into())
    } else if real_kvm {
        ("kvm", "KVM (hardware virtualization)".into())
    } else if Path::new("/sys/module/kvm_pvm").exists() {
        (
            "tcg",
            "TCG (/dev/kvm is a PVM device that cannot boot a stock guest kernel)".into(),
        )
    } else {
        ("tcg", "TCG (no usable /dev/kvm)".into())
    }
}

const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t debugfs none /sys/kernel/debug 2>/dev/null
# vbwatch on the kernel command line: vballoon's counters once a second on the third serial
# port, a file on the host that `make watch` follows.
case " $(cat /proc/cmdline) " in *" vbwatch "*)
  (while :; do
     d=$(for x in /sys/bus/virtio/devices/*; do grep -qs 0x0005 $x/device && echo $x/vballoon; done)
     if [ -d "$d" ]; then
       echo "$(cut -d' ' -f1 /proc/uptime) $(cd $d && for f in state target_mib actual_mib inflated_pages deflated_pages alloc_failures floor_episodes oom_deflated_pages host_timeouts last_error; do printf '%s=%s ' $f $(cat $f); done)"
     else
       echo "$(cut -d' ' -f1 /proc/uptime) state=unbound"
     fi
     sleep 1
   done > /dev/ttyS2 2>/dev/null &) ;;
esac
# vbparams=a=1,b=2 on the kernel command line: parameters for vballoon.ko.
vbparams=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^vbparams=//p' | tr ',' ' ')
case " $(cat /proc/cmdline) " in
  *" vbload=vballoon "*) insmod /vballoon.ko $vbparams ;;
  *" vbload=c "*) insmod /virtio_balloon.ko ;;
  *" vbload=autoload "*)
    # What udev or mdev do at coldplug: modprobe every device's modalias (modules.alias and
    # the blacklist in /etc/modprobe.d decide which module). Nobody runs insmod.
    for f in /sys/bus/*/devices/*/modalias; do
      read -r a < "$f"; modprobe -q "$a"; echo "$? $a" >> /tmp/coldplug
    done ;;
esac
stty -F /dev/ttyS1 raw -echo
exec </dev/ttyS1 >/dev/ttyS1 2>&1
echo VB_READY
# One command a line, framed as LEN:COMMAND (Shell::frame): a line that lost or gained bytes on
# the way is reported, not run (a syntax error in eval would end this shell, and init with it).
# The line is read in a subshell: busybox ash's `read` drops what it has read of a line when a
# signal interrupts it (a SIGCHLD: this shell is init, every orphan's exit comes here), and a
# subshell has no children. The ':' keeps trailing blanks through the $(...).
while line=$(IFS= read -r l && printf '%s:' "$l"); do
  line=${line%:}
  cmd=${line#*:}
  if [ "${#cmd}" = "${line%%:*}" ]; then
    eval "$cmd" </dev/null
    echo "__VB_END__ $?"
  else
    printf '__VB_GARBLED__ %s\n' "$line"
    echo "__VB_END__ 255"
  fi
done
"#;

/// Builds the initramfs: static busybox, /init, and both balloon drivers as files.
pub fn build_initramfs(paths: &Paths) -> Result<PathBuf> {
    let root = paths.work.join("initramfs");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "sbin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static")?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        // Debian's list names busybox itself; linking it would clobber the binary.
        if applet == "busybox" || applet.is_empty() {
            continue;
        }
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    std::fs::write(root.join("init"), INIT)?;
    std::fs::set_permissions(
        root.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    build_hog(&paths.work, &root.join("bin/hog"))?;
    std::fs::copy(&paths.vballoon, root.join("vballoon.ko")).context("vballoon.ko")?;
    std::fs::copy(&paths.c_driver, root.join("virtio_balloon.ko")).context("virtio_balloon.ko")?;
    // /lib/modules/<release> as an installed system has it (`vbload=autoload`). A failing
    // installer fails only the scenario that needs it (reboot_reinflates reads the log), not
    // every boot test. The kernel's own modules go in first: the installer's depmod indexes them.
    if let Some(dir) = &paths.kernel_modules {
        stage_kernel_modules(dir, &root.join("lib/modules").join(paths.kernel_release()?))
            .context("staging the kernel's own modules")?;
    }
    if let Err(e) = install_modules(paths, &root) {
        let _ = std::fs::write(paths.install_log(), format!("{e:#}\n"));
        eprintln!("qemu-test: installing the modules into the initramfs: {e:#}");
    }
    let out = paths.work.join("initramfs.cpio.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
            root.display(),
            out.display()
        ))
        .status()?;
    if !status.success() {
        bail!("cpio failed");
    }
    // QEMU's microvm loads the initrd to end just below the top of RAM, rounding its start
    // down to a page, without leaving room for the ACPI tables it keeps in RAM's last 1 KiB:
    // unless the initrd's size ends in the first ~3 KiB of a page, it overwrites them and the
    // guest hangs in ACPI setup. Zero padding to a whole page (which the kernel's initramfs
    // unpacker skips) leaves the tables alone whatever the drivers' sizes.
    let len = std::fs::metadata(&out)?.len();
    let pad = (4096 - len % 4096) % 4096;
    if pad > 0 {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&out)?;
        f.write_all(&vec![0u8; pad as usize])?;
    }
    Ok(out)
}

/// [`STAGED_MODULES`] and what they depend on (each module's `depends`, read with the host's
/// `modinfo`: a package's module tree has no `modules.dep`, depmod makes that at install),
/// copied from the kernel's module directory `from` to the same paths under `to`, decompressed
/// (busybox's modprobe loads plain `.ko` files).
fn stage_kernel_modules(from: &Path, to: &Path) -> Result<()> {
    // Module name -> its path relative to `from`, over the whole tree.
    let mut files = std::collections::HashMap::new();
    let mut dirs = vec![from.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("{}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if let Some(f) = p.file_name().and_then(|f| f.to_str()) {
                if let Some((stem, _)) = f.split_once(".ko") {
                    let rel = p.strip_prefix(from)?.to_string_lossy().into_owned();
                    files.insert(stem.replace('-', "_"), rel);
                }
            }
        }
    }
    let mut want: Vec<String> = Vec::new();
    let mut todo: Vec<String> = STAGED_MODULES.iter().map(|m| m.to_string()).collect();
    while let Some(name) = todo.pop() {
        let rel = files
            .get(&name)
            .with_context(|| format!("no {name}.ko* under {}", from.display()))?;
        if want.contains(rel) {
            continue;
        }
        let out = Command::new("modinfo")
            .args(["-F", "depends"])
            .arg(from.join(rel))
            .output()
            .context("modinfo (kmod)")?;
        ensure!(out.status.success(), "modinfo {rel}: {}", out.status);
        let deps = String::from_utf8_lossy(&out.stdout);
        todo.extend(
            deps.trim()
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_")),
        );
        want.push(rel.clone());
    }
    for m in &want {
        let m = m.as_str();
        let (plain, tool) = if let Some(p) = m.strip_suffix(".xz") {
            (p, Some("xz"))
        } else if let Some(p) = m.strip_suffix(".zst") {
            (p, Some("zstd"))
        } else if let Some(p) = m.strip_suffix(".gz") {
            (p, Some("gzip"))
        } else {
            (m, None)
        };
        let dst = to.join(plain);
        std::fs::create_dir_all(dst.parent().context("module path")?)?;
        match tool {
            None => {
                std::fs::copy(from.join(m), &dst).with_context(|| m.to_string())?;
            }
            Some(tool) => {
                let out = Command::new(tool)
                    .args(["-dc"])
                    .arg(from.join(m))
                    .output()
                    .with_context(|| format!("{tool} -dc {m}"))?;
                ensure!(out.status.success(), "{tool} -dc {m}: {}", out.status);
                std::fs::write(&dst, out.stdout)?;
            }
        }
    }
    Ok(())
}

/// The guest's /lib/modules/<release>: the in-tree driver where the kernel's `modules_install`
/// puts it (`kernel/drivers/virtio/virtio_balloon.ko`, carrying the same alias as vballoon), and
/// vballoon installed by the project's installer (`scripts/install.sh --destdir`: `extra/`, a
/// modprobe.d file blacklisting the in-tree driver, `depmod -b`). The installer's output goes to
/// [`Paths::install_log`].
fn install_modules(paths: &Paths, root: &Path) -> Result<()> {
    let log = paths.install_log();
    let _ = std::fs::remove_file(&log);
    let intree = root
        .join("lib/modules")
        .join(paths.kernel_release()?)
        .join("kernel/drivers/virtio");
    std::fs::create_dir_all(&intree)?;
    std::fs::copy(&paths.c_driver, intree.join("virtio_balloon.ko"))?;
    let installer = paths.root.join("scripts/install.sh");
    let out = Command::new("bash")
        .arg(&installer)
        .arg("--kdir")
        .arg(&paths.kdir)
        .arg("--destdir")
        .arg(root)
        .arg("--module")
        .arg(&paths.vballoon)
        .output()
        .with_context(|| format!("bash {}", installer.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&log, &text)?;
    ensure!(
        out.status.success(),
        "{} failed ({}): {}",
        installer.display(),
        out.status,
        text.trim()
    );
    Ok(())
}

/// A guest program that takes memory: `hog MIB [SECS]` maps MIB MiB of anonymous memory,
/// writes a non-zero byte to every page (so the host cannot treat it as zero pages), creates
/// `/tmp/hog.held`, holds it all SECS seconds (default 0), then frees it and exits 0. Killed by
/// the OOM killer, it exits non-zero. `hog MIB SECS K` gives every other K KiB back right after
/// touching; `hog MIB SECS K later` only when it gets SIGUSR1 while holding (so the holes are
/// made after whatever the caller allocates meanwhile, which would otherwise fill them).
const HOG_C: &str = r#"
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
static volatile sig_atomic_t punch;
static void on_usr1(int sig)
{
	(void)sig;
	punch = 1;
}
/* Unmaps every other `gap` bytes of each chunk: 0, or 3 if the kernel refused. */
static int holes(char **chunks, long mib, long gap)
{
	for (long c = 0; c < mib; c++)
		for (long i = gap; i < (1 << 20); i += 2 * gap)
			if (munmap(chunks[c] + i, gap))
				return 3;
	return 0;
}
/* 1 MiB at a time, so no single mapping is refused by the overcommit heuristic. */
int main(int argc, char **argv)
{
	long mib = argc > 1 ? atol(argv[1]) : 0;
	long secs = argc > 2 ? atol(argv[2]) : 0;
	/* With a third argument K: after touching, give every other K KiB back to the kernel
	 * (munmap: the guest kernel has no madvise), so part of the guest's free memory is small
	 * pieces scattered through memory that is still in use (a fragmented guest). */
	long gap = argc > 3 ? atol(argv[3]) * 1024 : 0;
	int later = argc > 4;
	if (gap < 4096 || gap > (1 << 19) || (1 << 20) % (2 * gap))
		gap = 0;
	/* Before touching: the caller signals once it sees /tmp/hog.held. */
	if (later)
		signal(SIGUSR1, on_usr1);
	char **chunks = calloc(mib > 0 ? mib : 1, sizeof(*chunks));
	if (!chunks)
		return 2;
	for (long c = 0; c < mib; c++) {
		chunks[c] = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (chunks[c] == MAP_FAILED)
			return 2;
		for (long i = 0; i < (1 << 20); i += 4096)
			chunks[c][i] = 0x5a;
	}
	if (gap && !later && holes(chunks, mib, gap))
		return 3;
	if (secs > 0) {
		unsigned int left = secs;
		close(open("/tmp/hog.held", O_CREAT | O_WRONLY, 0644));
		while (left) {
			left = sleep(left);
			if (later && punch) {
				later = 0;
				if (gap && holes(chunks, mib, gap))
					return 3;
			}
		}
	}
	/* munmap of a range with holes in it is fine: they are simply not mapped. */
	for (long c = 0; c < mib; c++)
		munmap(chunks[c], 1 << 20);
	return 0;
}
"#;

/// Builds the hog statically with the host's gcc (libc6-dev), for the busybox guest.
fn build_hog(work: &Path, out: &Path) -> Result<()> {
    let src = work.join("hog.c");
    std::fs::write(&src, HOG_C)?;
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(out)
        .arg(&src)
        .status()
        .context("gcc")?;
    if !st.success() {
        bail!("building the guest hog with gcc -static failed");
    }
    Ok(())
}

/// The host CPU's clock in kHz (`cpu MHz` of `/proc/cpuinfo`), which TCG's guest TSC follows.
fn host_tsc_khz() -> Result<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo")?;
    info.lines()
        .find_map(|l| {
            l.strip_prefix("cpu MHz")?
                .split(':')
                .nth(1)?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|mhz| (mhz * 1000.0) as u64)
        .ok_or_else(|| anyhow!("no cpu MHz in /proc/cpuinfo"))
}

/// Kernel log patterns that always fail a scenario: warnings, bugs, lockdep and
/// memory-checker reports, Rust panics, lockups.
pub const SPLATS: [&str; 15] = [
    "WARNING:",
    "BUG:",
    "BUG ",
    "kernel BUG",
    "Oops",
    "UBSAN",
    "KASAN",
    "KFENCE",
    "possible circular locking",
    "inconsistent lock state",
    "Invalid wait context",
    "sleeping function called from invalid context",
    "rust_panic",
    "panicked at",
    "soft lockup",
];

/// Patterns that also fail a scenario in which the OOM killer must not act (its report has a
/// call trace).
const ALSO_UNCLEAN: [&str; 4] = [
    "Call Trace",
    "suspected memory leak",
    "rcu_sched self-detected",
    "Out of memory",
];

/// Shell: the name of the driver each balloon device (virtio device type 5) is bound to, one
/// per line.
pub const BALLOON_DRIVER_SH: &str = "for d in /sys/bus/virtio/devices/*; do grep -qs 0x0005 $d/device && basename $(readlink $d/driver); done; true";

/// Options for one guest.
#[derive(Clone, Debug)]
pub struct VmOpts {
    pub mem_mib: u64,
    pub balloon_device: String,
    pub append: String,
    /// Let the machine reset (QMP `system_reset`) instead of exiting on reboot.
    pub allow_reset: bool,
    /// `-M` machine type (QEMU's default `pc` when `None`), e.g. `microvm`.
    pub machine: Option<String>,
    /// More QEMU arguments (e.g. `-global virtio-mmio.force-legacy=false`).
    pub extra: Vec<String>,
    /// The QEMU binary (Debian's `qemu-system-x86_64` when `None`).
    pub qemu: Option<PathBuf>,
    /// A device added over QMP before the guest runs (see [`LateDevice`]).
    pub late_device: Option<LateDevice>,
    /// vballoon's counters once a second to `<guest dir>/watch.log` (`make watch` follows
    /// it): on for the demo, and for every guest when `VB_WATCH` is set.
    pub watch: bool,
    /// A real root filesystem instead of the test initramfs (the Debian guest): its raw image,
    /// attached as virtio-blk with `snapshot=on` (the image stays as built), and the kernel
    /// and initramfs to boot it with.
    pub disk: Option<DiskBoot>,
}

/// How a guest with its own root filesystem boots (see [`VmOpts::disk`]).
#[derive(Clone, Debug)]
pub struct DiskBoot {
    pub image: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// A device created with QMP `device_add` while the machine waits to start (`-S`), once its
/// chardev is connected, then `cont`: a vhost-user device cannot be realized before its
/// backend is connected, and a `reconnect-ms` chardev connects in the background.
#[derive(Clone, Debug)]
pub struct LateDevice {
    pub chardev: String,
    pub driver: String,
    pub id: String,
    /// The other properties, as a JSON object.
    pub props: serde_json::Value,
}

impl Default for VmOpts {
    fn default() -> Self {
        Self {
            mem_mib: 2048,
            balloon_device: "virtio-balloon-pci,id=balloon0".into(),
            append: String::new(),
            allow_reset: false,
            machine: None,
            extra: Vec::new(),
            qemu: None,
            late_device: None,
            watch: std::env::var_os("VB_WATCH").is_some(),
            disk: None,
        }
    }
}

/// A running guest under a QEMU process the harness started itself.
pub struct Vm {
    child: Child,
    qmp: Qmp<qapi::Stream<BufReader<UnixStream>, UnixStream>>,
    pub shell: Shell,
}

impl std::ops::Deref for Vm {
    type Target = Shell;
    fn deref(&self) -> &Shell {
        &self.shell
    }
}

impl std::ops::DerefMut for Vm {
    fn deref_mut(&mut self) -> &mut Shell {
        &mut self.shell
    }
}

/// The guest's shell on its second serial port, and its kernel console log.
pub struct Shell {
    cmd: BufReader<UnixStream>,
    pub console: PathBuf,
}

fn connect_retry(path: &Path, child: &mut Child) -> Result<UnixStream> {
    let start = Instant::now();
    loop {
        if let Ok(s) = UnixStream::connect(path) {
            return Ok(s);
        }
        if let Some(st) = child.try_wait()? {
            bail!("qemu exited early: {st}");
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("no socket {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a guest kernel may print nothing, before it has started init, until the harness
/// calls its boot stalled. Under TCG on a loaded two-core host, a guest has now and then
/// stopped for good early in boot (after "ACPI: PCI: Interrupt link LNKC configured", after
/// "vgaarb: loaded", in microvm), minutes before any module or init could run; a healthy boot
/// here never goes quiet for more than a few seconds before init.
const BOOT_STALL: Duration = Duration::from_secs(60);

/// Boots that stalled before init (see [`BOOT_STALL`]) and were tried again.
static BOOT_RETRIES: AtomicUsize = AtomicUsize::new(0);

/// How many boots stalled before init and were retried in this run.
pub fn boot_retries() -> usize {
    BOOT_RETRIES.load(Ordering::Relaxed)
}

/// Watches the console of a booting guest for a kernel that stops before init.
struct EarlyStall {
    after: Duration,
    len: u64,
    since: Instant,
}

impl EarlyStall {
    fn new(after: Duration) -> Self {
        Self {
            after,
            len: 0,
            since: Instant::now(),
        }
    }

    /// Why the boot is stalled, or `None` while the console grows, once init has run (from
    /// then on a module, ours among them, may be what hangs: that is a failure, not a retry),
    /// or before `after` of silence.
    fn check(&mut self, console: &Path) -> Option<String> {
        let len = std::fs::metadata(console).map(|m| m.len()).unwrap_or(0);
        if len != self.len {
            self.len = len;
            self.since = Instant::now();
            return None;
        }
        if self.since.elapsed() < self.after {
            return None;
        }
        let log = std::fs::read_to_string(console).unwrap_or_default();
        if log.contains(" as init process") {
            return None;
        }
        let last = log.lines().last().unwrap_or("(no console output)");
        Some(format!(
            "the kernel printed nothing for {} s and had not started init; last console line: {last}",
            self.after.as_secs()
        ))
    }
}

/// How one boot attempt ended.
enum Booted {
    Ready(Vm),
    /// The kernel stalled before init (see [`EarlyStall`]), and why.
    Stalled(String),
}

impl Vm {
    /// Boots a guest and waits for its shell. A boot whose kernel stalls before init (no
    /// driver module can have run yet) is tried once more, and says so; a second stall fails.
    pub fn boot(name: &str, paths: &Paths, initramfs: &Path, opts: &VmOpts) -> Result<Vm> {
        let why = match Self::boot_once(name, paths, initramfs, opts)? {
            Booted::Ready(vm) => return Ok(vm),
            Booted::Stalled(why) => why,
        };
        BOOT_RETRIES.fetch_add(1, Ordering::Relaxed);
        println!("    BOOT RETRY {name}: {why}");
        let stalled = paths.work.join(format!("{name}.stalled-console.log"));
        let _ = std::fs::copy(paths.work.join(name).join("console.log"), &stalled);
        match Self::boot_once(name, paths, initramfs, opts)? {
            Booted::Ready(vm) => Ok(vm),
            Booted::Stalled(again) => bail!(
                "guest did not boot, twice: first {why}; then {again}; console tail:\n{}",
                tail_of(&paths.work.join(name).join("console.log"), 30)
            ),
        }
    }

    fn boot_once(name: &str, paths: &Paths, initramfs: &Path, opts: &VmOpts) -> Result<Booted> {
        let dir = paths.work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let qmp_sock = dir.join("qmp.sock");
        let cmd_sock = dir.join("cmd.sock");
        let console = dir.join("console.log");
        let (accel, _) = pick_accel();
        let microvm = opts
            .machine
            .as_deref()
            .is_some_and(|m| m.starts_with("microvm"));
        let mut append = opts.append.clone();
        let watch = opts.watch && !microvm;
        if watch {
            append.push_str(" vbwatch");
        }
        if microvm && accel == "tcg" {
            // microvm has neither HPET nor an ACPI PM timer to calibrate the TSC against, and
            // PIT calibration fails under TCG: give the kernel the host's TSC rate.
            append.push_str(&format!(" tsc_early_khz={}", host_tsc_khz()?));
        }
        let mut c = Command::new(
            opts.qemu
                .as_deref()
                .unwrap_or(Path::new("qemu-system-x86_64")),
        );
        c.args(["-accel", accel, "-nodefaults", "-display", "none"]);
        if !opts.allow_reset {
            c.arg("-no-reboot");
        }
        if opts.late_device.is_some() {
            c.arg("-S");
        }
        if let Some(m) = &opts.machine {
            c.args(["-M", m]);
        }
        c.args(&opts.extra);
        let (kernel, initrd) = match &opts.disk {
            Some(d) => {
                c.arg("-drive").arg(format!(
                    "file={},if=virtio,format=raw,snapshot=on",
                    d.image.display()
                ));
                append.push_str(" root=LABEL=vbroot ro");
                (d.kernel.as_path(), d.initrd.as_path())
            }
            None => (paths.kernel.as_path(), initramfs),
        };
        c.args(["-m", &format!("{}M", opts.mem_mib), "-smp", "2"])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args([
                "-append",
                &format!("console=ttyS0 panic=-1 oops=panic loglevel=7 {}", append),
            ])
            .args(if opts.balloon_device.is_empty() {
                vec![]
            } else {
                vec!["-device", &opts.balloon_device]
            })
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_sock.display()))
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-chardev")
            .arg(format!(
                "socket,id=cmd,path={},server=on,wait=off",
                cmd_sock.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("qemu.stderr"))?);
        if microvm {
            // microvm makes one ISA serial port from -serial; the shell's is added by hand.
            c.args(["-device", "isa-serial,chardev=cmd,iobase=0x2f8,irq=3"]);
        } else {
            c.args(["-serial", "chardev:cmd"]);
        }
        if watch {
            // The third port (ttyS2): the guest's counter lines.
            c.arg("-serial")
                .arg(format!("file:{}", dir.join("watch.log").display()));
        }
        if accel == "kvm" {
            c.args(["-cpu", "host"]);
        }
        let mut child = c.spawn().context("starting qemu-system-x86_64")?;
        let cmd = connect_retry(&cmd_sock, &mut child)?;
        let q = connect_retry(&qmp_sock, &mut child)?;
        q.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut qmp = Qmp::new(qapi::Stream::new(BufReader::new(q.try_clone()?), q));
        qmp.handshake()
            .map_err(|e| anyhow!("qmp handshake: {e:?}"))?;
        let mut vm = Vm {
            child,
            qmp,
            shell: Shell::new(cmd, console),
        };
        if let Some(d) = &opts.late_device {
            vm.add_late_device(d)?;
        }
        let mut stall = EarlyStall::new(BOOT_STALL);
        let waited = vm
            .shell
            .wait_line_or("VB_READY", Duration::from_secs(180), &mut |c| {
                stall.check(c)
            })
            .context("guest did not boot")?;
        match waited {
            Waited::Line(_) => Ok(Booted::Ready(vm)),
            Waited::GaveUp(why) => {
                let cpus = vm.cpu_states();
                Ok(Booted::Stalled(format!("{why}; vCPUs: {cpus}")))
            }
        }
    }

    /// Where each vCPU is (HMP `info registers -a`: RIP and HLT), for a stalled guest's report.
    fn cpu_states(&mut self) -> String {
        let out = self.qmp.execute(&qmp::human_monitor_command {
            command_line: "info registers -a".into(),
            cpu_index: None,
        });
        match out {
            Ok(out) => cpu_summary(&out),
            Err(_) => "(info registers failed)".into(),
        }
    }

    fn add_late_device(&mut self, d: &LateDevice) -> Result<()> {
        let start = Instant::now();
        loop {
            let chardevs = self
                .qmp
                .execute(&qmp::query_chardev {})
                .map_err(|e| anyhow!("query-chardev: {e:?}"))?;
            let connected = chardevs
                .iter()
                .any(|c| c.label == d.chardev && !c.filename.starts_with("disconnected"));
            if connected {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("chardev {} did not connect: {chardevs:?}", d.chardev);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.device_add(&d.driver, &d.id, d.props.clone())?;
        self.cont()
    }

    /// Starts a migration of the running guest to the file `path` (`migrate` with `file:`),
    /// at `max_bandwidth` bytes per second.
    pub fn migrate_to_file(&mut self, path: &Path, max_bandwidth: u64) -> Result<()> {
        self.qmp
            .execute(&qmp::migrate_set_parameters(qmp::MigrateSetParameters {
                max_bandwidth: Some(max_bandwidth),
                ..Default::default()
            }))
            .map_err(|e| anyhow!("migrate-set-parameters: {e:?}"))?;
        self.qmp
            .execute(&qmp::migrate {
                uri: Some(format!("file:{}", path.display())),
                channels: None,
                detach: None,
                resume: None,
            })
            .map_err(|e| anyhow!("migrate: {e:?}"))?;
        Ok(())
    }

    /// `query-migrate`: the status (as QEMU names it) and the RAM bytes transferred so far.
    pub fn migration(&mut self) -> Result<(String, u64)> {
        let info = self
            .qmp
            .execute(&qmp::query_migrate {})
            .map_err(|e| anyhow!("query-migrate: {e:?}"))?;
        let status = info
            .status
            .map(|s| {
                serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let transferred = info.ram.map_or(0, |r| r.transferred.max(0) as u64);
        Ok((status, transferred))
    }

    /// Waits for the migration to complete; returns the RAM bytes transferred.
    pub fn wait_migration(&mut self, timeout: Duration) -> Result<u64> {
        let start = Instant::now();
        loop {
            let (status, bytes) = self.migration()?;
            match status.as_str() {
                "completed" => return Ok(bytes),
                "failed" | "cancelled" => bail!("migration {status}"),
                _ => {}
            }
            if start.elapsed() > timeout {
                bail!("migration still {status} after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Cancels the migration in progress.
    pub fn migrate_cancel(&mut self) -> Result<()> {
        self.qmp
            .execute(&qmp::migrate_cancel {})
            .map_err(|e| anyhow!("migrate_cancel: {e:?}"))?;
        Ok(())
    }

    /// The device features the host sees negotiated (`x-query-virtio-status` of the balloon's
    /// virtio backend): QEMU's names of the device-specific bits.
    pub fn host_seen_features(&mut self) -> Result<Vec<String>> {
        let st = self
            .qmp
            .execute(&qmp::x_query_virtio_status {
                path: "/machine/peripheral/balloon0/virtio-backend".into(),
            })
            .map_err(|e| anyhow!("x-query-virtio-status: {e:?}"))?;
        let mut f = st.guest_features.dev_features.unwrap_or_default();
        f.sort();
        Ok(f)
    }

    /// Resumes a stopped guest (`cont`), e.g. after a migration completed.
    pub fn cont(&mut self) -> Result<()> {
        self.qmp
            .execute(&qmp::cont {})
            .map_err(|e| anyhow!("cont: {e:?}"))?;
        Ok(())
    }

    /// The QEMU process's resident memory (`VmRSS`), in bytes.
    pub fn qemu_rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| anyhow!("no VmRSS for qemu"))
    }

    /// The QEMU process's id.
    pub fn qemu_pid(&self) -> u32 {
        self.child.id()
    }

    /// The host thread ids of the vCPUs (QMP `query-cpus-fast`, `thread-id`), without
    /// duplicates (single-threaded TCG runs every vCPU on one thread).
    pub fn vcpu_threads(&mut self) -> Result<Vec<u32>> {
        let cpus = self
            .qmp
            .execute(&qmp::query_cpus_fast {})
            .map_err(|e| anyhow!("query-cpus-fast: {e:?}"))?;
        let mut tids = Vec::new();
        for c in cpus {
            let v = serde_json::to_value(&c)?;
            let tid = v["thread-id"]
                .as_u64()
                .ok_or_else(|| anyhow!("query-cpus-fast: no thread-id in {v}"))?;
            tids.push(u32::try_from(tid)?);
        }
        tids.sort_unstable();
        tids.dedup();
        Ok(tids)
    }

    /// Starts `hog MIB 3600 [ARGS]` in the background and waits (up to 600 s) until it holds its
    /// memory (`/tmp/hog.held`). Returns its pid; fails if it dies first.
    pub fn hog_held(&mut self, mib: u64, args: &str) -> Result<u32> {
        let pid = self.sh(&format!(
            "rm -f /tmp/hog.held; hog {mib} 3600 {args} >/dev/null 2>&1 & echo $!"
        ))?;
        let pid: u32 = pid.trim().parse().context("hog pid")?;
        let t = Instant::now();
        while self
            .sh_rc("test -e /tmp/hog.held", Duration::from_secs(60))?
            .0
            != 0
        {
            let (alive, _) = self.sh_rc(&format!("kill -0 {pid}"), Duration::from_secs(60))?;
            ensure!(
                alive == 0,
                "the {mib} MiB hog died before it held its memory"
            );
            ensure!(
                t.elapsed() < Duration::from_secs(600),
                "the {mib} MiB hog did not finish touching its memory in 600 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(pid)
    }

    /// Asks the host side for a guest size of `bytes` (QMP `balloon`).
    pub fn balloon(&mut self, bytes: u64) -> Result<()> {
        self.qmp
            .execute(&qmp::balloon {
                value: bytes as i64,
            })
            .map_err(|e| anyhow!("balloon: {e:?}"))?;
        Ok(())
    }

    /// QMP `query-balloon` actual, in bytes (guest size as the host sees it).
    pub fn actual(&mut self) -> Result<u64> {
        let info = self
            .qmp
            .execute(&qmp::query_balloon {})
            .map_err(|e| anyhow!("query-balloon: {e:?}"))?;
        Ok(info.actual as u64)
    }

    /// Waits until `query-balloon` reports `bytes`; returns how long it took.
    pub fn wait_actual(&mut self, bytes: u64, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let a = self.actual()?;
            if a == bytes {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "query-balloon actual {} MiB, wanted {} MiB after {:?}",
                    a / MIB,
                    bytes / MIB,
                    timeout
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `query-balloon` as fast as QMP answers until it differs from `from`; returns how
    /// long that took.
    pub fn wait_actual_change(&mut self, from: u64, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.actual()? != from {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!("query-balloon stayed at {} MiB for {timeout:?}", from / MIB);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until `query-balloon` stops moving for `still`; returns the value.
    pub fn wait_actual_settled(&mut self, still: Duration, timeout: Duration) -> Result<u64> {
        let start = Instant::now();
        let mut last = self.actual()?;
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let a = self.actual()?;
            if a != last {
                last = a;
                since = Instant::now();
            } else if since.elapsed() >= still {
                return Ok(a);
            }
            if start.elapsed() > timeout {
                bail!(
                    "query-balloon still moving after {timeout:?} (at {} MiB)",
                    a / MIB
                );
            }
        }
    }

    /// `qom-get` of a property, as JSON.
    pub fn qom_get(&mut self, path: &str, property: &str) -> Result<serde_json::Value> {
        self.qmp
            .execute(&qmp::qom_get {
                path: path.into(),
                property: property.into(),
            })
            .map_err(|e| anyhow!("qom-get {path} {property}: {e:?}"))
    }

    /// `qom-set` of a property.
    pub fn qom_set(&mut self, path: &str, property: &str, value: serde_json::Value) -> Result<()> {
        self.qmp
            .execute(&qmp::qom_set {
                path: path.into(),
                property: property.into(),
                value,
            })
            .map_err(|e| anyhow!("qom-set {path} {property}: {e:?}"))?;
        Ok(())
    }

    /// Resets the machine (QMP `system_reset`) and waits for the guest shell to come back.
    /// QMP `device_add` of `driver` with id `id` and the other properties `props` (a JSON
    /// object).
    pub fn device_add(&mut self, driver: &str, id: &str, props: serde_json::Value) -> Result<()> {
        self.qmp
            .execute(&qmp::device_add {
                bus: None,
                id: Some(id.into()),
                driver: driver.into(),
                arguments: serde_json::from_value(props)?,
            })
            .map_err(|e| anyhow!("device_add {driver}: {e:?}"))?;
        Ok(())
    }

    /// QMP `device_del` of `id`, then waits until QEMU has removed it (the guest has to eject
    /// it first: ACPI hotplug). Returns how long that took, or `None` if the device is still
    /// there after `timeout`.
    pub fn device_del(&mut self, id: &str, timeout: Duration) -> Result<Option<Duration>> {
        self.qmp
            .execute(&qmp::device_del { id: id.into() })
            .map_err(|e| anyhow!("device_del {id}: {e:?}"))?;
        let start = Instant::now();
        let path = format!("/machine/peripheral/{id}");
        while start.elapsed() < timeout {
            if self.qom_get(&path, "type").is_err() {
                return Ok(Some(start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    pub fn system_reset(&mut self) -> Result<()> {
        self.qmp
            .execute(&qmp::system_reset {})
            .map_err(|e| anyhow!("system_reset: {e:?}"))?;
        self.wait_line("VB_READY", Duration::from_secs(180))
            .context("guest did not come back after reset")?;
        Ok(())
    }

    /// Powers the guest off and waits for QEMU to exit.
    pub fn shutdown(self) -> Result<()> {
        self.poweroff(Duration::from_secs(30)).map(drop)
    }

    /// Writes one command line to the guest shell, not waiting for its end marker.
    fn send_line(&mut self, cmd: &str) -> Result<()> {
        self.shell.send(cmd)
    }

    /// Sends `cmd` to the guest shell without waiting for it to finish (a `systemctl reboot`
    /// that ends the shell), then waits up to `timeout` for the shell to come back (`VB_READY`,
    /// the next boot's; needs [`VmOpts::allow_reset`]).
    pub fn run_until_ready(&mut self, cmd: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        self.send_line(cmd)?;
        self.wait_line("VB_READY", timeout)
            .with_context(|| format!("the guest did not come back after {cmd:?}"))?;
        Ok(start.elapsed())
    }

    /// Sends `cmd` (e.g. `systemctl poweroff`: init's whole shutdown) and waits up to `timeout`
    /// for QEMU to exit by itself; how long that took, or `None` (QEMU is then told to quit).
    pub fn run_until_exit(mut self, cmd: &str, timeout: Duration) -> Result<Option<Duration>> {
        let start = Instant::now();
        self.send_line(cmd)?;
        while start.elapsed() < timeout {
            if self.child.try_wait()?.is_some() {
                return Ok(Some(start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.qmp.execute(&qmp::quit {});
        Ok(None)
    }

    /// Powers the guest off (`poweroff -f`: the kernel's shutdown path, every driver's
    /// `.shutdown`, no init scripts) and waits up to `timeout` for QEMU to exit by itself.
    /// Returns how long that took, or `None` if the guest did not go down (QEMU is then told
    /// to quit).
    pub fn poweroff(self, timeout: Duration) -> Result<Option<Duration>> {
        self.run_until_exit("sync; poweroff -f", timeout)
    }
}

impl Shell {
    pub fn new(cmd: UnixStream, console: PathBuf) -> Self {
        Self {
            cmd: BufReader::new(cmd),
            console,
        }
    }

    pub fn wait_line(&mut self, want: &str, timeout: Duration) -> Result<Vec<String>> {
        match self.wait_line_or(want, timeout, &mut |_| None)? {
            Waited::Line(lines) => Ok(lines),
            Waited::GaveUp(why) => bail!("{why}"),
        }
    }

    /// [`Self::wait_line`], which also asks `give_up` (with the console's path) about twice a
    /// second whether to stop waiting, and why.
    fn wait_line_or(
        &mut self,
        want: &str,
        timeout: Duration,
        give_up: &mut dyn FnMut(&Path) -> Option<String>,
    ) -> Result<Waited> {
        let start = Instant::now();
        let mut lines = Vec::new();
        self.cmd
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = Vec::new();
        loop {
            if start.elapsed() > timeout {
                bail!(
                    "timed out after {:?} waiting for {want:?}; console tail:\n{}",
                    timeout,
                    self.console_tail(30)
                );
            }
            if let Some(why) = give_up(&self.console) {
                return Ok(Waited::GaveUp(why));
            }
            match self.cmd.read_until(b'\n', &mut buf) {
                Ok(0) => {
                    // The kernel's last words (a panic when init exits) reach the console file
                    // a moment after the shell's end.
                    std::thread::sleep(Duration::from_secs(2));
                    lines.push(String::from_utf8_lossy(&buf).into_owned());
                    let said = &lines[lines.len().saturating_sub(10)..];
                    bail!(
                        "guest shell closed; its last output:\n{}\nconsole tail:\n{}",
                        said.join("\n"),
                        self.console_tail(30)
                    )
                }
                Ok(_) if buf.ends_with(b"\n") => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    buf.clear();
                    if line.starts_with(want) {
                        lines.push(line);
                        return Ok(Waited::Line(lines));
                    }
                    lines.push(line);
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The line the guest shell reads for `cmd`: `LEN:COMMAND`, LEN its length in bytes, so the
    /// shell can tell a line that lost or gained bytes on the serial link from a command (it
    /// answers `__VB_GARBLED__ LINE` instead of running it). ASCII only: the guest shells count
    /// characters.
    pub fn frame(cmd: &str) -> Result<String> {
        ensure!(
            cmd.is_ascii() && !cmd.contains('\n'),
            "guest commands are one ASCII line: {cmd:?}"
        );
        Ok(format!("{}:{cmd}\n", cmd.len()))
    }

    /// Writes `cmd` to the guest shell, framed; does not wait for it.
    pub fn send(&mut self, cmd: &str) -> Result<()> {
        let line = Self::frame(cmd)?;
        self.cmd.get_mut().write_all(line.as_bytes())?;
        Ok(())
    }

    /// Runs a shell command in the guest; returns its exit code and output.
    pub fn sh_rc(&mut self, cmd: &str, timeout: Duration) -> Result<(i32, String)> {
        self.send(cmd)?;
        let mut lines = self
            .wait_line("__VB_END__ ", timeout)
            .with_context(|| format!("guest command {cmd:?}"))?;
        if let Some(got) = lines.iter().find_map(|l| l.strip_prefix("__VB_GARBLED__ ")) {
            bail!(
                "the guest shell received {got:?} ({} bytes) for the {} bytes {:?}: the serial \
                 link or the guest shell lost or changed bytes; the command was not run",
                got.len(),
                Self::frame(cmd)?.len() - 1,
                Self::frame(cmd)?.trim_end()
            );
        }
        let end = lines.pop().unwrap_or_default();
        let rc = end
            .trim_start_matches("__VB_END__ ")
            .trim()
            .parse()
            .unwrap_or(-1);
        Ok((rc, lines.join("\n")))
    }

    /// Runs a shell command that must succeed.
    pub fn sh(&mut self, cmd: &str) -> Result<String> {
        let (rc, out) = self.sh_rc(cmd, Duration::from_secs(120))?;
        if rc != 0 {
            bail!("guest command {cmd:?} failed with {rc}: {out}");
        }
        Ok(out)
    }

    /// A /proc/meminfo field, in kB.
    pub fn meminfo_kb(&mut self, key: &str) -> Result<u64> {
        let out = self.sh(&format!("grep '^{key}:' /proc/meminfo"))?;
        out.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no {key} in meminfo: {out}"))
    }

    /// Guest MemTotal in bytes.
    pub fn mem_total(&mut self) -> Result<u64> {
        Ok(self.meminfo_kb("MemTotal")? * 1024)
    }

    /// The guest kernel log.
    pub fn dmesg(&mut self) -> Result<String> {
        self.sh("dmesg")
    }

    /// Like [`Shell::assert_dmesg_clean`], for scenarios where the OOM killer is expected to
    /// act (its report has a call trace): warnings, bugs, lockdep and memory-checker reports
    /// and leaks still fail.
    pub fn assert_no_splats(&mut self) -> Result<()> {
        self.assert_no_reports(&[&SPLATS])
    }

    /// The balloon device's negotiated feature bits (`/sys/bus/virtio/devices/*/features`,
    /// the device with ID 5), as a number.
    pub fn balloon_features(&mut self) -> Result<u64> {
        let out = self.sh(
            "for d in /sys/bus/virtio/devices/*; do grep -q 0x0005 $d/device && cat $d/features; done",
        )?;
        let bits = out.trim();
        if bits.is_empty() {
            bail!("no balloon device features in sysfs");
        }
        Ok(bits
            .chars()
            .take(64)
            .enumerate()
            .filter(|(_, c)| *c == '1')
            .fold(0u64, |acc, (i, _)| acc | (1 << i)))
    }

    /// Fails if the kernel log has a warning, bug, oops, lockdep or memory-checker report.
    /// The lines of a console log (a guest that is gone) that a clean run never has.
    pub fn console_reports(console: &Path) -> Result<Vec<String>> {
        let log = String::from_utf8_lossy(&std::fs::read(console)?).into_owned();
        Ok(log
            .lines()
            .filter(|l| {
                SPLATS
                    .iter()
                    .chain(ALSO_UNCLEAN.iter())
                    .any(|b| l.contains(b))
            })
            .map(str::to_string)
            .collect())
    }

    pub fn assert_dmesg_clean(&mut self) -> Result<()> {
        self.assert_no_reports(&[&SPLATS, &ALSO_UNCLEAN])
    }

    /// Fails if a kernel log line contains any of `patterns`, or kmemleak reports a leak.
    fn assert_no_reports(&mut self, patterns: &[&[&str]]) -> Result<()> {
        let log = self.dmesg()?;
        let hits: Vec<&str> = log
            .lines()
            .filter(|l| {
                patterns
                    .iter()
                    .flat_map(|p| p.iter())
                    .any(|b| l.contains(b))
            })
            .collect();
        if !hits.is_empty() {
            bail!("dmesg has reports:\n{}", hits.join("\n"));
        }
        self.assert_no_leaks()
    }

    /// On kernels with kmemleak: scan now and fail on any leak whose allocation backtrace
    /// goes through a balloon driver (either module).
    pub fn assert_no_leaks(&mut self) -> Result<()> {
        let (rc, _) = self.sh_rc(
            "test -e /sys/kernel/debug/kmemleak",
            Duration::from_secs(10),
        )?;
        if rc != 0 {
            return Ok(());
        }
        let report =
            self.sh("echo scan > /sys/kernel/debug/kmemleak; cat /sys/kernel/debug/kmemleak")?;
        let ours: Vec<&str> = report
            .split("unreferenced object")
            .filter(|r| r.contains("[vballoon]") || r.contains("[virtio_balloon]"))
            .collect();
        if !ours.is_empty() {
            bail!(
                "kmemleak: {} leaks from a balloon driver:\n{}",
                ours.len(),
                ours.join("\n")
            );
        }
        Ok(())
    }

    pub fn console_tail(&self, n: usize) -> String {
        tail_of(&self.console, n)
    }
}

/// The last `n` lines of the file `path` (empty if it cannot be read).
fn tail_of(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Each vCPU's instruction pointer and halt state from HMP `info registers -a` output: `RIP=`
/// in long mode, `EIP=` before it.
fn cpu_summary(out: &str) -> String {
    out.lines()
        .filter(|l| l.starts_with("RIP=") || l.starts_with("EIP="))
        .map(|l| {
            let ip = l.split_whitespace().next().unwrap_or("");
            let hlt = l.split_whitespace().find(|w| w.starts_with("HLT="));
            format!("{ip} {}", hlt.unwrap_or(""))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How [`Shell::wait_line_or`] ended.
enum Waited {
    /// The lines read, the wanted one last.
    Line(Vec<String>),
    /// `give_up` said to stop, and why.
    GaveUp(String),
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cpu_summary, EarlyStall, Shell, INIT};
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    /// The test initramfs's command loop, run by the busybox the initramfs is made from, with
    /// `pieces` written to it (a pause after each piece) and its stdin then closed; its output.
    fn run_loop(prelude: &str, pieces: &[(&str, Duration)]) -> String {
        let body = INIT
            .split("echo VB_READY\n")
            .nth(1)
            .expect("INIT has the loop");
        let mut child = Command::new("/bin/busybox")
            .args(["sh", "-c", &format!("{prelude}\n{body}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("busybox (busybox-static, installed by setup.sh)");
        let mut stdin = child.stdin.take().expect("piped");
        for (piece, pause) in pieces {
            stdin.write_all(piece.as_bytes()).expect("write");
            stdin.flush().expect("flush");
            std::thread::sleep(*pause);
        }
        drop(stdin);
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("piped")
            .read_to_string(&mut out)
            .expect("read");
        assert!(child.wait().expect("wait").success());
        out
    }

    /// A signal in the middle of a line (the SIGCHLD of a background job ending, as init gets
    /// for every orphan) loses nothing: busybox's `read` builtin drops the part of the line it
    /// has read when one interrupts it, which once turned `grep '^MemFree:' /proc/meminfo` into
    /// a syntax error that ended init.
    #[test]
    fn line_survives_a_signal_midway() {
        let line = Shell::frame("echo 'abc  def'; x=5").unwrap();
        let (head, tail) = line.split_at(8);
        let out = run_loop(
            "(sleep 0.3) &",
            &[
                (head, Duration::from_millis(800)),
                (tail, Duration::ZERO),
                (&Shell::frame("echo $x").unwrap(), Duration::ZERO),
            ],
        );
        assert_eq!(out, "abc  def\n__VB_END__ 0\n5\n__VB_END__ 0\n");
    }

    /// A console that stops growing before init is a stall once `after` has passed, with its
    /// last line; one that grows, or has reached init, is not.
    #[test]
    fn early_stall_only_before_init() {
        let dir = std::env::temp_dir().join(format!("vb-stall-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let console = dir.join("console.log");
        let after = Duration::from_secs(1);
        std::fs::write(
            &console,
            "[    1.3] ACPI: PCI: Interrupt link LNKC configured\n",
        )
        .unwrap();
        let mut s = EarlyStall::new(after);
        assert_eq!(s.check(&console), None, "the first look sees it grow");
        assert_eq!(s.check(&console), None, "not yet quiet for long");
        std::thread::sleep(after + Duration::from_millis(100));
        let why = s
            .check(&console)
            .expect("quiet for longer than after, before init");
        assert!(why.ends_with("LNKC configured"), "{why}");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&console)
            .unwrap();
        writeln!(f, "[    2.0] more").unwrap();
        assert_eq!(s.check(&console), None, "it grew again");
        writeln!(f, "[    3.0] Run /init as init process").unwrap();
        let mut s = EarlyStall::new(after);
        assert_eq!(s.check(&console), None);
        std::thread::sleep(after + Duration::from_millis(100));
        assert_eq!(
            s.check(&console),
            None,
            "init ran: a hang from here is not retried"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The stalled guest's report names every vCPU, in long mode and before it.
    #[test]
    fn cpu_summary_reads_info_registers() {
        let out = "CPU#0\r\nRAX=0000000000000000 RBX=0000000000000000\r\n\
RIP=ffffffff81e3c5a4 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r\n\
CPU#1\r\nEIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\r\n";
        assert_eq!(
            cpu_summary(out),
            "RIP=ffffffff81e3c5a4 HLT=1, EIP=0000fff0 HLT=0"
        );
    }

    /// A line that lost bytes is reported and not run, and the shell goes on.
    #[test]
    fn garbled_line_is_not_run() {
        let out = run_loop(
            "",
            &[
                ("31:grep '^MemFree: /proc/meminfo\n", Duration::ZERO),
                (&Shell::frame("echo ok").unwrap(), Duration::ZERO),
            ],
        );
        assert_eq!(
            out,
            "__VB_GARBLED__ 31:grep '^MemFree: /proc/meminfo\n__VB_END__ 255\nok\n__VB_END__ 0\n"
        );
    }
}
