//! AFTER-HOLD: how fast a driver held back (vballoon at its floor, the C driver retrying
//! its failed allocations) reacts to a new target.

use super::figures::{HOLD_MIB, REACT_HOLD};
use super::probe::Until;
use super::run::Run;
use crate::guest::{Vm, GIB, MIB};
use anyhow::{anyhow, Result};
use std::time::Duration;

/// What the hog leaves the guest, besides what it holds.
const HOLD_SPARE_MIB: u64 = 250;

impl Run<'_> {
    /// AFTER-HOLD: a hog leaves the guest little; the host asks for 3 GiB, which cannot be
    /// had (vballoon holds at its floor, the C driver retries its failed allocations every
    /// 200 ms); after 3 s, with the hog still there, a smaller balloon is asked for: how long
    /// until the balloon moves?
    pub(super) fn after_hold(&mut self) -> Result<()> {
        let vm = &mut self.t.vm;
        let ooms0 = oom_lines(vm)?;
        let avail = vm.meminfo_kb("MemAvailable")? / 1024;
        let hog = avail.saturating_sub(HOLD_SPARE_MIB);
        let pid = vm.hog_held(hog, "")?;
        self.op("hold", 3 * GIB, Until::For(Duration::from_secs(3)))?;
        let held = self.t.ballooned()?;
        self.b.set(HOLD_MIB, (held / MIB) as f64);
        let r = if held == 0 {
            Err(anyhow!(
                "the balloon did not inflate at all with the {hog} MiB hog held"
            ))
        } else {
            self.op("after-hold", held.saturating_sub(64 * MIB), Until::Moved)
        };
        let vm = &mut self.t.vm;
        let (alive, _) = vm.sh_rc(&format!("kill -0 {pid}"), Duration::from_secs(120))?;
        let ooms = oom_lines(vm)? - ooms0;
        vm.sh_rc(
            &format!("kill {pid} 2>/dev/null; wait {pid}"),
            Duration::from_secs(120),
        )?;
        match r {
            Ok(op) if alive == 0 && ooms == 0 => {
                self.b.set(REACT_HOLD, op.first_move_ms.unwrap_or_default())
            }
            Ok(op) => self.b.fail(
                &[REACT_HOLD],
                &format!(
                    "the guest OOM-killed ({ooms} OOM report(s), hog {}); reaction was {:.0} ms",
                    if alive == 0 { "alive" } else { "gone" },
                    op.first_move_ms.unwrap_or_default()
                ),
            ),
            Err(e) => self.b.fail(&[REACT_HOLD], &format!("{e:#}")),
        }
        self.op("after-hold-deflate", 0, Until::Reached)?;
        Ok(())
    }
}

/// Kernel log lines that say the OOM killer acted.
fn oom_lines(vm: &mut Vm) -> Result<usize> {
    Ok(vm
        .dmesg()?
        .lines()
        .filter(|l| l.contains("Out of memory") || l.contains("oom-kill"))
        .count())
}
