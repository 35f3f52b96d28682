// SPDX-License-Identifier: GPL-2.0

//! Compaction moves a balloon page: tell the host the new page is in the balloon and the old
//! one is out.

use super::{State, VBalloon};
use crate::mm::{Migrate, PageRef};
use kernel::prelude::*;

impl Migrate for VBalloon {
    fn migrate(&self, new: PageRef<'_>, old: PageRef<'_>) -> Result {
        // A host past its time on a transfer would keep compaction waiting too: leave the
        // pages where they are until it answers.
        if self.acked.overdue() {
            return Err(EAGAIN);
        }
        // Never wait for `state`: the inflate path may hold it while allocating, which is what
        // can have entered compaction. `EAGAIN` makes the core put the page back and retry.
        let mut guard = self.state.try_lock().ok_or(EAGAIN)?;
        let State {
            queues, batches, ..
        } = &mut *guard;
        let q = queues.as_ref().ok_or(EAGAIN)?;
        let batch = batches.first_mut().ok_or(EAGAIN)?;
        batch.clear();
        batch.push_page(new.pfn()).map_err(|_| EAGAIN)?;
        q.inflate
            .transfer(core::slice::from_mut(batch), &self.acked)
            .result?;
        batch.clear();
        batch.push_page(old.pfn()).map_err(|_| EAGAIN)?;
        q.deflate
            .transfer(core::slice::from_mut(batch), &self.acked)
            .result?;
        Ok(())
    }
}
