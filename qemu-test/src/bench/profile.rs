//! `VB_BENCH_PROFILE=1`: where the guest's kernel time goes during the 3 GiB move, by
//! function, from the kernel's own tick profiler (`profile=` on the command line,
//! `/proc/profile`): each timer tick that finds a vCPU in kernel text counts one sample for the
//! 2^`SHIFT`-byte bucket it was in. The guest resolves buckets to functions with its
//! `/proc/kallsyms` (so KASLR does not matter) and sends only the totals.
//!
//! The profiler counts core kernel text only: a tick in a module (the driver's own Rust and C
//! code) or in user space counts nothing, nor does a tick an idle vCPU skips; the jiffies over
//! the operation times the vCPUs say what every tick would add up to.

use super::figures::drv_name;
use super::probe::HostKind;
use super::run::Boot;
use crate::guest::Vm;
use anyhow::{ensure, Context, Result};
use std::collections::BTreeMap;
use std::time::Duration;

/// Whether the run profiles (the environment variable is `1`).
pub fn enabled() -> bool {
    std::env::var("VB_BENCH_PROFILE").is_ok_and(|v| v.trim() == "1")
}

/// Bucket size: 16 bytes, so a sample's function is exact but for the last bucket of one
/// function that shares bytes with the next.
const SHIFT: u32 = 4;
/// Functions kept per operation (in the guest, by samples).
const TOP: usize = 60;
/// Functions shown per driver and operation in the summary.
const SHOW: usize = 25;

/// The kernel command line word that turns the profiler on.
pub fn cmdline() -> String {
    format!("profile={SHIFT}")
}

/// One operation's profile: samples per function, and the ticks it spanned.
#[derive(Clone, Debug)]
pub struct Profile {
    pub op: &'static str,
    /// The [`TOP`] functions with the most samples.
    pub funcs: Vec<(String, u64)>,
    /// Every sample in core kernel text, the functions past [`TOP`] included.
    pub samples: u64,
    /// Jiffies from reset to read, times the vCPUs.
    pub ticks: u64,
}

/// The name under which the guest's resolver reports the sum of all samples (not a symbol:
/// kallsyms names have no parentheses).
const ALL: &str = "(all)";

/// The guest's jiffies (ticks of the timekeeping CPU since boot).
fn jiffies(vm: &mut Vm) -> Result<u64> {
    let out = vm.sh("grep -m1 '^jiffies' /proc/timer_list")?;
    out.split_whitespace()
        .nth(1)
        .and_then(|j| j.parse().ok())
        .with_context(|| format!("jiffies in /proc/timer_list: {out:?}"))
}

/// Zeroes the guest's profile counters (any write to `/proc/profile` does). Returns the
/// jiffies then.
pub fn reset(vm: &mut Vm) -> Result<u64> {
    vm.sh("echo 0 > /proc/profile")?;
    jiffies(vm)
}

/// Copies the counters aside at once (so reading and resolving them, which takes long under
/// TCG, adds no samples), then resolves them: samples per core-kernel function (the [`TOP`]
/// functions), all samples, and the ticks since [`reset`] (`jiffies0`) times the vCPUs online
/// (what a profile of every tick on every vCPU would add up to).
pub fn read(vm: &mut Vm, op: &'static str, jiffies0: u64) -> Result<Profile> {
    vm.sh("cat /proc/profile > /tmp/vb.profile")?;
    let ticks = jiffies(vm)?.saturating_sub(jiffies0);
    let cpus: u64 = vm.sh("nproc")?.trim().parse().context("nproc")?;
    // Low 32 bits of each address: kernel text lies within one 4 GiB window, and awk's
    // numbers are doubles (exact to 2^53, not to a full 64-bit address).
    let cmd = format!(
        "b=$(grep ' _stext$' /proc/kallsyms | cut -c9-16); \
         od -An -v -tu4 -w4 /tmp/vb.profile | awk -v b=0x$b ' \
         FNR==NR {{ if (NF==3 && ($2==\"t\" || $2==\"T\")) {{ a[n]=(\"0x\" substr($1,9,8))+0; s[n]=$3; n++ }} next }} \
         FNR==1 {{ step=$1; base=b+0; next }} \
         $1>0 {{ x=base+(FNR-2)*step; while (j+1<n && a[j+1]<=x) j++; t[s[j]]+=$1; all+=$1 }} \
         END {{ print all+0, \"{ALL}\"; for (k in t) print t[k], k }}' /proc/kallsyms - \
         | sort -nr | head -{}",
        TOP + 1
    );
    let (rc, out) = vm.sh_rc(&cmd, Duration::from_secs(300))?;
    ensure!(rc == 0, "reading /proc/profile failed with {rc}: {out}");
    let (funcs, samples) = split_all(parse(&out)?)?;
    Ok(Profile {
        op,
        funcs,
        samples,
        ticks: ticks.saturating_mul(cpus),
    })
}

/// Takes the [`ALL`] line out of the resolver's lines: the functions, and the sum.
fn split_all(mut v: Vec<(String, u64)>) -> Result<(Vec<(String, u64)>, u64)> {
    let i = v
        .iter()
        .position(|(f, _)| f == ALL)
        .context("the profile has no total line")?;
    let (_, all) = v.remove(i);
    Ok((v, all))
}

/// Whether a function is the idle loop's halt (a vCPU with nothing to run).
fn idle(f: &str) -> bool {
    f.contains("safe_halt") || f.ends_with("_idle") || f == "cpu_idle_poll"
}

