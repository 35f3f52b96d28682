//! What a run leaves behind: `summary.md` (set-up, floor, module sizes, the figure and ratio
//! tables, failures) and `series.csv` (every poll of every operation).

use super::figures::{self, drv_name};
use super::floor::Floor;
use super::probe::{HostKind, POLL, POLL_FIRST};
use super::run::{Boot, Shape};
use crate::scenarios::Ctx;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How many slab caches the summary's per-cache table lists (those whose medians differ most).
const SLAB_TOP: usize = 12;

/// A module's size: the file, and text + data + bss of its sections.
pub struct ModSize {
    pub file: u64,
    pub text: u64,
    pub data: u64,
    pub bss: u64,
    pub tool: &'static str,
}

pub fn module_size(path: &Path) -> Result<ModSize> {
    let file = std::fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .len();
    let tool = if Path::new("/usr/bin/llvm-size-19").exists() {
        "llvm-size-19"
    } else {
        "size"
    };
    let out = Command::new(tool).arg("-B").arg(path).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "   text    data     bss     dec     hex filename", then the numbers.
    let n: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    let [text, data, bss] = n[..] else {
        bail!("{tool} -B {}: {text}", path.display());
    };
    Ok(ModSize {
        file,
        text,
        data,
        bss,
        tool,
    })
}

fn qemu_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_else(|e| format!("{}: {e}", bin.display()))
}

pub fn write_series(path: &Path, boots: &[Boot]) -> Result<()> {
    let mut s = String::from("driver,host,round,op,t_ms,ballooned_bytes\n");
    for b in boots {
        for op in &b.ops {
            for (t, v) in &op.points {
                let _ = writeln!(
                    s,
                    "{},{},{},{},{t:.1},{v}",
                    drv_name(b.drv),
                    b.host.name(),
                    b.round,
                    op.name
                );
            }
        }
    }
    std::fs::write(path, s).with_context(|| path.display().to_string())
}

/// Everything the summary is made of.
pub struct Report<'a> {
    pub dir: &'a Path,
    pub accel: &'a str,
    pub rounds: usize,
    pub hosts: &'a [HostKind],
    pub params: &'a str,
    /// `VB_BENCH_APPEND`: appended to the guest kernel's command line.
    pub append: &'a str,
    pub shape: Shape,
    /// /proc/loadavg just before the floor.
    pub load: &'a str,
    pub floor: &'a Result<Floor>,
    pub sizes: &'a [(&'static str, PathBuf, Result<ModSize>)],
    pub boots: &'a [Boot],
    pub minutes: f64,
}

