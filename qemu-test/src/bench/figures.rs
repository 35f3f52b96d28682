//! The figures: what each one is, their median/min/max over the rounds per driver and host,
//! and the vballoon/C ratios of the medians, as markdown tables.

use super::probe::HostKind;
use super::run::{Boot, Shape};
use crate::scenarios::Drv;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Context for another figure (a raw number), no direction.
    Neither,
}

pub struct Fig {
    pub key: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// Measured on the qemu host only.
    pub qemu_only: bool,
}

pub const HP_BEFORE: &str = "hp_before";
pub const HP_AFTER: &str = "hp_after";
pub const HP_KEPT: &str = "hp_kept";
pub const FRAG_BEFORE: &str = "frag_before";
pub const FRAG_AFTER: &str = "frag_after";
pub const FRAG_KEPT: &str = "frag_kept";
pub const REACT_1G: &str = "react_1g";
pub const TO_1G: &str = "to_1g";
pub const GUEST_CPU_1G: &str = "guest_cpu_1g";
pub const DEVICE_CPU_1G: &str = "device_cpu_1g";
pub const INFLATE: &str = "inflate";
pub const DEFLATE: &str = "deflate";
pub const INFLATE_FLOOR: &str = "inflate_floor";
pub const GUEST_CPU_INFLATE: &str = "guest_cpu_inflate";
pub const GUEST_CPU_DEFLATE: &str = "guest_cpu_deflate";
pub const DEVICE_CPU_INFLATE: &str = "device_cpu_inflate";
pub const DEVICE_CPU_DEFLATE: &str = "device_cpu_deflate";
pub const HOLD_MIB: &str = "hold_mib";
pub const REACT_HOLD: &str = "react_hold";
pub const SLAB_BIND: &str = "slab_bind";
pub const SLAB_FULL: &str = "slab_full";

/// What a scale run (`VB_BENCH_GUEST_GIB` other than 4) measures: the move and the slab.
pub const SCALE_FIGS: [&str; 8] = [
    INFLATE,
    DEFLATE,
    GUEST_CPU_INFLATE,
    GUEST_CPU_DEFLATE,
    DEVICE_CPU_INFLATE,
    DEVICE_CPU_DEFLATE,
    SLAB_BIND,
    SLAB_FULL,
];

const fn fig(key: &'static str, name: &'static str, unit: &'static str, better: Better) -> Fig {
    Fig {
        key,
        name,
        unit,
        better,
        qemu_only: false,
    }
}

const fn qemu(f: Fig) -> Fig {
    Fig {
        qemu_only: true,
        ..f
    }
}

pub const FIGS: [Fig; 21] = [
    qemu(fig(
        HP_BEFORE,
        "HP: QEMU AnonHugePages before the 2 GiB inflate",
        "KiB",
        Better::Neither,
    )),
    qemu(fig(
        HP_AFTER,
        "HP: QEMU AnonHugePages after it",
        "KiB",
        Better::Neither,
    )),
    qemu(fig(
        HP_KEPT,
        "HP: huge pages kept (after / the 2 GiB not ballooned)",
        "%",
        Better::Higher,
    )),
    qemu(fig(
        FRAG_BEFORE,
        "HP-FRAG: QEMU AnonHugePages before the 2 GiB inflate, fragmented guest",
        "KiB",
        Better::Neither,
    )),
    qemu(fig(
        FRAG_AFTER,
        "HP-FRAG: QEMU AnonHugePages after it",
        "KiB",
        Better::Neither,
    )),
    qemu(fig(
        FRAG_KEPT,
        "HP-FRAG: huge pages kept (after / the 2 GiB not ballooned)",
        "%",
        Better::Higher,
    )),
    fig(REACT_1G, "1G: first reaction", "ms", Better::Lower),
    fig(TO_1G, "1G: time to 1 GiB", "s", Better::Lower),
    fig(GUEST_CPU_1G, "1G: guest CPU", "s", Better::Lower),
    fig(DEVICE_CPU_1G, "1G: device-side CPU", "s", Better::Lower),
    fig(INFLATE, "3G: inflate throughput", "GiB/s", Better::Higher),
    fig(DEFLATE, "3G: deflate throughput", "GiB/s", Better::Higher),
    fig(
        INFLATE_FLOOR,
        "3G: inflate time / host floor",
        "x",
        Better::Lower,
    ),
    fig(
        GUEST_CPU_INFLATE,
        "3G: guest CPU per GiB inflated",
        "s/GiB",
        Better::Lower,
    ),
    fig(
        GUEST_CPU_DEFLATE,
        "3G: guest CPU per GiB deflated",
        "s/GiB",
        Better::Lower,
    ),
    fig(
        DEVICE_CPU_INFLATE,
        "3G: device-side CPU per GiB inflated",
        "s/GiB",
        Better::Lower,
    ),
    fig(
        DEVICE_CPU_DEFLATE,
        "3G: device-side CPU per GiB deflated",
        "s/GiB",
        Better::Lower,
    ),
    fig(
        HOLD_MIB,
        "AFTER-HOLD: balloon size while held",
        "MiB",
        Better::Neither,
    ),
    fig(
        REACT_HOLD,
        "AFTER-HOLD: first reaction to a new target",
        "ms",
        Better::Lower,
    ),
    fig(
        SLAB_BIND,
        "SLAB: slab bytes the bind added (after bind minus before insmod)",
        "KiB",
        Better::Lower,
    ),
    fig(
        SLAB_FULL,
        "SLAB: slab growth per GiB ballooned (full minus empty balloon)",
        "KiB/GiB",
        Better::Lower,
    ),
];

