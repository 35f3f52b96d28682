//! `VB_BENCH_THREADS=1`: what the host's threads do during the 1 GiB inflate and the move. A
//! sampler thread reads each thread's state (`/proc/PID/task/TID/stat`) and, when it is not
//! running, the system call it sleeps in (`.../syscall`) every [`EVERY`], from the moment the
//! target is set until the balloon reaches it, and counts each sample as one of [`State`].
//!
//! That tells the guest's side from the device's: under TCG a vCPU thread is the guest, and
//! QEMU's main loop runs QEMU's own balloon device (the range host's device work is in the
//! vhost-user host process). A vCPU that runs while the main loop polls means the guest is
//! the slower side; a main loop that runs while the vCPU is halted means the device is; a
//! thread waiting in a futex lock wait (`FUTEX_WAIT`, which QEMU's global lock is) waits for
//! the other side.
//!
//! Sampling costs the host a few per cent of one CPU (about ten small `/proc` reads per
//! sample), so a run with it is not comparable with a plain run's figures.

use super::figures::drv_name;
use super::probe::HostKind;
use super::run::Boot;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Whether the run samples (the environment variable is `1`).
pub fn enabled() -> bool {
    std::env::var("VB_BENCH_THREADS").is_ok_and(|v| v.trim() == "1")
}

/// Time between samples.
const EVERY: Duration = Duration::from_millis(4);

/// What a thread was doing in one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// On a CPU, or runnable and waiting for one (`R`).
    Running,
    /// Asleep in a futex lock wait (`FUTEX_WAIT`): a contended mutex, such as QEMU's global
    /// lock (QEMU's own events wait this way too).
    Lock,
    /// Asleep in a condition variable (`FUTEX_WAIT_BITSET`): a halted TCG vCPU waits here.
    Cond,
    /// Asleep in poll, ppoll or epoll: an event loop with nothing to do.
    Poll,
    /// Anything else (another system call, disk sleep, a sample that raced the thread).
    Other,
}

impl State {
    const ALL: [State; 5] = [
        State::Running,
        State::Lock,
        State::Cond,
        State::Poll,
        State::Other,
    ];

    fn index(self) -> usize {
        match self {
            State::Running => 0,
            State::Lock => 1,
            State::Cond => 2,
            State::Poll => 3,
            State::Other => 4,
        }
    }

    fn heading(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Lock => "lock wait",
            State::Cond => "cond wait (a vCPU: halted)",
            State::Poll => "polling",
            State::Other => "other",
        }
    }
}

/// The state letter of a `/proc/.../stat` line (the field after the command's `)`).
fn stat_state(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// One sample's state from a thread's `stat` and, for a sleeping thread, its `syscall` line
/// (`NR ARG0 ARG1 ...`, hexadecimal arguments).
pub fn classify(stat: &str, syscall: Option<&str>) -> State {
    if stat_state(stat) == Some('R') {
        return State::Running;
    }
    let mut f = syscall.unwrap_or_default().split_whitespace();
    match f.next().and_then(|n| n.parse::<u32>().ok()) {
        // futex(2): the operation is the second argument, less its PRIVATE (128) and
        // CLOCK_REALTIME (256) flags.
        Some(202) => {
            let op = f
                .nth(1)
                .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
                .map(|op| op & 0x7f);
            match op {
                Some(0) => State::Lock,
                Some(9) => State::Cond,
                _ => State::Other,
            }
        }
        // poll, ppoll, epoll_wait, epoll_pwait, epoll_pwait2
        Some(7 | 271 | 232 | 281 | 441) => State::Poll,
        _ => State::Other,
    }
}

/// A group of threads shown together: one thread (`QEMU main loop`), or several (the vCPUs,
/// the vhost-user host's threads), shown as the busiest and the rest.
pub struct Group {
    pub name: String,
    /// (process, thread) ids.
    pub threads: Vec<(u32, u32)>,
}

/// Every thread of process `pid`, as one group.
pub fn process_group(name: &str, pid: u32) -> Group {
    let mut threads: Vec<(u32, u32)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .map(|t| (pid, t))
                .collect()
        })
        .unwrap_or_default();
    threads.sort_unstable();
    Group {
        name: name.to_owned(),
        threads,
    }
}

