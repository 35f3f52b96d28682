//! vballoon's counters as an operator reads them (sysfs under the balloon device, the debugfs
//! view, the trace events in tracefs), and the exact expectations the boot tests put on them.

use crate::guest::{Vm, MIB};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Moves the balloon so the guest has `guest` bytes, and checks that the step counters and
/// the trace agree on it: `<dir>_pages` (`inflated_pages`/`deflated_pages`) rose by exactly
/// `pages`, tracefs holds one `vballoon_<dir>` event per step (`<dir>_steps`) and their page
/// counts add up to `pages`. Returns the counters after the move.
fn move_counted(vm: &mut Vm, guest: u64, dir: &str, pages: u64) -> Result<Counters> {
    let before = Counters::read(vm)?;
    vm.balloon(guest)?;
    vm.wait_actual(guest, super::scenarios::MOVE_TIMEOUT)?;
    let after = Counters::read(vm)?;
    let (events, traced_pages) = traced(vm, &format!("vballoon_{dir}"))?;
    let moved = after.delta(&before, &format!("{dir}d_pages"))?;
    let steps = after.delta(&before, &format!("{dir}_steps"))?;
    println!(
        "    counters after the {dir}: {}; {events} vballoon_{dir} events with {traced_pages} pages, {steps} steps",
        after.line()
    );
    ensure!(
        moved == pages as i64,
        "{dir}d_pages rose by {moved}, for {pages} pages"
    );
    ensure!(
        events == steps as u64 && traced_pages == pages,
        "trace: {events} vballoon_{dir} events ({traced_pages} pages) for {steps} steps of {pages} pages"
    );
    Ok(after)
}

/// The inflate and deflate of `inflate_deflate`, with the counters' and trace's exact
/// expectations ([`move_counted`] both ways): after inflating `mib`, `held_pages` is exactly
/// `mib` MiB of pages, `actual_mib` is what `query-balloon` says the balloon holds, `state`
/// is `at_target` and the debugfs view says so; after deflating back, `held_pages` is 0 and no
/// error was recorded. `ram` is the guest's RAM.
pub fn inflate_deflate_counted(vm: &mut Vm, ram: u64, mib: u64) -> Result<()> {
    let want = mib * PAGES_PER_MIB;
    let c0 = Counters::read(vm)?;
    ensure!(
        c0.num("held_pages")? == 0,
        "held before inflating: {}",
        c0.line()
    );
    trace_steps(vm)?;
    let c1 = move_counted(vm, ram - mib * MIB, "inflate", want)?;
    let host_mib = (ram - vm.actual()?) / MIB;
    ensure!(
        c1.num("held_pages")? == want as i64
            && c1.num("actual_mib")? as u64 == host_mib
            && c1.state() == "at_target",
        "after inflating {mib} MiB (query-balloon: the balloon holds {host_mib} MiB): {}",
        c1.line()
    );
    let view = debugfs_view(vm)?;
    ensure!(
        view.starts_with("at_target: at the host's target of"),
        "debugfs view: {view}"
    );
    let c2 = move_counted(vm, ram, "deflate", want)?;
    ensure!(
        c2.num("held_pages")? == 0 && c2.num("actual_mib")? == 0 && c2.num("last_error")? == 0,
        "after deflating: {}",
        c2.line()
    );
    Ok(())
}

/// Fails unless `state` reads `want` (within a few tries: the driver may be between steps).
pub fn expect_state(vm: &mut Vm, want: &str) -> Result<Counters> {
    for _ in 0..20 {
        let c = Counters::read(vm)?;
        if c.state() == want {
            return Ok(c);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let c = Counters::read(vm)?;
    bail!("state {:?}, expected {want:?}: {}", c.state(), c.line())
}

/// What `make watch` shows of a guest booted with `VmOpts::watch`: waits up to 15 s for the
/// guest's once-a-second line to show `state=want` in `file` (`<guest dir>/watch.log`), then
/// runs `scripts/watch.sh FILE` for 3 s, as an operator would, and returns the table rows
/// that show `want`, each split into its columns (uptime, state, target_mib, actual_mib,
/// inflated, deflated, alloc failures, floor episodes, OOM pages, host timeouts, last error).
pub fn watch_rows(root: &Path, file: &Path, want: &str) -> Result<Vec<Vec<String>>> {
    let needle = format!(" state={want} ");
    let start = Instant::now();
    while !std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .any(|l| format!(" {l} ").contains(&needle))
    {
        ensure!(
            start.elapsed() < Duration::from_secs(15),
            "{} has no line with state={want} after 15 s",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // `timeout` signals its whole process group, so the script's `tail -F` ends too.
    let out = Command::new("timeout")
        .arg("3")
        .arg("bash")
        .arg(root.join("scripts/watch.sh"))
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .context("running scripts/watch.sh")?;
    let table = String::from_utf8_lossy(&out.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    ensure!(
        header.get(1..4) == Some(&["state", "target_mib", "actual_mib"][..]),
        "scripts/watch.sh printed no table header: {table}"
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|r| r.get(1).map(String::as_str) == Some(want))
        .collect();
    ensure!(
        !rows.is_empty(),
        "scripts/watch.sh showed no row in state {want}: {table}"
    );
    Ok(rows)
}