/// `SAMPLES FUNCTION` lines.
pub(super) fn parse(out: &str) -> Result<Vec<(String, u64)>> {
    let mut v = Vec::new();
    for l in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (n, f) = l
            .split_once(' ')
            .with_context(|| format!("profile line {l:?}"))?;
        let n: u64 = n.parse().with_context(|| format!("profile line {l:?}"))?;
        v.push((f.trim().to_owned(), n));
    }
    Ok(v)
}

/// The summary's section: per host, driver and operation, the functions with the most
/// samples summed over the rounds, each with its share of the operation's busy samples (all
/// samples, the functions past [`TOP`] included, but the idle loop's).
pub fn table(boots: &[Boot], hosts: &[HostKind]) -> String {
    let mut w = String::new();
    w.push_str(&format!(
        "## Kernel profile of the move (VB_BENCH_PROFILE=1, `profile={SHIFT}`)\n\n\
         Tick samples in core kernel text, summed over the rounds: the top {SHOW} functions of \
         each operation by busy samples (all samples but the idle loop's halt), with their \
         share of them. *Ticks* is jiffies over the operation times the vCPUs: what the samples would add \
         up to if every tick were counted; ticks in modules (the driver's own code included) \
         and in user space are not, nor are the ticks an idle vCPU skips (tickless idle). A tick \
         that comes while interrupts are off is taken when they are turned on again, so \
         `_raw_spin_unlock_irqrestore` stands for all the time spent with them off.\n\n"
    ));
    for &host in hosts {
        for drv in [crate::scenarios::Drv::C, crate::scenarios::Drv::Rust] {
            let mut by_op: BTreeMap<&'static str, (BTreeMap<String, u64>, u64, u64)> =
                BTreeMap::new();
            for b in boots.iter().filter(|b| b.host == host && b.drv == drv) {
                for p in &b.profiles {
                    let e = by_op.entry(p.op).or_default();
                    for (f, n) in &p.funcs {
                        *e.0.entry(f.clone()).or_default() += n;
                    }
                    e.1 += p.samples;
                    e.2 += p.ticks;
                }
            }
            for (op, (funcs, samples, ticks)) in by_op {
                let idle_n: u64 = funcs.iter().filter(|(f, _)| idle(f)).map(|(_, n)| n).sum();
                let busy = samples.saturating_sub(idle_n);
                w.push_str(&format!(
                    "### {} {} {op}: {busy} busy samples, {idle_n} idle, {ticks} ticks\n\n\
                     | function | samples | share of busy |\n| --- | ---: | ---: |\n",
                    host.name(),
                    drv_name(drv),
                ));
                let mut v: Vec<(String, u64)> =
                    funcs.into_iter().filter(|(f, _)| !idle(f)).collect();
                v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                for (f, n) in v.into_iter().take(SHOW) {
                    w.push_str(&format!(
                        "| `{f}` | {n} | {:.1} % |\n",
                        100.0 * n as f64 / busy.max(1) as f64
                    ));
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
    fn parses_sample_lines() {
        let v = parse("  120 clear_page_erms\n7 _raw_spin_lock\n\n").unwrap();
        assert_eq!(
            v,
            vec![
                ("clear_page_erms".to_owned(), 120),
                ("_raw_spin_lock".to_owned(), 7)
            ]
        );
        assert!(parse("x y").is_err());
    }

    #[test]
    fn total_line_is_taken_out() {
        let (f, all) = split_all(parse("900 (all)\n600 a\n100 b\n").unwrap()).unwrap();
        assert_eq!(all, 900);
        assert_eq!(f, vec![("a".to_owned(), 600), ("b".to_owned(), 100)]);
        assert!(split_all(parse("600 a\n").unwrap()).is_err());
    }

    fn boot(drv: crate::scenarios::Drv, funcs: &[(&str, u64)], ticks: u64) -> Boot {
        Boot {
            profiles: vec![Profile {
                op: "inflate-move",
                funcs: funcs.iter().map(|(f, n)| ((*f).to_owned(), *n)).collect(),
                // Functions past TOP: 10 samples more than those kept.
                samples: funcs.iter().map(|(_, n)| n).sum::<u64>() + 10,
                ticks,
            }],
            ..Boot::new(HostKind::Qemu, drv, 0)
        }
    }

    #[test]
    fn table_sums_rounds_and_ranks_by_samples() {
        use crate::scenarios::Drv;
        let boots = [
            boot(
                Drv::Rust,
                &[("a", 10), ("b", 30), ("pv_native_safe_halt", 500)],
                1000,
            ),
            boot(Drv::Rust, &[("a", 50), ("c", 10)], 1000),
            boot(Drv::C, &[("z", 4)], 2000),
        ];
        let t = table(&boots, &[HostKind::Qemu]);
        // vballoon: a 60, b 30, c 10 of 120 busy samples (20 in functions past TOP); the halt
        // is idle, not a row.
        let rust = t
            .find("vballoon inflate-move: 120 busy samples, 500 idle, 2000 ticks")
            .expect("vballoon section");
        let c = t
            .find("C inflate-move: 14 busy samples")
            .expect("C section");
        assert!(c < rust, "C first: {t}");
        let tail = &t[rust..];
        assert!(!tail.contains("| `pv_native_safe_halt`"), "{t}");
        let a = tail.find("| `a` | 60 | 50.0 % |").expect("a");
        let b = tail.find("| `b` | 30 | 25.0 % |").expect("b");
        let c = tail.find("| `c` | 10 | 8.3 % |").expect("c");
        assert!(a < b && b < c, "{t}");
    }
}
