//! vballoon's counters as an operator reads them (sysfs under the balloon device, the debugfs
//! view, the trace events in tracefs), and the exact expectations the boot tests put on them.

use crate::guest::{Vm, GIB, MIB};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;

/// The balloon device's counter directory in the guest (device ID 5 is the balloon).
const DIR: &str =
    "$(for d in /sys/bus/virtio/devices/*; do grep -q 0x0005 $d/device && echo $d/vballoon; done)";

/// Guest pages per MiB (the test guests have 4 KiB pages).
pub const PAGES_PER_MIB: u64 = 256;

/// Every counter file of the device, by name.
#[derive(Clone, Debug)]
pub struct Counters(BTreeMap<String, String>);

impl Counters {
    /// Reads every file with one `grep`, as an operator would (`grep . .../vballoon/*`).
    pub fn read(vm: &mut Vm) -> Result<Counters> {
        let out = vm.sh(&format!("cd {DIR} && grep . *"))?;
        let mut map = BTreeMap::new();
        for line in out.lines() {
            if let Some((k, v)) = line.split_once(':') {
                map.insert(k.to_string(), v.trim().to_string());
            }
        }
        ensure!(
            map.contains_key("state") && map.contains_key("held_pages"),
            "no vballoon counters under the balloon device: {out}"
        );
        Ok(Counters(map))
    }

    pub fn num(&self, name: &str) -> Result<i64> {
        self.0
            .get(name)
            .with_context(|| format!("no counter {name}"))?
            .parse()
            .with_context(|| format!("counter {name} is not a number"))
    }

    pub fn state(&self) -> &str {
        self.0.get("state").map(String::as_str).unwrap_or("")
    }

    /// How much each counter rose since `before`.
    pub fn delta(&self, before: &Counters, name: &str) -> Result<i64> {
        Ok(self.num(name)? - before.num(name)?)
    }

