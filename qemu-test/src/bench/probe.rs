//! What the bench measures through: the balloon's size as the host sees it, polled every
//! [`POLL`] (a series of (t, ballooned bytes) per operation), and the CPU time of QEMU's vCPU
//! threads, of its other threads and of the vhost-user host process.

use super::threads;
use crate::guest::Vm;
use crate::hostile::Host;
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How often the balloon's size is read. QEMU throttles its BALLOON_CHANGE events (one a
/// second), so they are no clock; `query-balloon` (or the vhost host's `query`) is.
pub const POLL: Duration = Duration::from_millis(5);
/// How often it is read until it first moves, so a first reaction is timed to the ms.
pub const POLL_FIRST: Duration = Duration::from_millis(1);
/// Bytes per page of the balloon protocol.
const PAGE: u64 = 4096;

/// The two hosts the bench runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostKind {
    /// QEMU's own `virtio-balloon-pci` (Debian's QEMU): one madvise(DONTNEED) per 4 KiB page.
    Qemu,
    /// `vballoon-host` (vhost-user) in its normal mode: one fallocate(PUNCH_HOLE) per run of
    /// contiguous PFNs in a buffer (at most 256 PFNs, so at most 1 MiB).
    VhostRanges,
}

impl HostKind {
    pub fn name(self) -> &'static str {
        match self {
            HostKind::Qemu => "qemu",
            HostKind::VhostRanges => "vhost-ranges",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.trim() {
            "qemu" => Ok(HostKind::Qemu),
            "vhost-ranges" => Ok(HostKind::VhostRanges),
            other => bail!("unknown bench host {other:?} (qemu, vhost-ranges)"),
        }
    }
}

/// A persistent connection to the vhost host's control socket.
struct Ctl {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Ctl {
    fn cmd(&mut self, line: &str) -> Result<Value> {
        self.w.write_all(line.as_bytes())?;
        self.w.write_all(b"\n")?;
        let mut answer = String::new();
        self.r.read_line(&mut answer)?;
        let v: Value = serde_json::from_str(answer.trim())
            .with_context(|| format!("host answer to {line:?}: {answer:?}"))?;
        ensure!(v["ok"] == Value::Bool(true), "host refused {line:?}: {v}");
        Ok(v)
    }
}

/// CPU seconds (utime + stime) of the parts of the machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// QEMU's vCPU threads: the guest's own work (under TCG also the translation).
    pub vcpu: f64,
    /// QEMU's other threads (main loop: the virtio-balloon device, QMP; RCU, workers), dead
    /// ones included.
    pub qemu_other: f64,
    /// The vhost-user host process (0 on the qemu host).
    pub host: f64,
}

impl Cpu {
    /// CPU spent on the device side: QEMU's non-vCPU threads plus the vhost host.
    pub fn device(&self) -> f64 {
        self.qemu_other + self.host
    }

    pub fn minus(&self, o: &Cpu) -> Cpu {
        Cpu {
            vcpu: self.vcpu - o.vcpu,
            qemu_other: self.qemu_other - o.qemu_other,
            host: self.host - o.host,
        }
    }

    pub fn scaled(&self, k: f64) -> Cpu {
        Cpu {
            vcpu: self.vcpu * k,
            qemu_other: self.qemu_other * k,
            host: self.host * k,
        }
    }
}

/// utime + stime of a `/proc/.../stat` file, in clock ticks.
fn stat_ticks(path: &str) -> Result<u64> {
    let s = std::fs::read_to_string(path).with_context(|| path.to_owned())?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = s
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("{path}: no ')'"))?
        .1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = f.get(11).ok_or_else(|| anyhow!("{path}: short"))?.parse()?;
    let stime: u64 = f.get(12).ok_or_else(|| anyhow!("{path}: short"))?.parse()?;
    Ok(utime + stime)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// One operation: a new balloon size asked for at t = 0, and what the host saw after.
#[derive(Clone, Debug)]
pub struct Op {
    pub name: &'static str,
    /// (ms since the command, ballooned bytes), one sample per poll; t is taken when the
    /// answer arrived.
    pub points: Vec<(f64, u64)>,
    /// When the size first moved toward `to`, ms.
    pub first_move_ms: Option<f64>,
    /// When the size reached `to`, s.
    pub reached_s: Option<f64>,
}

/// When an operation's polling stops.
pub enum Until {
    /// The size equals the target.
    Reached,
    /// The size first moved toward the target.
    Moved,
    /// After this long, wherever the size is.
    For(Duration),
}

/// A booted guest with its balloon host, seen from the host side.
pub struct Target {
    pub vm: Vm,
    vhost: Option<(Host, Ctl)>,
    /// Guest RAM, bytes (QMP `query-balloon` reports RAM minus the balloon).
    ram: u64,
    vcpus: Vec<u32>,
    tck: f64,
}

impl Target {
    pub fn new(mut vm: Vm, vhost: Option<Host>, ram: u64) -> Result<Target> {
        let vcpus = vm.vcpu_threads()?;
        let vhost = match vhost {
            Some(h) => {
                let s = UnixStream::connect(h.control_path()).context("host control socket")?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let ctl = Ctl {
                    r: BufReader::new(s.try_clone()?),
                    w: s,
                };
                Some((h, ctl))
            }
            None => None,
        };
        Ok(Target {
            vm,
            vhost,
            ram,
            vcpus,
            tck: clk_tck(),
        })
    }