impl Report<'_> {
    fn head(&self, ctx: &Ctx, w: &mut String) {
        let _ = writeln!(
            w,
            "- results: `{}`; the bench took {:.1} min ({} boots)",
            self.dir.display(),
            self.minutes,
            self.boots.len()
        );
        let _ = writeln!(w, "- accelerator: {}", self.accel);
        if self.accel.starts_with("TCG") {
            let _ = writeln!(
                w,
                "- under TCG the guest's own work (allocating, freeing and touching pages, the \
                 driver's code) is emulated and weighs more against the host's discard than it \
                 would under KVM: the ratios carry over better than the absolute times"
            );
        }
        let _ = writeln!(
            w,
            "- kernel: {} (`{}`); VB_BENCH_APPEND: `{}`",
            ctx.paths.kernel_release().map_or_else(
                |e| format!("(release unknown: {e:#})"),
                |r| format!("`{r}`")
            ),
            ctx.paths.kernel.display(),
            if self.append.is_empty() {
                "(none)"
            } else {
                self.append
            }
        );
        let mut inits: Vec<&str> = self
            .boots
            .iter()
            .filter_map(|b| b.auto_init.as_deref())
            .collect();
        inits.sort_unstable();
        inits.dedup();
        let _ = writeln!(
            w,
            "- the guest kernel's boot line: {} (heap alloc:on zeroes every page the balloon \
             takes, for either driver)",
            if inits.is_empty() {
                "(no `mem auto-init` line read)".into()
            } else {
                inits
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        let _ = writeln!(
            w,
            "- guest: {} MiB, 2 vCPUs; {} round(s); per round and host one fresh guest \
             per driver, the C driver first in even rounds, vballoon first in odd ones",
            self.shape.guest_mib(),
            self.rounds
        );
        if self.shape.scale() {
            let _ = writeln!(
                w,
                "- a scale run (`VB_BENCH_GUEST_GIB={}`): each boot moves {} GiB in and out and \
                 measures only that move and the slab figures; compare with a default run \
                 (4 GiB guest, 3 GiB move) of the same kernel",
                self.shape.guest_gib,
                self.shape.move_gib()
            );
        }
        for h in self.hosts {
            let _ = match h {
                HostKind::Qemu => writeln!(
                    w,
                    "- host `qemu`: `virtio-balloon-pci` of {} (RAM anonymous with THP; one \
                     madvise(DONTNEED) per 4 KiB page)",
                    qemu_version(Path::new("qemu-system-x86_64"))
                ),
                HostKind::VhostRanges => writeln!(
                    w,
                    "- host `vhost-ranges`: `vballoon-host` (vhost-user, normal mode: one \
                     fallocate(PUNCH_HOLE) per run of contiguous PFNs of a buffer, at most \
                     1 MiB; RAM a shared memfd) behind `{}` ({})",
                    ctx.vhost_qemu
                        .map_or("-".into(), |q| q.display().to_string()),
                    ctx.vhost_qemu
                        .map_or("no --vhost-qemu".into(), qemu_version)
                ),
            };
        }
        let _ = writeln!(
            w,
            "- VB_BENCH_PARAMS: `{}`",
            if self.params.is_empty() {
                "(none)"
            } else {
                self.params
            }
        );
        let mut seen: Vec<&str> = self
            .boots
            .iter()
            .filter_map(|b| b.params.as_deref())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        let seen: Vec<String> = seen.iter().map(|p| format!("`{p}`")).collect();
        let _ = writeln!(
            w,
            "- vballoon's parameters as loaded (sysfs): {}",
            if seen.is_empty() {
                "(never read)".into()
            } else {
                seen.join("; ")
            }
        );
        let _ = writeln!(
            w,
            "- the ballooned size comes from QMP `query-balloon` (qemu) or the host's control \
             socket `query` (vhost-ranges), polled every {} ms until it first moves, then \
             every {} ms; times run from the command that set the target to the answer that \
             showed the change",
            POLL_FIRST.as_millis(),
            POLL.as_millis()
        );
    }

    fn floor(&self, w: &mut String) {
        let _ = writeln!(
            w,
            "\n## Host floor: discarding 3 GiB with no guest (median of 3; load average \
             before: {})\n",
            self.load.trim()
        );
        match self.floor {
            Ok(f) => {
                let _ = writeln!(w, "| how | s | GiB/s |\n| --- | ---: | ---: |");
                for (how, secs) in [
                    (
                        "anonymous THP memory, madvise(DONTNEED) per 4 KiB: floor of `qemu`",
                        f.anon_4k,
                    ),
                    ("anonymous THP memory, one madvise over 3 GiB", f.anon_whole),
                    ("shared memfd, fallocate(PUNCH_HOLE) per 4 KiB", f.memfd_4k),
                    (
                        "shared memfd, fallocate(PUNCH_HOLE) per 1 MiB: floor of `vhost-ranges`",
                        f.memfd_1m,
                    ),
                ] {
                    let _ = writeln!(w, "| {how} | {secs:.3} | {:.2} |", 3.0 / secs);
                }
                let _ = writeln!(
                    w,
                    "\nTHP backed {} MiB of the 3072 MiB anonymous region.",
                    f.anon_thp_kib / 1024
                );
            }
            Err(e) => {
                let _ = writeln!(w, "failed: {e:#}");
            }
        }
    }

    fn sizes(&self, w: &mut String) {
        let _ = writeln!(
            w,
            "\n## Module size\n\n| module | file bytes | text | data | bss | text+data+bss |\n\
             | --- | ---: | ---: | ---: | ---: | ---: |"
        );
        let mut both = Vec::new();
        let mut tool = "size";
        for (name, path, r) in self.sizes {
            match r {
                Ok(m) => {
                    tool = m.tool;
                    let sum = m.text + m.data + m.bss;
                    both.push((m.file, sum));
                    let _ = writeln!(
                        w,
                        "| {name} | {} | {} | {} | {} | {sum} |",
                        m.file, m.text, m.data, m.bss
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        w,
                        "| {name} (`{}`) | failed: {e:#} | | | | |",
                        path.display()
                    );
                }
            }
        }
        if let [(rf, rs), (cf, cs)] = both[..] {
            let _ = writeln!(
                w,
                "\nvballoon/C: file {:.2}, text+data+bss {:.2} (lower is smaller; `{tool} -B`)",
                rf as f64 / cf as f64,
                rs as f64 / cs as f64
            );
        }
    }

    pub fn summary(&self, ctx: &Ctx) -> String {
        let mut s = String::from("# make bench: vballoon against the in-tree C driver\n\n");
        self.head(ctx, &mut s);
        self.floor(&mut s);
        self.sizes(&mut s);
        let _ = writeln!(
            s,
            "\n{}",
            figures::tables(self.boots, self.hosts, self.rounds, self.shape)
        );
        let _ = writeln!(
            s,
            "## Slab caches at bind (the {SLAB_TOP} that differ most)\n\n{}",
            figures::slab_by_cache(self.boots, self.hosts, SLAB_TOP)
        );
        if self.boots.iter().any(|b| !b.profiles.is_empty()) {
            let _ = writeln!(s, "{}", super::profile::table(self.boots, self.hosts));
        }
        if self.boots.iter().any(|b| !b.threads.is_empty()) {
            let _ = writeln!(s, "{}", super::threads::table(self.boots, self.hosts));
        }
        let _ = writeln!(s, "## Failures\n\n{}", figures::failures(self.boots));
        let notes: Vec<String> = self
            .boots
            .iter()
            .flat_map(|b| {
                b.notes.iter().map(move |n| {
                    format!(
                        "- {} {} round {}: {n}",
                        b.host.name(),
                        drv_name(b.drv),
                        b.round
                    )
                })
            })
            .collect();
        if !notes.is_empty() {
            let _ = writeln!(s, "## Notes\n\n{}\n", notes.join("\n"));
        }
        let _ = write!(s, "## What the figures are\n\n{}", figures::EXPLAIN);
        s
    }
}
