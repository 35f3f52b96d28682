//! `make demo`: the balloon growing and shrinking, live, side by side with guest MemTotal.

use crate::guest::{Vm, GIB, MIB};
use crate::scenarios::{boot, Ctx};
use anyhow::Result;
use std::time::{Duration, Instant};

fn watch(vm: &mut Vm, want: u64, what: &str) -> Result<()> {
    println!("  {what}: asking the host for a {} MiB guest", want / MIB);
    println!(
        "  {:>8}  {:>22}  {:>16}",
        "time", "query-balloon actual", "guest MemTotal"
    );
    let start = Instant::now();
    loop {
        let actual = vm.actual()?;
        let total = vm.mem_total()?;
        println!(
            "  {:>7.1}s  {:>18} MiB  {:>12} MiB",
            start.elapsed().as_secs_f64(),
            actual / MIB,
            total / MIB
        );
        if actual == want {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("balloon did not reach {} MiB", want / MIB);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn run(ctx: &Ctx) -> Result<()> {
    println!("booting a 2 GiB guest ...");
    let mut vm = boot(ctx, "demo")?;
    println!(
        "guest up; MemTotal {} MiB; loading vballoon.ko",
        vm.mem_total()? / MIB
    );
    vm.sh("insmod /vballoon.ko")?;
    print!("{}", vm.sh("dmesg | grep -i vballoon")?);
    println!();
    vm.balloon(GIB)?;
    watch(&mut vm, GIB, "inflate")?;
    vm.balloon(2 * GIB)?;
    watch(&mut vm, 2 * GIB, "deflate")?;
    vm.sh("rmmod vballoon")?;
    println!("module unloaded; MemTotal {} MiB", vm.mem_total()? / MIB);
    vm.assert_dmesg_clean()?;
    vm.shutdown()?;
    println!("guest shut down cleanly");
    Ok(())
}
