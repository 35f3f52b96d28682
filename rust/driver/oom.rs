// SPDX-License-Identifier: GPL-2.0

//! Deflate on OOM (`DEFLATE_ON_OOM`): when the guest runs out of memory, give balloon pages
//! back (telling the host first) instead of letting the kernel kill a process.

use super::{VBalloon, NUM_PAGES};
use crate::{balloon::target, mm::OomHandler};
use kernel::prelude::*;

impl OomHandler for VBalloon {
    fn out_of_memory(&self) -> u64 {
        // `state` is never held across an allocation (see the lock order), so waiting for it
        // here cannot wait for this very allocation.
        let mut st = self.state.lock();
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
