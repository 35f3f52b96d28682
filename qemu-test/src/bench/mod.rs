//! `make bench`: inflate/deflate speed of vballoon against the in-tree C driver, measured in
//! the same run on the same kernel, reported as ratios (timed tests would be flaky here).

use crate::guest::{GIB, MIB};
use crate::scenarios::{boot, Ctx, Drv};
use anyhow::Result;
use std::time::Duration;

const ROUNDS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds to inflate and to deflate 1 GiB of a 2 GiB guest.
fn measure(ctx: &Ctx, drv: Drv) -> Result<(f64, f64)> {
    let mut vm = boot(ctx, &format!("bench_{drv:?}"))?;
    vm.sh(drv.insmod())?;
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        vm.balloon(GIB)?;
        up.push(vm.wait_actual(GIB, Duration::from_secs(300))?.as_secs_f64());
        vm.balloon(2 * GIB)?;
        down.push(
            vm.wait_actual(2 * GIB, Duration::from_secs(300))?
                .as_secs_f64(),
        );
    }
    vm.shutdown()?;
    Ok((median(up), median(down)))
}

pub fn run(ctx: &Ctx) -> Result<()> {
    println!("inflate/deflate of 1 GiB on a 2 GiB guest, median of {ROUNDS} rounds (QMP polled every 100 ms)");
    let (ru, rd) = measure(ctx, Drv::Rust)?;
    let (cu, cd) = measure(ctx, Drv::C)?;
    println!("{:<10} {:>12} {:>12}", "driver", "inflate s", "deflate s");
    println!("{:<10} {:>12.2} {:>12.2}", "vballoon", ru, rd);
    println!("{:<10} {:>12.2} {:>12.2}", "C", cu, cd);
    println!(
        "ratio vballoon/C: inflate {:.2}, deflate {:.2} (below 1 is faster)",
        ru / cu,
        rd / cd
    );
    println!(
        "throughput: vballoon inflate {:.0} MiB/s, C inflate {:.0} MiB/s",
        (GIB / MIB) as f64 / ru,
        (GIB / MIB) as f64 / cu
    );
    Ok(())
}
