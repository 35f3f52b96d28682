//! One boot: a fresh guest (4 GiB, or the scale run's size) with one driver on one host, and
//! every figure of that pair, in order: HP (qemu host), 1G, the move (3 GiB of a 4 GiB guest),
//! AFTER-HOLD; a scale run has only the move. Each step starts and ends with an empty balloon;
//! a step that fails is recorded against its figures and the boot goes on.

use super::figures::*;
use super::floor::Floor;
use super::probe::{HostKind, Op, Target, Until};
use super::profile::{self, Profile};
use super::threads::{self, Threads};
use crate::guest::{Vm, VmOpts, GIB, MIB};
use crate::hostile;
use crate::scenarios::{Ctx, Drv};
use anyhow::{anyhow, ensure, Result};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The guest's size, and what the move step moves: all of it but 1 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub guest_gib: u64,
}

impl Shape {
    /// The default run's guest: every figure is measured.
    pub const DEFAULT_GIB: u64 = 4;
    /// Scale runs: `VB_BENCH_GUEST_GIB` in this range (this machine has 24 GiB).
    pub const GIB_RANGE: std::ops::RangeInclusive<u64> = 2..=20;

    pub fn guest_mib(self) -> u64 {
        self.guest_gib * 1024
    }

    /// The move step's size in GiB.
    pub fn move_gib(self) -> u64 {
        self.guest_gib.saturating_sub(1)
    }

    /// A scale run (not the default size): only the move and the slab figures.
    pub fn scale(self) -> bool {
        self.guest_gib != Self::DEFAULT_GIB
    }
}

/// What every boot of a run shares.
pub struct Setup<'a> {
    /// Appended to vballoon's insmod.
    pub params: &'a str,
    /// Appended to the guest kernel's command line.
    pub append: &'a str,
    pub shape: Shape,
}
/// How long a balloon move may take under TCG.
const MOVE: Duration = Duration::from_secs(300);
/// What the HP step touches in the guest before inflating (so the host backs it).
const HP_TOUCH_MIB: u64 = 3300;

/// Everything one boot measured.
pub struct Boot {
    pub host: HostKind,
    pub drv: Drv,
    pub round: usize,
    pub figs: BTreeMap<&'static str, Result<f64, String>>,
    pub ops: Vec<Op>,
    /// vballoon's parameters as the guest's sysfs shows them after insmod.
    pub params: Option<String>,
    /// The guest kernel's `mem auto-init:` boot line (whether every allocated page is zeroed).
    pub auto_init: Option<String>,
    /// Slab bytes per cache the bind added (after bind minus before insmod), if read.
    pub slab_bind: Option<BTreeMap<String, f64>>,
    /// Things worth a line in the summary (e.g. a kernel log report).
    pub notes: Vec<String>,
    /// The move's kernel profiles (`VB_BENCH_PROFILE=1`).
    pub profiles: Vec<Profile>,
    /// What the host's threads did during the 1 GiB inflate and the move (`VB_BENCH_THREADS=1`).
    pub threads: Vec<Threads>,
    pub secs: f64,
}

impl Boot {
    /// A boot with nothing measured yet.
    pub(super) fn new(host: HostKind, drv: Drv, round: usize) -> Boot {
        Boot {
            host,
            drv,
            round,
            figs: BTreeMap::new(),
            ops: Vec::new(),
            params: None,
            auto_init: None,
            slab_bind: None,
            notes: Vec::new(),
            profiles: Vec::new(),
            threads: Vec::new(),
            secs: 0.0,
        }
    }

    pub(super) fn set(&mut self, key: &'static str, v: f64) {
        self.figs.insert(key, Ok(v));
    }