/// One operation's samples: per row (a thread, or the rest of a group), the samples in each
/// [`State`].
#[derive(Clone, Debug)]
pub struct Threads {
    pub op: &'static str,
    pub rows: Vec<(String, [u64; 5])>,
}

/// A running sampler; [`Sampler::stop`] ends it.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<(String, Vec<[u64; 5]>)>>,
}

/// Starts sampling `groups` in a thread of its own.
pub fn start(groups: Vec<Group>) -> Sampler {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut counts: Vec<(String, Vec<[u64; 5]>)> = groups
            .iter()
            .map(|g| (g.name.clone(), vec![[0u64; 5]; g.threads.len()]))
            .collect();
        while !flag.load(Ordering::Relaxed) {
            for (g, (_, c)) in groups.iter().zip(counts.iter_mut()) {
                for (&(pid, tid), n) in g.threads.iter().zip(c.iter_mut()) {
                    let dir = format!("/proc/{pid}/task/{tid}");
                    let Ok(stat) = std::fs::read_to_string(format!("{dir}/stat")) else {
                        continue;
                    };
                    let sys = if stat_state(&stat) == Some('R') {
                        None
                    } else {
                        std::fs::read_to_string(format!("{dir}/syscall")).ok()
                    };
                    n[classify(&stat, sys.as_deref()).index()] += 1;
                }
            }
            std::thread::sleep(EVERY);
        }
        counts
    });
    Sampler { stop, handle }
}

impl Sampler {
    /// Ends the sampling: a group of one thread is one row; a larger group is its busiest
    /// thread (most samples running) and the rest summed.
    pub fn stop(self, op: &'static str) -> Threads {
        self.stop.store(true, Ordering::Relaxed);
        let counts = self.handle.join().unwrap_or_default();
        Threads {
            op,
            rows: rows(counts),
        }
    }
}

fn rows(counts: Vec<(String, Vec<[u64; 5]>)>) -> Vec<(String, [u64; 5])> {
    let mut out = Vec::new();
    for (name, mut per) in counts {
        per.retain(|c| c.iter().sum::<u64>() > 0);
        if per.len() <= 1 {
            if let Some(c) = per.first() {
                out.push((name, *c));
            }
            continue;
        }
        per.sort_by(|a, b| b[0].cmp(&a[0]));
        let mut rest = [0u64; 5];
        for c in per.iter().skip(1) {
            for (r, n) in rest.iter_mut().zip(c) {
                *r += n;
            }
        }
        out.push((format!("{name} (busiest)"), per[0]));
        out.push((format!("{name} (the other {})", per.len() - 1), rest));
    }
    out
}