    /// Asks for `bytes` in the balloon (QMP `balloon` of RAM minus that; the vhost host's
    /// `target` in pages).
    pub fn set(&mut self, bytes: u64) -> Result<()> {
        match &mut self.vhost {
            Some((_, ctl)) => ctl.cmd(&format!("target {}", bytes / PAGE)).map(drop),
            None => self.vm.balloon(self.ram - bytes),
        }
    }

    /// The balloon's size as the host sees it (the driver's `actual`), bytes.
    pub fn ballooned(&mut self) -> Result<u64> {
        match &mut self.vhost {
            Some((_, ctl)) => {
                let q = ctl.cmd("query")?;
                let pages = q["actual"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("host query has no actual: {q}"))?;
                Ok(pages * PAGE)
            }
            None => Ok(self.ram.saturating_sub(self.vm.actual()?)),
        }
    }

    /// Asks for `to` bytes and polls every [`POLL_FIRST`] until the size moves, then every
    /// [`POLL`], until `until` (or fails after `timeout`).
    pub fn op(
        &mut self,
        name: &'static str,
        to: u64,
        until: Until,
        timeout: Duration,
    ) -> Result<Op> {
        let from = self.ballooned()?;
        let mut op = Op {
            name,
            points: Vec::new(),
            first_move_ms: None,
            reached_s: None,
        };
        let t0 = Instant::now();
        self.set(to)?;
        let mut next = Duration::ZERO;
        loop {
            next += if op.first_move_ms.is_none() {
                POLL_FIRST
            } else {
                POLL
            };
            if let Some(wait) = next.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
            let v = self.ballooned()?;
            let t = t0.elapsed();
            op.points.push((t.as_secs_f64() * 1000.0, v));
            let moved = (to < from && v < from) || (to > from && v > from) || to == from;
            if moved && op.first_move_ms.is_none() {
                op.first_move_ms = Some(t.as_secs_f64() * 1000.0);
            }
            if v == to && op.reached_s.is_none() {
                op.reached_s = Some(t.as_secs_f64());
            }
            match until {
                Until::Reached if op.reached_s.is_some() => return Ok(op),
                Until::Moved if op.first_move_ms.is_some() => return Ok(op),
                Until::For(d) if t >= d => return Ok(op),
                _ => {}
            }
            if t > timeout {
                bail!(
                    "{name}: balloon at {} MiB {:.0} s after asking for {} MiB (from {} MiB)",
                    v >> 20,
                    t.as_secs_f64(),
                    to >> 20,
                    from >> 20
                );
            }
        }
    }

    /// The threads `VB_BENCH_THREADS=1` samples: QEMU's main loop, its vCPUs and, on the
    /// range host, the vhost-user host's threads.
    pub fn thread_groups(&self) -> Vec<threads::Group> {
        let pid = self.vm.qemu_pid();
        let mut g = vec![
            threads::Group {
                name: "QEMU main loop".into(),
                threads: vec![(pid, pid)],
            },
            threads::Group {
                name: "vCPU".into(),
                threads: self.vcpus.iter().map(|&t| (pid, t)).collect(),
            },
        ];
        if let Some((h, _)) = &self.vhost {
            g.push(threads::process_group("vhost host", h.pid()));
        }
        g
    }

    /// CPU seconds so far of the vCPU threads, QEMU's other threads and the vhost host.
    pub fn cpu(&self) -> Result<Cpu> {
        let pid = self.vm.qemu_pid();
        let total = stat_ticks(&format!("/proc/{pid}/stat"))?;
        let mut vcpu = 0;
        for t in &self.vcpus {
            vcpu += stat_ticks(&format!("/proc/{pid}/task/{t}/stat"))?;
        }
        let host = match &self.vhost {
            Some((h, _)) => stat_ticks(&format!("/proc/{}/stat", h.pid()))?,
            None => 0,
        };
        Ok(Cpu {
            vcpu: vcpu as f64 / self.tck,
            qemu_other: total.saturating_sub(vcpu) as f64 / self.tck,
            host: host as f64 / self.tck,
        })
    }

    /// CPU seconds per second while nothing happens but the polling itself, measured over
    /// `d`: subtracted from an operation's CPU so the figures count the balloon's work only.
    pub fn idle_rates(&mut self, d: Duration) -> Result<Cpu> {
        let c0 = self.cpu()?;
        let t0 = Instant::now();
        while t0.elapsed() < d {
            std::thread::sleep(POLL);
            self.ballooned()?;
        }
        let c1 = self.cpu()?;
        Ok(c1.minus(&c0).scaled(1.0 / t0.elapsed().as_secs_f64()))
    }

    /// QEMU's `AnonHugePages` (`/proc/PID/smaps_rollup`), KiB.
    pub fn anon_huge_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/smaps_rollup", self.vm.qemu_pid());
        let s = std::fs::read_to_string(&path).with_context(|| path.clone())?;
        s.lines()
            .find_map(|l| l.strip_prefix("AnonHugePages:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow!("no AnonHugePages in {path}"))
    }

    /// On the vhost host: fails if its protocol checker saw a violation.
    pub fn protocol_clean(&self) -> Result<()> {
        match &self.vhost {
            Some((h, _)) => h.assert_protocol_clean(),
            None => Ok(()),
        }
    }

    pub fn shutdown(self) -> Result<()> {
        let r = self.vm.shutdown();
        drop(self.vhost);
        r
    }
}