    /// Fails every figure of `keys` not measured yet.
    pub(super) fn fail(&mut self, keys: &[&'static str], why: &str) {
        for k in keys {
            self.figs.entry(k).or_insert_with(|| Err(why.to_owned()));
        }
    }
}

const HP: [&str; 3] = [HP_BEFORE, HP_AFTER, HP_KEPT];
const HP_FRAG: [&str; 3] = [FRAG_BEFORE, FRAG_AFTER, FRAG_KEPT];
/// HP-FRAG: a process touches this much, gives every other `FRAG_GAP_KIB` back, and holds
/// the rest, so part of the guest's free memory is small pieces scattered through memory still
/// in use, as after long uptime.
const FRAG_MIB: u64 = 2048;
const FRAG_GAP_KIB: u64 = 64;
const ONE_GIB: [&str; 4] = [REACT_1G, TO_1G, GUEST_CPU_1G, DEVICE_CPU_1G];
const MOVE_FIGS: [&str; 8] = [
    INFLATE,
    DEFLATE,
    INFLATE_FLOOR,
    GUEST_CPU_INFLATE,
    GUEST_CPU_DEFLATE,
    DEVICE_CPU_INFLATE,
    DEVICE_CPU_DEFLATE,
    SLAB_FULL,
];
const AFTER_HOLD: [&str; 2] = [HOLD_MIB, REACT_HOLD];

/// The bytes of each slab cache's active objects (`/proc/slabinfo`: active objects times
/// object size), after dropping the reclaimable dentry and inode caches so they add less noise.
fn slab_caches(vm: &mut Vm) -> Result<BTreeMap<String, f64>> {
    let out = vm.sh(
        "sync; echo 2 > /proc/sys/vm/drop_caches; awk 'NR > 2 { printf \"%s %.0f\\n\", $1, $2 * $4 }' /proc/slabinfo",
    )?;
    parse_slab(&out)
}

/// `name bytes` lines into bytes per cache (a name listed twice is summed).
pub(super) fn parse_slab(out: &str) -> Result<BTreeMap<String, f64>> {
    let mut m = BTreeMap::new();
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        let (name, v) = l
            .split_once(' ')
            .ok_or_else(|| anyhow!("/proc/slabinfo line {l:?}: not `name bytes`"))?;
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|e| anyhow!("/proc/slabinfo line {l:?}: {e}"))?;
        *m.entry(name.to_owned()).or_insert(0.0) += v;
    }
    ensure!(!m.is_empty(), "/proc/slabinfo listed no cache: {out:?}");
    Ok(m)
}

/// The bytes of every slab cache's active objects together.
fn slab_bytes(vm: &mut Vm) -> Result<f64> {
    Ok(slab_caches(vm)?.values().sum())
}

/// `after - before` per cache, over the caches either lists.
pub(super) fn slab_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    let mut d: BTreeMap<String, f64> = after.clone();
    for (k, v) in before {
        *d.entry(k.clone()).or_insert(0.0) -= v;
    }
    d
}

/// What `start` gives the boot.
struct Started {
    t: Target,
    /// vballoon's parameters as loaded.
    params: Option<String>,
    /// The kernel's `mem auto-init:` line.
    auto_init: Option<String>,
    /// Slab bytes per cache after bind minus before insmod, or why they could not be read.
    slab_bind: Result<BTreeMap<String, f64>>,
}

/// Boots the guest, loads `drv` (vballoon with the setup's parameters) and checks it is the
/// one bound.
fn start(ctx: &Ctx, host: HostKind, drv: Drv, setup: &Setup<'_>) -> Result<Started> {
    let name = format!("bench_{}_{}", host.name(), drv.sysfs_name());
    let mem_mib = setup.shape.guest_mib();
    let (mut vm, vhost) = match host {
        HostKind::Qemu => {
            let opts = VmOpts {
                mem_mib,
                append: setup.append.into(),
                ..VmOpts::default()
            };
            (Vm::boot(&name, ctx.paths, ctx.initramfs, &opts)?, None)
        }
        HostKind::VhostRanges => {
            // Same features and ring size as QEMU's virtio-balloon-pci by default: stats, 128.
            let (vm, h) = hostile::boot_vhost(ctx, &name, mem_mib, setup.append, "stats", 128)?;
            (vm, Some(h))
        }
    };
    let insmod = match drv {
        Drv::Rust => format!("{} {}", drv.insmod(), setup.params),
        Drv::C => drv.insmod().to_owned(),
    };
    let slab0 = slab_caches(&mut vm);
    vm.sh(&insmod)?;
    // The balloon device (ID 5) is bound to the driver meant, and only that driver is loaded.
    let bound = vm.sh(
        "for d in /sys/bus/virtio/devices/*; do grep -q 0x0005 $d/device && basename $(readlink $d/driver); done",
    )?;
    ensure!(
        bound.trim() == drv.sysfs_name(),
        "the balloon device is bound to {bound:?}, not {}",
        drv.sysfs_name()
    );
    let mods: Vec<String> = vm
        .sh("cat /proc/modules")?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    ensure!(
        mods == [drv.sysfs_name()],
        "modules loaded: {mods:?}, wanted only {}",
        drv.sysfs_name()
    );
    // Read before anything only one driver's boot runs (the parameters below fork a `cat` per
    // file), so both drivers' boots run the same commands between the two readings: SLUB counts
    // the free objects of a per-CPU slab as active, so a fork can add a whole slab (21 KiB of
    // `mm_struct` on Debian's kernel) that is not the driver's.
    let slab_bind = match (slab0, slab_caches(&mut vm)) {
        (Ok(before), Ok(after)) => Ok(slab_delta(&before, &after)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let p = match drv {
        Drv::Rust => Some(loaded_params(&mut vm)?),
        Drv::C => None,
    };
    let auto_init = vm
        .sh("dmesg | grep -o 'mem auto-init:.*' | head -1")
        .ok()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty());
    let mut t = Target::new(vm, vhost, mem_mib * MIB)?;
    let b = t.ballooned()?;
    ensure!(b == 0, "balloon holds {} MiB at the start", b / MIB);
    Ok(Started {
        t,
        params: p,
        auto_init,
        slab_bind,
    })
}

/// One step of a boot.
type Step<'r> = fn(&mut Run<'r>) -> Result<()>;