    /// The counters that differ from `before`, other than `allowed` ones.
    pub fn changed_besides(&self, before: &Counters, allowed: &[&str]) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| !allowed.contains(&k.as_str()) && before.0.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}: {:?} -> {v}", before.0.get(k)))
            .collect()
    }

    /// One line for a log.
    pub fn line(&self) -> String {
        [
            "state",
            "target_mib",
            "actual_mib",
            "inflated_pages",
            "deflated_pages",
            "alloc_failures",
            "floor_episodes",
            "host_timeouts",
            "last_error",
        ]
        .iter()
        .map(|k| format!("{k}={}", self.0.get(*k).map(String::as_str).unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// The debugfs view of the balloon device.
pub fn debugfs_view(vm: &mut Vm) -> Result<String> {
    vm.sh("cat /sys/kernel/debug/vballoon/virtio*")
}

/// Starts recording vballoon's inflate and deflate events in tracefs (buffer emptied).
pub fn trace_steps(vm: &mut Vm) -> Result<()> {
    vm.sh(
        "T=/sys/kernel/tracing; [ -d $T/events ] || mount -t tracefs nodev $T; \
         echo 0 > $T/tracing_on; echo > $T/trace; \
         echo 1 > $T/events/vballoon/vballoon_inflate/enable; \
         echo 1 > $T/events/vballoon/vballoon_deflate/enable; echo 1 > $T/tracing_on",
    )?;
    Ok(())
}

/// The recorded events of `event` (`vballoon_inflate`/`vballoon_deflate`): how many, and the
/// sum of their page counts.
pub fn traced(vm: &mut Vm, event: &str) -> Result<(u64, u64)> {
    let out = vm.sh(&format!(
        "grep ' {event}: ' /sys/kernel/tracing/trace | sed -n 's/.* pages=\\([0-9]*\\) .*/\\1/p'"
    ))?;
    let mut n = 0;
    let mut pages = 0;
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        n += 1;
        pages += l.trim().parse::<u64>().context("pages= of a trace event")?;
    }
    Ok((n, pages))
}

/// The inflate and deflate of `inflate_deflate`, with the counters' and trace's exact
/// expectations: inflating `mib` raises `inflated_pages` by exactly `mib` MiB of pages and
/// leaves `actual_mib` at what `query-balloon` says the balloon holds; one trace event per
/// inflate step (`inflate_steps`), their pages adding up; deflating back raises
/// `deflated_pages` by the same amount, with `held_pages` 0. `ram` is the guest's RAM.
pub fn inflate_deflate_counted(vm: &mut Vm, ram: u64, mib: u64) -> Result<()> {
    let want = mib * PAGES_PER_MIB;
    let c0 = Counters::read(vm)?;
    ensure!(
        c0.num("held_pages")? == 0,
        "held before inflating: {}",
        c0.line()
    );
    trace_steps(vm)?;
    vm.balloon(ram - mib * MIB)?;
    vm.wait_actual(ram - mib * MIB, super::scenarios::MOVE_TIMEOUT)?;
    let c1 = Counters::read(vm)?;
    let host_mib = (ram - vm.actual()?) / MIB;
    let (events, traced_pages) = traced(vm, "vballoon_inflate")?;
    let steps = c1.delta(&c0, "inflate_steps")?;
    println!(
        "    counters after a {mib} MiB inflate: {}; {events} trace events, {traced_pages} pages, {steps} steps",
        c1.line()
    );
    ensure!(
        c1.delta(&c0, "inflated_pages")? == want as i64,
        "inflated_pages rose by {} for {mib} MiB ({want} pages)",
        c1.delta(&c0, "inflated_pages")?
    );
    ensure!(
        c1.num("held_pages")? == want as i64,
        "held_pages {}",
        c1.num("held_pages")?
    );
    ensure!(
        c1.num("actual_mib")? as u64 == host_mib,
        "actual_mib {} but query-balloon says the balloon holds {host_mib} MiB",
        c1.num("actual_mib")?
    );
    ensure!(
        c1.state() == "at_target",
        "state {:?} at the target",
        c1.state()
    );
    ensure!(
        events == steps as u64 && traced_pages == want,
        "trace: {events} vballoon_inflate events ({traced_pages} pages) for {steps} steps of {want} pages"
    );
    let view = debugfs_view(vm)?;
    ensure!(
        view.starts_with("at_target: at the host's target of"),
        "debugfs view: {view}"
    );
    vm.balloon(ram)?;
    vm.wait_actual(ram, super::scenarios::MOVE_TIMEOUT)?;
    let c2 = Counters::read(vm)?;
    let (devents, dpages) = traced(vm, "vballoon_deflate")?;
    println!(
        "    counters after deflating back: {}; {devents} deflate events, {dpages} pages",
        c2.line()
    );
    ensure!(
        c2.delta(&c1, "deflated_pages")? == want as i64,
        "deflated_pages rose by {} for {want} pages",
        c2.delta(&c1, "deflated_pages")?
    );
    ensure!(
        c2.num("held_pages")? == 0 && c2.num("actual_mib")? == 0,
        "held after deflating: {}",
        c2.line()
    );
    ensure!(
        dpages == want && devents == c2.delta(&c1, "deflate_steps")? as u64,
        "trace: {devents} vballoon_deflate events ({dpages} pages)"
    );
    ensure!(
        c2.num("last_error")? == 0,
        "last_error {}",
        c2.num("last_error")?
    );
    ensure!(ram >= GIB, "guest RAM");
    Ok(())
}

/// Fails unless `state` reads `want` (within a few tries: the driver may be between steps).
pub fn expect_state(vm: &mut Vm, want: &str) -> Result<Counters> {
    for _ in 0..20 {
        let c = Counters::read(vm)?;
        if c.state() == want {
            return Ok(c);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let c = Counters::read(vm)?;
    bail!("state {:?}, expected {want:?}: {}", c.state(), c.line())
}