/// Whether `f` is measured on `host`, in a default run or a scale run.
pub fn applies(f: &Fig, host: HostKind, scale: bool) -> bool {
    (!f.qemu_only || host == HostKind::Qemu) && (!scale || SCALE_FIGS.contains(&f.key))
}

/// The figure's name, with the move's size (`3G:` in a default run).
pub fn label(f: &Fig, move_gib: u64) -> String {
    match f.name.strip_prefix("3G:") {
        Some(rest) => format!("{move_gib}G:{rest}"),
        None => f.name.to_owned(),
    }
}

pub fn fmt(unit: &str, v: f64) -> String {
    match unit {
        "KiB" | "MiB" => format!("{v:.0}"),
        "ms" => format!("{v:.1}"),
        "%" => format!("{:.1}", v * 100.0),
        "x" => format!("{v:.2}"),
        "s/GiB" => format!("{v:.3}"),
        "KiB/GiB" => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stats(mut v: Vec<f64>) -> Option<Stats> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// The successful values of one figure for one driver on one host, over the rounds.
pub fn values(boots: &[Boot], key: &str, host: HostKind, drv: Drv) -> Vec<f64> {
    boots
        .iter()
        .filter(|b| b.host == host && b.drv == drv)
        .filter_map(|b| b.figs.get(key)?.as_ref().ok().copied())
        .collect()
}

pub fn drv_name(d: Drv) -> &'static str {
    match d {
        Drv::C => "C",
        Drv::Rust => "vballoon",
    }
}

/// Median, min and max per figure, host and driver; then the vballoon/C ratios.
pub fn tables(boots: &[Boot], hosts: &[HostKind], rounds: usize, shape: Shape) -> String {
    let (scale, move_gib) = (shape.scale(), shape.move_gib());
    let mut s = String::new();
    s.push_str("## Figures (median, min, max over the rounds)\n\n");
    s.push_str("| figure | unit | host | driver | median | min | max | ok/rounds |\n");
    s.push_str("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |\n");
    for f in &FIGS {
        for &h in hosts {
            if !applies(f, h, scale) {
                continue;
            }
            for d in [Drv::C, Drv::Rust] {
                let st = stats(values(boots, f.key, h, d));
                let (med, min, max, n) = match &st {
                    Some(st) => (
                        fmt(f.unit, st.median),
                        fmt(f.unit, st.min),
                        fmt(f.unit, st.max),
                        st.n,
                    ),
                    None => ("—".into(), "—".into(), "—".into(), 0),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {med} | {min} | {max} | {n}/{rounds} |",
                    label(f, move_gib),
                    f.unit,
                    h.name(),
                    drv_name(d)
                );
            }
        }
    }
    s.push_str("\n## vballoon / C (ratio of the medians)\n\n");
    s.push_str("| figure | host | C median | vballoon median | vballoon/C | better |\n");
    s.push_str("| --- | --- | ---: | ---: | ---: | --- |\n");
    for f in &FIGS {
        for &h in hosts {
            if !applies(f, h, scale) {
                continue;
            }
            let c = stats(values(boots, f.key, h, Drv::C));
            let r = stats(values(boots, f.key, h, Drv::Rust));
            let show = |st: &Option<Stats>| {
                st.as_ref().map_or("—".into(), |st| {
                    format!("{} {}", fmt(f.unit, st.median), f.unit)
                })
            };
            let ratio = match (&c, &r) {
                (Some(c), Some(r)) if c.median != 0.0 => format!("{:.2}", r.median / c.median),
                _ => "—".into(),
            };
            let better = match f.better {
                Better::Higher => "higher",
                Better::Lower => "lower",
                Better::Neither => "neither (context)",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {ratio} | {better} |",
                label(f, move_gib),
                h.name(),
                show(&c),
                show(&r)
            );
        }
    }
    s
}

/// The slab caches whose growth at bind differs most between the drivers: per host, cache and
/// driver the median over the boots that read it (a cache a boot did not list counts 0), the
/// caches where either median is at least 2 KiB, largest |vballoon - C| first, at most `top`
/// per host.
pub fn slab_by_cache(boots: &[Boot], hosts: &[HostKind], top: usize) -> String {
    let mut s = String::new();
    s.push_str("| host | slab cache | C KiB | vballoon KiB | vballoon - C KiB |\n");
    s.push_str("| --- | --- | ---: | ---: | ---: |\n");
    let mut rows = 0;
    for &h in hosts {
        let of = |d: Drv| -> Vec<&BTreeMap<String, f64>> {
            boots
                .iter()
                .filter(|b| b.host == h && b.drv == d)
                .filter_map(|b| b.slab_bind.as_ref())
                .collect()
        };
        let (c, r) = (of(Drv::C), of(Drv::Rust));
        if c.is_empty() || r.is_empty() {
            continue;
        }
        let names: BTreeSet<&String> = c.iter().chain(&r).flat_map(|m| m.keys()).collect();
        let med = |ms: &[&BTreeMap<String, f64>], k: &String| {
            stats(
                ms.iter()
                    .map(|m| m.get(k).copied().unwrap_or(0.0))
                    .collect(),
            )
            .map_or(0.0, |st| st.median / 1024.0)
        };
        let mut v: Vec<(&String, f64, f64)> = names
            .into_iter()
            .map(|k| (k, med(&c, k), med(&r, k)))
            .filter(|(_, c, r)| c.abs().max(r.abs()) >= 2.0)
            .collect();
        v.sort_by(|a, b| (b.2 - b.1).abs().total_cmp(&(a.2 - a.1).abs()));
        for (k, c, r) in v.into_iter().take(top) {
            rows += 1;
            let _ = writeln!(
                s,
                "| {} | `{k}` | {c:.1} | {r:.1} | {:+.1} |",
                h.name(),
                r - c
            );
        }
    }
    if rows == 0 {
        return "No boot of either driver read the slab caches, or no cache moved by 2 KiB.\n"
            .into();
    }
    s
}

/// Every failed figure, grouped by boot and reason.
pub fn failures(boots: &[Boot]) -> String {
    let mut s = String::new();
    for b in boots {
        let mut by_reason: Vec<(&str, Vec<&str>)> = Vec::new();
        for (k, v) in &b.figs {
            if let Err(e) = v {
                match by_reason.iter_mut().find(|(r, _)| *r == e.as_str()) {
                    Some((_, ks)) => ks.push(k),
                    None => by_reason.push((e.as_str(), vec![k])),
                }
            }
        }
        for (reason, keys) in by_reason {
            let one_line: String = reason
                .lines()
                .take(3)
                .collect::<Vec<_>>()
                .join(" / ")
                .replace('|', "\\|");
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                b.host.name(),
                drv_name(b.drv),
                b.round,
                keys.join(", "),
                one_line
            );
        }
    }
    if s.is_empty() {
        "No figure failed.\n".into()
    } else {
        format!(
            "| host | driver | round | figures | reason |\n| --- | --- | --- | --- | --- |\n{s}"
        )
    }
}