/// The summary's section: per host, driver and operation, each row's share of its samples
/// in each state, summed over the rounds.
pub fn table(boots: &[Boot], hosts: &[HostKind]) -> String {
    let mut w = format!(
        "## The host's threads during the 1 GiB inflate and the move (VB_BENCH_THREADS=1)\n\n\
         Each row's samples (one every {} ms from setting the target to reaching it, summed \
         over the rounds) by what the thread was doing. Under TCG a vCPU thread is the guest \
         and QEMU's main loop runs QEMU's balloon device (the range host's is the vhost host \
         process). *Lock wait* is a futex lock wait (QEMU's global lock is one; QEMU's own \
         events wait so too), *cond wait* a condition variable (where a halted vCPU sleeps), \
         *polling* an event loop with nothing to do. *Running* counts runnable threads waiting \
         for a CPU too; the sampler itself costs the host a few per cent of a CPU.\n\n",
        EVERY.as_millis()
    );
    for &host in hosts {
        for drv in [crate::scenarios::Drv::C, crate::scenarios::Drv::Rust] {
            let mut by_op: BTreeMap<&'static str, Vec<(String, [u64; 5])>> = BTreeMap::new();
            for b in boots.iter().filter(|b| b.host == host && b.drv == drv) {
                for t in &b.threads {
                    let rows = by_op.entry(t.op).or_default();
                    for (name, c) in &t.rows {
                        match rows.iter_mut().find(|(n, _)| n == name) {
                            Some((_, sum)) => sum.iter_mut().zip(c).for_each(|(s, n)| *s += n),
                            None => rows.push((name.clone(), *c)),
                        }
                    }
                }
            }
            for (op, rows) in by_op {
                w.push_str(&format!(
                    "### {} {} {op}\n\n| thread | {} | samples |\n| --- |{} ---: |\n",
                    host.name(),
                    drv_name(drv),
                    State::ALL.map(State::heading).join(" | "),
                    " ---: |".repeat(State::ALL.len()),
                ));
                for (name, c) in rows {
                    let n: u64 = c.iter().sum();
                    let shares: Vec<String> = c
                        .iter()
                        .map(|k| format!("{:.0} %", 100.0 * *k as f64 / n.max(1) as f64))
                        .collect();
                    w.push_str(&format!("| {name} | {} | {n} |\n", shares.join(" | ")));
                }
                w.push('\n');
            }
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_states() {
        let run = "123 (qemu-system-x86) R 1 2 3";
        let sleep = "123 (qemu (odd) name) S 1 2 3";
        assert_eq!(classify(run, None), State::Running);
        assert_eq!(
            classify(sleep, Some("202 0x55d0 0x80 0x2 0x0 0x0 0x0 0x7ffd 0x7f12")),
            State::Lock
        );
        assert_eq!(
            classify(
                sleep,
                Some("202 0x55d0 0x189 0x0 0x0 0x0 0xffffffff 0x7ffd 0x7f12")
            ),
            State::Cond
        );
        assert_eq!(classify(sleep, Some("202 0x55d0 0x81 0x1")), State::Other);
        assert_eq!(classify(sleep, Some("271 0x1 0x2 0x3")), State::Poll);
        assert_eq!(classify(sleep, Some("28 0x1 0x2 0x3")), State::Other);
        assert_eq!(classify(sleep, Some("running")), State::Other);
        assert_eq!(classify(sleep, None), State::Other);
    }

    #[test]
    fn groups_show_the_busiest_and_the_rest() {
        let r = rows(vec![
            ("main".into(), vec![[5, 0, 0, 5, 0]]),
            (
                "vCPU".into(),
                vec![[1, 0, 9, 0, 0], [8, 1, 1, 0, 0], [2, 0, 8, 0, 0], [0; 5]],
            ),
        ]);
        assert_eq!(
            r,
            vec![
                ("main".to_owned(), [5, 0, 0, 5, 0]),
                ("vCPU (busiest)".to_owned(), [8, 1, 1, 0, 0]),
                ("vCPU (the other 2)".to_owned(), [3, 0, 17, 0, 0]),
            ]
        );
    }

    #[test]
    fn table_sums_rounds() {
        let boot = |rows: Vec<(String, [u64; 5])>| Boot {
            threads: vec![Threads {
                op: "inflate-move",
                rows,
            }],
            ..Boot::new(HostKind::Qemu, crate::scenarios::Drv::Rust, 0)
        };
        let t = table(
            &[
                boot(vec![("QEMU main loop".into(), [30, 0, 0, 70, 0])]),
                boot(vec![("QEMU main loop".into(), [50, 0, 0, 50, 0])]),
            ],
            &[HostKind::Qemu],
        );
        assert!(t.contains("### qemu vballoon inflate-move"), "{t}");
        assert!(
            t.contains("| QEMU main loop | 40 % | 0 % | 0 % | 60 % | 0 % | 200 |"),
            "{t}"
        );
    }
}
