// SPDX-License-Identifier: GPL-2.0

//! Deflate on OOM (`DEFLATE_ON_OOM`): when the guest runs out of memory, give balloon pages
//! back (telling the host first) instead of letting the kernel kill a process.

use super::{VBalloon, NUM_PAGES};
use crate::{
    balloon::{counters::Phase, target},
    kext,
    mm::OomHandler,
};
use kernel::{
    prelude::*,
    time::{delay::fsleep, Delta},
};

impl OomHandler for VBalloon {
    fn out_of_memory(&self) -> u64 {
        // A host that is not answering cannot take a deflate either: let the kernel go on.
        if self.acked.overdue() {
            return 0;
        }
        // `state` is never held across an allocation (see the lock order), so waiting for it
        // here cannot wait for this very allocation; but it may be held by a transfer the
        // host is slow to answer, so the wait is bounded by the host limit too.
        let mut waited_ms = 0u32;
        let mut st = loop {
            if let Some(st) = self.state.try_lock() {
                break st;
            }
            if waited_ms >= self.acked.limit_ms() || self.acked.overdue() {
                return 0;
            }
            fsleep(Delta::from_millis(1));
            waited_ms = waited_ms.saturating_add(1);
        };
        if st.stopping || st.held == 0 {
            return 0;
        }
        let got = self
            .leak(&mut st, target::oom_pages(&self.geometry))
            .unwrap_or(0) as u64;
        if got == 0 {
            return 0;
        }
        st.oom_deflated = st.oom_deflated.saturating_add(got);
        self.counters.oom_deflated(got);
        self.counters.set_phase(Phase::OomHold, 0);
        kext::trace::oom(self.dev.as_dev(), got, st.held);
        if st.oom_hold.is_none() {
            dev_info!(
                self.dev.as_dev(),
                "guest out of memory: deflating, now {} MiB; holding there until the host sets a new target\n",
                self.held_mib(st.held)
            );
        }
        // Until the host speaks again, the target is what the balloon holds now.
        st.oom_hold = Some(self.dev.read(NUM_PAGES).unwrap_or(0));
        got
    }
}
