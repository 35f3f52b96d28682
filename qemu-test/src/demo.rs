//! `make demo`: the balloon growing and shrinking, live, side by side with guest MemTotal.

use crate::counters::Counters;
use crate::guest::{Vm, VmOpts, GIB, MIB};
use crate::scenarios::Ctx;
use anyhow::Result;
use std::time::{Duration, Instant};

fn watch(vm: &mut Vm, want: u64, what: &str) -> Result<()> {
    println!("  {what}: asking the host for a {} MiB guest", want / MIB);
    println!(
        "  {:>8}  {:>22}  {:>16}  {:>10}  {:>14}  {:>14}  {:>14}",
        "time",
        "query-balloon actual",
        "guest MemTotal",
        "state",
        "actual_mib",
        "inflated_pages",
        "deflated_pages"
    );
    let start = Instant::now();
    loop {
        let actual = vm.actual()?;
        let total = vm.mem_total()?;
        // The driver's own counters (sysfs, under the balloon device).
        let c = Counters::read(vm)?;
        println!(
            "  {:>7.1}s  {:>18} MiB  {:>12} MiB  {:>10}  {:>14}  {:>14}  {:>14}",
            start.elapsed().as_secs_f64(),
            actual / MIB,
            total / MIB,
            c.state(),
            c.num("actual_mib")?,
            c.num("inflated_pages")?,
            c.num("deflated_pages")?
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
    let opts = VmOpts {
        watch: true,
        ..VmOpts::default()
    };
    let mut vm = Vm::boot("demo", ctx.paths, ctx.initramfs, &opts)?;
    println!(
        "(`make watch` in another terminal follows the driver's counters, once a second: {})",
        ctx.paths.work.join("demo/watch.log").display()
    );
    println!(
        "guest up; MemTotal {} MiB; loading vballoon.ko",
        vm.mem_total()? / MIB
    );
    vm.sh("insmod /vballoon.ko")?;
    print!("{}", vm.sh("dmesg | grep -i vballoon")?);
    println!();
    println!("why the balloon is where it is (debugfs, one cat):");
    println!("{}", crate::counters::debugfs_view(&mut vm)?.trim_end());
    println!();
    vm.balloon(GIB)?;
    watch(&mut vm, GIB, "inflate")?;
    vm.balloon(2 * GIB)?;
    watch(&mut vm, 2 * GIB, "deflate")?;
    println!("{}", crate::counters::debugfs_view(&mut vm)?.trim_end());
    vm.sh("rmmod vballoon")?;
    println!("module unloaded; MemTotal {} MiB", vm.mem_total()? / MIB);
    vm.assert_dmesg_clean()?;
    vm.shutdown()?;
    println!("guest shut down cleanly");
    Ok(())
}