/// How each figure is measured (the end of `summary.md`).
pub const EXPLAIN: &str = "\
- **HP** (qemu host only): the guest touches 3300 MiB (`hog`) and frees it, so QEMU's RAM is \
backed, by huge pages where THP can; 2 s later QEMU's `AnonHugePages` (`/proc/PID/smaps_rollup`) \
is read, the balloon inflates to 2 GiB, and it is read again. *Huge pages kept* is the second \
reading over the 2 GiB not ballooned: QEMU discards each 4 KiB page on its own, which splits \
the huge page around it, so a driver whose balloon pages fill whole 2 MiB blocks keeps more. \
Its ceiling is (before - 2 GiB) / 2 GiB: every huge page not ballooned kept. Just after the \
guest freed 3300 MiB its free memory is in large blocks, so single pages taken in order \
fill whole 2 MiB blocks too.
- **1G**: from an empty balloon the host asks for 1 GiB. *First reaction*: from the command to \
the first poll that shows the balloon bigger; *time to 1 GiB*: to the poll that shows 1 GiB; \
*guest CPU* and *device-side CPU*: as in the move (below), for this inflate, in seconds. Under \
TCG on QEMU's device the two take turns (both the notify and taking an interrupt need QEMU's \
global lock, which the balloon's handler holds while it discards), so their sum is about the \
least the time to 1 GiB can be.
- **3G** (the move): 3 GiB inflated (the guest keeps 1 GiB), then deflated to 0; throughput is 3 GiB over \
the time to reach the target. *Guest CPU per GiB*: utime+stime of QEMU's vCPU threads \
(`query-cpus-fast` thread ids, `/proc/PID/task/TID/stat`); *device-side CPU per GiB*: QEMU's \
other threads (where QEMU's balloon discards, and the QMP polling), plus the vhost host \
process on vhost-ranges. Both are net of the same parts' idle rate (1 s of polling with \
nothing to do, just before). *Inflate time / host floor*: the inflate time over the host's \
own time to discard 3 GiB the way it does (see the floor table): how close the driver gets \
to what the host allows.
- **AFTER-HOLD**: a guest process holds MemAvailable - 250 MiB, the host asks for 3 GiB; \
vballoon stops at its floor (`floor_mib`), the C driver keeps failing allocations and \
retries every 200 ms. After 3 s, with the process still there, the host asks for 64 MiB less \
than the balloon then holds: *first reaction* is the time until the balloon shrinks. An OOM \
kill during the step fails the figure.
- **SLAB**: the bytes of every slab cache's active objects (`/proc/slabinfo`: active objects \
times object size, after `drop_caches=2`), read before insmod and after the driver bound (*the \
bind added*), and with the balloon full and empty again in the move step (*growth per GiB \
ballooned*, over the GiB moved). Other kernel activity moves these by a few KiB either way; a \
cost per ballooned page would show as a steady growth per GiB. *Slab caches at bind* splits \
the bind figure by cache (median per cache over the rounds, so the rows need not add up to \
the total's median).
- **Scale runs** (`VB_BENCH_GUEST_GIB=N`, N GiB guest): only the move (N-1 GiB, the figures \
named `(N-1)G`) and SLAB.
- Ratios are of the medians; *better* says which way is better for vballoon. Figures from one \
boot share the guest: the steps run in the order above, each from an empty balloon.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn fig_of(key: &str) -> &'static Fig {
        FIGS.iter().find(|f| f.key == key).expect("a figure")
    }

    fn boot(drv: Drv, caches: &[(&str, f64)]) -> Boot {
        Boot {
            slab_bind: Some(caches.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()),
            ..Boot::new(HostKind::Qemu, drv, 0)
        }
    }

    #[test]
    fn slab_by_cache_lists_the_largest_differences_first() {
        let k = 1024.0;
        let boots = [
            boot(Drv::C, &[("a", 10.0 * k), ("b", 1.0 * k), ("c", 30.0 * k)]),
            boot(Drv::C, &[("a", 12.0 * k), ("c", 30.0 * k)]),
            boot(
                Drv::Rust,
                &[("a", 40.0 * k), ("b", 1.0 * k), ("c", 25.0 * k)],
            ),
            boot(
                Drv::Rust,
                &[("a", 44.0 * k), ("b", 1.5 * k), ("c", 25.0 * k)],
            ),
        ];
        let t = slab_by_cache(&boots, &[HostKind::Qemu], 12);
        let rows: Vec<&str> = t.lines().skip(2).collect();
        // b never reaches 2 KiB; a differs by +31, c by -5.
        assert_eq!(
            rows,
            [
                "| qemu | `a` | 11.0 | 42.0 | +31.0 |",
                "| qemu | `c` | 30.0 | 25.0 | -5.0 |"
            ]
        );
        assert_eq!(
            slab_by_cache(&boots, &[HostKind::Qemu], 1).lines().count(),
            3
        );
        assert!(slab_by_cache(&boots[..2], &[HostKind::Qemu], 12).starts_with("No boot"));
    }

    #[test]
    fn scale_runs_name_their_move() {
        assert_eq!(label(fig_of(INFLATE), 3), "3G: inflate throughput");
        assert_eq!(
            label(fig_of(GUEST_CPU_DEFLATE), 15),
            "15G: guest CPU per GiB deflated"
        );
        assert_eq!(label(fig_of(TO_1G), 15), "1G: time to 1 GiB");
    }

    #[test]
    fn scale_runs_measure_only_the_move_and_the_slab() {
        let on = |host, scale| -> Vec<&str> {
            FIGS.iter()
                .filter(|f| applies(f, host, scale))
                .map(|f| f.key)
                .collect()
        };
        let scale = on(HostKind::Qemu, true);
        assert_eq!(
            scale,
            [
                INFLATE,
                DEFLATE,
                GUEST_CPU_INFLATE,
                GUEST_CPU_DEFLATE,
                DEVICE_CPU_INFLATE,
                DEVICE_CPU_DEFLATE,
                SLAB_BIND,
                SLAB_FULL
            ]
        );
        assert_eq!(on(HostKind::VhostRanges, true), scale);
        // A default run measures every figure on QEMU's host; the HP ones only there.
        assert_eq!(on(HostKind::Qemu, false).len(), FIGS.len());
        let ranges = on(HostKind::VhostRanges, false);
        assert!(ranges.contains(&INFLATE_FLOOR) && ranges.contains(&SLAB_FULL));
        assert!(!ranges.contains(&HP_KEPT));
    }
}
