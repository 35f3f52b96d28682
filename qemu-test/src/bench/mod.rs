//! `make bench`: vballoon against the in-tree C driver, same kernel, same run, on QEMU's own
//! balloon and on the project's vhost-user host, reported as vballoon/C ratios.
//!
//! First the host floor (how fast the host itself discards 3 GiB, no guest), then for each
//! round and host one fresh 4 GiB guest per driver (the driver going first alternates by
//! round), each measuring every figure of its driver on its host (see `run.rs`). Results go
//! to `results/bench-<UTC time>/`: `summary.md`, `series.csv` and `balloon.svg`.
//!
//! Knobs: `VB_BENCH_ROUNDS` (5), `VB_BENCH_HOSTS` (`qemu,vhost-ranges`), `VB_BENCH_PARAMS`
//! (appended to vballoon's insmod), `VB_BENCH_APPEND` (appended to the guest kernel's command
//! line, e.g. `init_on_alloc=0`), `VB_BENCH_GUEST_GIB` (4: every figure; any other size in
//! 2..=20 is a scale run, only the move of all but 1 GiB and the slab figures),
//! `VB_BENCH_PROFILE=1` (a kernel profile of the move, see `profile.rs`), `VB_BENCH_THREADS=1`
//! (what the host's threads do during the 1 GiB inflate and the move, see `threads.rs`).
//! Which kernel: `--kernel`/`--kdir`, named by `--flavor`.

mod figures;
mod floor;
mod hold;
mod plot;
mod probe;
mod profile;
mod report;
mod run;
mod threads;

use crate::guest::pick_accel;
use crate::scenarios::{Ctx, Drv};
use anyhow::{bail, Context, Result};
use figures::drv_name;
use probe::HostKind;
use run::{Boot, Setup, Shape};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Config {
    rounds: usize,
    hosts: Vec<HostKind>,
    params: String,
    append: String,
    shape: Shape,
}

impl Config {
    fn from_env() -> Result<Config> {
        let rounds = match std::env::var("VB_BENCH_ROUNDS") {
            Ok(v) => v.trim().parse().context("VB_BENCH_ROUNDS")?,
            Err(_) => 5,
        };
        if rounds == 0 {
            bail!("VB_BENCH_ROUNDS must be at least 1");
        }
        let hosts = std::env::var("VB_BENCH_HOSTS")
            .unwrap_or_else(|_| "qemu,vhost-ranges".into())
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(HostKind::parse)
            .collect::<Result<Vec<_>>>()?;
        if hosts.is_empty() {
            bail!("VB_BENCH_HOSTS names no host");
        }
        let params = std::env::var("VB_BENCH_PARAMS").unwrap_or_default();
        let mut append = std::env::var("VB_BENCH_APPEND").unwrap_or_default();
        if profile::enabled() {
            append = format!("{} {}", append.trim(), profile::cmdline());
        }
        let guest_gib = match std::env::var("VB_BENCH_GUEST_GIB") {
            Ok(v) => v.trim().parse().context("VB_BENCH_GUEST_GIB")?,
            Err(_) => Shape::DEFAULT_GIB,
        };
        if !Shape::GIB_RANGE.contains(&guest_gib) {
            bail!(
                "VB_BENCH_GUEST_GIB={guest_gib}: the guest must have {} to {} GiB",
                Shape::GIB_RANGE.start(),
                Shape::GIB_RANGE.end()
            );
        }
        Ok(Config {
            rounds,
            hosts,
            params: params.trim().to_owned(),
            append: append.trim().to_owned(),
            shape: Shape { guest_gib },
        })
    }
}

