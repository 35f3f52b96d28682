//! Soak: many inflate/deflate cycles of random sizes with a workload running, then many
//! insmod/rmmod cycles (some with the balloon inflated, some in the middle of an inflate).
//! `make stress` runs the long version; `make test` runs a short one on the debug kernel
//! (`stress_short`), where kmemleak scans at the end.

use crate::guest::{GIB, MIB};
use crate::scenarios::{boot, load, Ctx, Drv, MOVE_TIMEOUT};
use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};

/// xorshift64*: a seeded, reproducible sequence (the seed is printed).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How much to soak.
pub struct Soak {
    pub cycles: u32,
    pub loads: u32,
    pub seed: u64,
    /// The largest balloon a cycle asks for, of the 2 GiB guest (the workload and the floor
    /// need the rest).
    pub max_mib: u64,
}

impl Soak {
    /// The seed: `VB_SEED` if set, else the clock.
    pub fn seed() -> u64 {
        std::env::var("VB_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            })
    }
}

pub fn soak(ctx: &Ctx, name: &str, s: &Soak) -> Result<()> {
    println!(
        "    seed {} (VB_SEED={} reproduces it): {} cycles of up to {} MiB, {} load cycles",
        s.seed, s.seed, s.cycles, s.max_mib, s.loads
    );
    let mut rng = Rng(s.seed);
    let mut vm = boot(ctx, name)?;
    let start = vm.mem_total()?;
    load(&mut vm, Drv::Rust)?;
    // The workload: a process that keeps taking and freeing 48 MiB.
    vm.sh("(while true; do hog 48 >/dev/null 2>&1; done) >/dev/null 2>&1 & echo $! > /tmp/workload.pid")?;
    let t = Instant::now();
    let mut rss_warm = 0;
    let mut moved_mib = 0u64;
    for i in 0..s.cycles {
        let up = 1 + rng.below(s.max_mib);
        let down = rng.below(up);
        for mib in [up, down] {
            vm.balloon(2 * GIB - mib * MIB)?;
            vm.wait_actual(2 * GIB - mib * MIB, MOVE_TIMEOUT)
                .with_context(|| format!("cycle {i}: balloon {mib} MiB"))?;
        }
        moved_mib += up + (up - down);
        let t_now = vm.mem_total()?;
        ensure!(
            start - t_now == down * MIB,
            "cycle {i}: balloon {down} MiB but MemTotal went down {} MiB",
            (start - t_now) / MIB
        );
        if i == s.cycles.min(10) - 1 {
            vm.balloon(2 * GIB)?;
            vm.wait_actual(2 * GIB, MOVE_TIMEOUT)?;
            rss_warm = vm.qemu_rss()?;
        }
        if (i + 1) % 100 == 0 {
            println!(
                "    {} cycles, {} MiB moved, {:?}",
                i + 1,
                moved_mib,
                t.elapsed()
            );
        }
    }
    vm.balloon(2 * GIB)?;
    vm.wait_actual(2 * GIB, MOVE_TIMEOUT)?;
    ensure!(
        vm.mem_total()? == start,
        "MemTotal not back after the cycles"
    );
    let rss_end = vm.qemu_rss()?;
    println!(
        "    {} cycles in {:?} ({} MiB moved); QEMU RSS at an empty balloon: {} MiB after warm-up, {} MiB at the end",
        s.cycles,
        t.elapsed(),
        moved_mib,
        rss_warm / MIB,
        rss_end / MIB
    );
    // The guest may touch more of its RAM over time (page cache, the workload moving around),
    // but never more than all of it: RSS flat means it does not grow past the guest's size
    // plus QEMU's own, and not by more than 128 MiB over the soak.
    ensure!(
        rss_end <= rss_warm + 128 * MIB,
        "QEMU RSS grew from {} MiB to {} MiB",
        rss_warm / MIB,
        rss_end / MIB
    );
    // Stop the workload (its loop, then a hog it may have running) before the load cycles.
    vm.sh("kill $(cat /tmp/workload.pid) && sleep 1 && pkill hog; ! kill -0 $(cat /tmp/workload.pid) 2>/dev/null")?;
    // Load cycles: 0 plain, 1 inflated, 2 in the middle of an inflate.
    let t = Instant::now();
    for j in 0..s.loads {
        vm.sh("rmmod vballoon")?;
        ensure!(
            vm.mem_total()? == start,
            "load cycle {j}: MemTotal after rmmod"
        );
        load(&mut vm, Drv::Rust)?;
        match j % 3 {
            0 => {
                vm.balloon(2 * GIB)?;
            }
            1 => {
                let mib = 64 + rng.below(768);
                vm.balloon(2 * GIB - mib * MIB)?;
                vm.wait_actual(2 * GIB - mib * MIB, MOVE_TIMEOUT)?;
            }
            _ => {
                vm.balloon(GIB)?;
                std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
            }
        }
    }
    vm.sh("rmmod vballoon")?;
    ensure!(vm.mem_total()? == start, "MemTotal after the last rmmod");
    println!("    {} load cycles in {:?}", s.loads, t.elapsed());
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}

/// The short soak `make test` runs (the long one is `make stress`).
pub fn stress_short(ctx: &Ctx) -> Result<()> {
    soak(
        ctx,
        "stress_short",
        &Soak {
            cycles: 15,
            loads: 9,
            seed: Soak::seed(),
            max_mib: 512,
        },
    )
}