/// vballoon's parameters as loaded: sysfs if the module exposes them there, else its bind
/// line (which names the values it runs with).
fn loaded_params(vm: &mut Vm) -> Result<String> {
    let (rc, out) = vm.sh_rc(
        "cd /sys/module/vballoon/parameters 2>/dev/null && for f in *; do echo \"$f=$(cat $f)\"; done",
        Duration::from_secs(30),
    )?;
    if rc == 0 && !out.trim().is_empty() {
        return Ok(out.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    let log = vm.dmesg()?;
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.split_once("vballoon bound: ").map(|(_, r)| r.trim()))
        .ok_or_else(|| anyhow!("no 'vballoon bound' line in the kernel log"))?;
    Ok(format!("bound: {line}"))
}

pub(super) struct Run<'a> {
    pub(super) t: Target,
    pub(super) b: &'a mut Boot,
    floor: Option<&'a Floor>,
    shape: Shape,
}

impl<'r> Run<'r> {
    pub(super) fn op(&mut self, name: &'static str, to: u64, until: Until) -> Result<Op> {
        let op = self.t.op(name, to, until, MOVE)?;
        self.b.ops.push(op.clone());
        Ok(op)
    }

    /// [`Run::op`] until reached, with the host's threads sampled if `VB_BENCH_THREADS=1`.
    fn sampled_op(&mut self, name: &'static str, to: u64) -> Result<Op> {
        let sampler = threads::enabled().then(|| threads::start(self.t.thread_groups()));
        let op = self.op(name, to, Until::Reached);
        if let Some(s) = sampler {
            self.b.threads.push(s.stop(name));
        }
        op
    }