/// `YYYYMMDDTHHMMSSZ` (days to civil date: H. Hinnant's algorithm).
fn utc_stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One progress line per boot: the figures its run measures (a scale run only the move).
fn brief(b: &Boot, shape: run::Shape) -> String {
    let show = |k: &str, unit: &str| match b.figs.get(k) {
        Some(Ok(v)) => format!("{} {unit}", figures::fmt(unit, *v)),
        _ => "failed".into(),
    };
    let moved = format!(
        "{}G inflate {}, deflate {}",
        shape.move_gib(),
        show(figures::INFLATE, "GiB/s"),
        show(figures::DEFLATE, "GiB/s")
    );
    if shape.scale() {
        return format!("{moved} ({:.0} s)", b.secs);
    }
    format!(
        "1G reaction {}, {moved}, after hold {}{} ({:.0} s)",
        show(figures::REACT_1G, "ms"),
        show(figures::REACT_HOLD, "ms"),
        if b.host == HostKind::Qemu {
            format!(
                ", huge pages kept {} (fragmented {})",
                show(figures::HP_KEPT, "%"),
                show(figures::FRAG_KEPT, "%")
            )
        } else {
            String::new()
        },
        b.secs
    )
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let started = Instant::now();
    let stamp = utc_stamp();
    let cfg = Config::from_env()?;
    let (accel, accel_text) = pick_accel();
    println!("bench: accelerator {accel_text}");
    if accel == "tcg" {
        println!("bench: under TCG the guest's own work is emulated and weighs more against the host's than it would under KVM");
    }

    let mut sizes = Vec::new();
    for (name, p) in [
        ("vballoon.ko", &ctx.paths.vballoon),
        ("virtio_balloon.ko (C)", &ctx.paths.c_driver),
    ] {
        sizes.push((name, p.clone(), report::module_size(p)));
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "bench: host floor (3 GiB, median of 3; load average {})",
        load.trim()
    );
    let floor = floor::measure();
    match &floor {
        Ok(f) => println!("bench: floor {f:?}"),
        Err(e) => println!("bench: floor failed: {e:#}"),
    }

    let setup = Setup {
        params: &cfg.params,
        append: &cfg.append,
        shape: cfg.shape,
    };
    println!(
        "bench: {} GiB guests, moving {} GiB{}",
        cfg.shape.guest_gib,
        cfg.shape.move_gib(),
        if cfg.shape.scale() {
            " (a scale run: the move and the slab figures only)"
        } else {
            ""
        }
    );
    let mut boots = Vec::new();
    for round in 0..cfg.rounds {
        for &host in &cfg.hosts {
            let order = if round % 2 == 0 {
                [Drv::C, Drv::Rust]
            } else {
                [Drv::Rust, Drv::C]
            };
            for drv in order {
                println!(
                    "bench: round {round} of {} {} {}",
                    cfg.rounds,
                    host.name(),
                    drv_name(drv)
                );
                let b = run::boot_once(ctx, host, drv, round, &setup, floor.as_ref().ok());
                println!("    {}", brief(&b, cfg.shape));
                boots.push(b);
            }
        }
    }

    let dir = std::env::current_dir()?
        .join("results")
        .join(format!("bench-{stamp}"));
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    report::write_series(&dir.join("series.csv"), &boots)?;
    let plotted = plot::draw(
        &dir.join("balloon.svg"),
        &format!(
            "{} GiB inflate, then deflate, of a {} GiB guest (the round with the median inflate)",
            cfg.shape.move_gib(),
            cfg.shape.guest_gib
        ),
        &plot::lines(&boots, &cfg.hosts),
    );
    let mut summary = report::Report {
        dir: &dir,
        accel: &accel_text,
        rounds: cfg.rounds,
        hosts: &cfg.hosts,
        params: &cfg.params,
        append: &cfg.append,
        shape: cfg.shape,
        load: &load,
        floor: &floor,
        sizes: &sizes,
        boots: &boots,
        minutes: started.elapsed().as_secs_f64() / 60.0,
    }
    .summary(ctx);
    if let Err(e) = &plotted {
        summary.push_str(&format!("\nThe plot failed: {e:#}\n"));
    }
    std::fs::write(dir.join("summary.md"), &summary)?;
    println!("\n{summary}");
    println!("bench: results in {}", dir.display());
    let measured = boots.iter().any(|b| b.figs.values().any(|v| v.is_ok()));
    if !measured {
        bail!("nothing could be measured (see {})", dir.display());
    }
    Ok(())
}