    /// Runs one step; on failure fails its figures and empties the balloon. Returns false
    /// when the balloon cannot be emptied (the boot cannot go on).
    fn step(&mut self, keys: &[&'static str], f: Step<'r>) -> bool {
        if let Err(e) = f(self) {
            let why = format!("{e:#}");
            println!("    failed: {}", why.lines().next().unwrap_or_default());
            let (host, scale) = (self.b.host, self.shape.scale());
            let keys: Vec<&'static str> = keys
                .iter()
                .copied()
                .filter(|k| FIGS.iter().any(|f| f.key == *k && applies(f, host, scale)))
                .collect();
            self.b.fail(&keys, &why);
            let empty = self.t.ballooned().is_ok_and(|b| b == 0)
                || self.t.op("reset", 0, Until::Reached, MOVE).is_ok();
            if !empty {
                return false;
            }
        }
        true
    }

    fn steps(&mut self) -> Result<()> {
        let mut steps: Vec<(&[&'static str], Step<'r>)> = Vec::new();
        if self.shape.scale() {
            steps.push((&MOVE_FIGS, Self::move_all));
        } else {
            if self.b.host == HostKind::Qemu {
                steps.push((&HP, Self::huge_pages));
                steps.push((&HP_FRAG, Self::huge_pages_fragmented));
            }
            steps.push((&ONE_GIB, Self::one_gib));
            steps.push((&MOVE_FIGS, Self::move_all));
            steps.push((&AFTER_HOLD, Self::after_hold));
        }
        for (keys, f) in steps {
            if !self.step(keys, f) {
                return Err(anyhow!(
                    "the balloon could not be emptied after a failed step"
                ));
            }
        }
        if let Err(e) = self.t.vm.assert_no_splats() {
            self.b.notes.push(format!("kernel log: {e:#}"));
        }
        if let Err(e) = self.t.protocol_clean() {
            self.b.notes.push(format!("vhost host: {e:#}"));
        }
        Ok(())
    }

    /// HP: touch most of the guest so QEMU's RAM is backed (by huge pages where THP can),
    /// inflate half the guest, and see how many huge pages the other half kept.
    fn huge_pages(&mut self) -> Result<()> {
        self.touch_guest()?;
        self.huge_pages_kept("hp-inflate", [HP_BEFORE, HP_AFTER, HP_KEPT])?;
        self.op("hp-deflate", 0, Until::Reached)?;
        Ok(())
    }

    /// Touches most of the guest and frees it, so QEMU's RAM is backed.
    fn touch_guest(&mut self) -> Result<()> {
        let (rc, out) = self
            .t
            .vm
            .sh_rc(&format!("hog {HP_TOUCH_MIB}"), Duration::from_secs(900))?;
        ensure!(rc == 0, "hog {HP_TOUCH_MIB} exited {rc}: {out}");
        Ok(())
    }

    /// QEMU's `AnonHugePages` before and after inflating half the guest, and the share of the
    /// memory not ballooned still in huge pages (`keys`: before, after, kept). Leaves the
    /// balloon at half the guest.
    fn huge_pages_kept(&mut self, op: &'static str, keys: [&'static str; 3]) -> Result<()> {
        std::thread::sleep(Duration::from_secs(2));
        let before = self.t.anon_huge_kib()?;
        self.op(op, 2 * GIB, Until::Reached)?;
        let after = self.t.anon_huge_kib()?;
        self.b.set(keys[0], before as f64);
        self.b.set(keys[1], after as f64);
        self.b.set(
            keys[2],
            after as f64 / ((self.shape.guest_mib() * MIB - 2 * GIB) / 1024) as f64,
        );
        Ok(())
    }

    /// HP-FRAG: as HP, but first a process touches `FRAG_MIB`, gives every other
    /// `FRAG_GAP_KIB` back and holds the rest while the balloon inflates to 2 GiB: the guest's
    /// free memory is then partly whole 2 MiB blocks and partly small pieces scattered through
    /// memory the host backs with huge pages. A balloon that takes those splits the huge pages.
    fn huge_pages_fragmented(&mut self) -> Result<()> {
        self.touch_guest()?;
        let pid = self.t.vm.hog_held(FRAG_MIB, &FRAG_GAP_KIB.to_string())?;
        let avail = self.t.vm.meminfo_kb("MemAvailable")?;
        println!(
            "    HP-FRAG: MemAvailable {} MiB with the fragmenting hog held",
            avail / 1024
        );
        let result = self.huge_pages_kept("frag-inflate", [FRAG_BEFORE, FRAG_AFTER, FRAG_KEPT]);
        self.t.vm.sh_rc(
            &format!("kill {pid} 2>/dev/null; wait {pid}; rm -f /tmp/hog.held"),
            Duration::from_secs(120),
        )?;
        self.op("frag-deflate", 0, Until::Reached)?;
        result
    }

    /// 1G: from an empty balloon to 1 GiB.
    fn one_gib(&mut self) -> Result<()> {
        let idle = self.t.idle_rates(Duration::from_secs(1))?;
        let c0 = self.t.cpu()?;
        let t0 = Instant::now();
        let op = self.sampled_op("inflate-1g", GIB)?;
        let used = self
            .t
            .cpu()?
            .minus(&c0)
            .minus(&idle.scaled(t0.elapsed().as_secs_f64()));
        self.b.set(REACT_1G, op.first_move_ms.unwrap_or_default());
        self.b.set(TO_1G, op.reached_s.unwrap_or_default());
        self.b.set(GUEST_CPU_1G, used.vcpu.max(0.0));
        self.b.set(DEVICE_CPU_1G, used.device().max(0.0));
        self.op("deflate-1g", 0, Until::Reached)?;
        Ok(())
    }

    /// The move: inflate all of the guest but 1 GiB (3 GiB of the default 4), deflate it;
    /// throughput and CPU per GiB, net of the idle rate; the slab growth per GiB ballooned.
    fn move_all(&mut self) -> Result<()> {
        let idle = self.t.idle_rates(Duration::from_secs(1))?;
        let move_gib = self.shape.move_gib();
        let gib = move_gib as f64;
        let mut full = None;
        for (name, to, speed, guest, device) in [
            (
                "inflate-move",
                move_gib * GIB,
                INFLATE,
                GUEST_CPU_INFLATE,
                DEVICE_CPU_INFLATE,
            ),
            (
                "deflate-move",
                0,
                DEFLATE,
                GUEST_CPU_DEFLATE,
                DEVICE_CPU_DEFLATE,
            ),
        ] {
            // A kernel without the profiler fails only the profile, not the move's figures.
            let jiffies0 = if profile::enabled() {
                profile::reset(&mut self.t.vm)
                    .map_err(|e| self.b.notes.push(format!("profile of {name}: {e:#}")))
                    .ok()
            } else {
                None
            };
            let c0 = self.t.cpu()?;
            let t0 = Instant::now();
            let op = self.sampled_op(name, to)?;
            let used = self
                .t
                .cpu()?
                .minus(&c0)
                .minus(&idle.scaled(t0.elapsed().as_secs_f64()));
            if let Some(j0) = jiffies0 {
                match profile::read(&mut self.t.vm, name, j0) {
                    Ok(p) => self.b.profiles.push(p),
                    Err(e) => self.b.notes.push(format!("profile of {name}: {e:#}")),
                }
            }
            let secs = op.reached_s.unwrap_or_default();
            self.b.set(speed, gib / secs);
            self.b.set(guest, used.vcpu.max(0.0) / gib);
            self.b.set(device, used.device().max(0.0) / gib);
            if to > 0 {
                // The floor is the host's time for 3 GiB: only the default run's move.
                if !self.shape.scale() {
                    match self.floor {
                        Some(f) => self.b.set(INFLATE_FLOOR, secs / f.for_host(self.b.host)),
                        None => self.b.fail(&[INFLATE_FLOOR], "no floor was measured"),
                    }
                }
                full = Some(slab_bytes(&mut self.t.vm));
            }
        }
        match (full, slab_bytes(&mut self.t.vm)) {
            (Some(Ok(full)), Ok(empty)) => self.b.set(SLAB_FULL, (full - empty) / 1024.0 / gib),
            (Some(Err(e)), _) | (_, Err(e)) => self.b.fail(&[SLAB_FULL], &format!("{e:#}")),
            (None, Ok(_)) => self.b.fail(&[SLAB_FULL], "no inflate"),
        }
        Ok(())
    }
}

/// Boots one guest for `drv` on `host` and measures every figure of that pair.
pub fn boot_once(
    ctx: &Ctx,
    host: HostKind,
    drv: Drv,
    round: usize,
    setup: &Setup<'_>,
    floor: Option<&Floor>,
) -> Boot {
    let t0 = Instant::now();
    let mut b = Boot::new(host, drv, round);
    let keys: Vec<&'static str> = FIGS
        .iter()
        .filter(|f| applies(f, host, setup.shape.scale()))
        .map(|f| f.key)
        .collect();
    match start(ctx, host, drv, setup) {
        Err(e) => b.fail(&keys, &format!("boot: {e:#}")),
        Ok(st) => {
            b.params = st.params;
            b.auto_init = st.auto_init;
            match st.slab_bind {
                Ok(d) => {
                    b.set(SLAB_BIND, d.values().sum::<f64>() / 1024.0);
                    b.slab_bind = Some(d);
                }
                Err(e) => b.fail(&[SLAB_BIND], &format!("{e:#}")),
            }
            let mut run = Run {
                t: st.t,
                b: &mut b,
                floor,
                shape: setup.shape,
            };
            let r = run.steps();
            let Run { t, .. } = run;
            if let Err(e) = r {
                b.fail(&keys, &format!("boot aborted: {e:#}"));
            }
            if let Err(e) = t.shutdown() {
                b.notes.push(format!("shutdown: {e:#}"));
            }
        }
    }
    b.fail(&keys, "not measured");
    b.secs = t0.elapsed().as_secs_f64();
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_caches_parse_and_subtract() {
        let before = parse_slab("kmalloc-64 6400\ndentry 100\ndentry 50\n").expect("parses");
        assert_eq!(before.get("dentry"), Some(&150.0));
        let after = parse_slab("kmalloc-64 8448\npwq 512\n").expect("parses");
        let d = slab_delta(&before, &after);
        assert_eq!(d.get("kmalloc-64"), Some(&2048.0));
        assert_eq!(d.get("pwq"), Some(&512.0));
        assert_eq!(d.get("dentry"), Some(&-150.0));
        assert!(parse_slab("kmalloc-64\n").is_err());
        assert!(parse_slab("kmalloc-64 many\n").is_err());
        assert!(parse_slab("").is_err());
    }
}
