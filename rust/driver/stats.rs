// SPDX-License-Identifier: GPL-2.0

//! The statistics queue: the host returns the one buffer to ask for fresh figures.

use super::VBalloon;
use crate::{
    balloon::stats::StatsBuf,
    kext, mm,
    virtio::{BufferQueue, DeviceReadable},
};
use kernel::{
    prelude::*,
    sync::{Arc, ArcBorrow},
    workqueue::{self, WorkItem},
};

impl DeviceReadable for StatsBuf {
    fn bytes(&self) -> &[u8] {
        self.wire()
    }
}

/// The statistics queue and the buffer it answers with, under `VBalloon::stats`.
pub(super) struct Stats {
    /// `None` without `STATS_VQ`, and after teardown.
    queue: Option<BufferQueue<StatsBuf>>,
    /// The buffer while the driver holds it (before the first post, or if a post failed).
    spare: Option<KBox<StatsBuf>>,
}

impl Stats {
    pub(super) fn new(queue: Option<BufferQueue<StatsBuf>>, buf: KBox<StatsBuf>) -> Self {
        Self {
            queue,
            spare: Some(buf),
        }
    }
}

impl VBalloon {
    /// Refills the statistics buffer from the kernel's counters and gives it to the host:
    /// at `ready` (the first, already valid buffer) and whenever the host returns it.
    pub(super) fn refresh_stats(&self) {
        let mut guard = self.stats.lock();
        let Stats { queue, spare } = &mut *guard;
        let Some(q) = queue.as_mut() else {
            return;
        };
        let Some(mut buf) = spare.take().or_else(|| q.take_used()) else {
            return;
        };
        buf.fill(&mm::stats_sample(), mm::page_shift());
        match q.post(buf) {
            Ok(()) => {
                let served = self.counters.stats_answered();
                kext::trace::stats(self.dev.as_dev(), served);
            }
            Err((e, buf)) => {
                dev_warn!(
                    self.dev.as_dev(),
                    "could not post the stats buffer ({:?})\n",
                    e
                );
                *spare = Some(buf);
            }
        }
    }

    /// The host returned the stats buffer (hard IRQ): refresh it in process context.
    pub(super) fn stats_requested(this: ArcBorrow<'_, Self>) {
        let stop = this.stats_stop.lock();
        if !*stop {
            // Held until the stats work has answered, as the C driver does.
            this.stay_awake(crate::balloon::wakeup::STATS);
            // Already queued is fine: the queued run answers this request.
            let _ = workqueue::system_freezable().enqueue::<Arc<Self>, 1>(Arc::<Self>::from(this));
        }
    }

    /// No stats work runs or is queued after this.
    pub(super) fn stop_stats(&self) {
        *self.stats_stop.lock() = true;
        kext::flush_work(&self.stats_work);
    }

    /// At suspend: no stats work is queued from now on, and the queue goes (its buffer is
    /// freed after the reset). Waits for nothing: the stats work is frozen.
    pub(super) fn suspend_stats(&self) {
        *self.stats_stop.lock() = true;
        self.stats.lock().queue = None;
    }

    /// At resume: the new queue, and a fresh buffer for `ready` to post.
    pub(super) fn resume_stats(&self, queue: Option<BufferQueue<StatsBuf>>, buf: KBox<StatsBuf>) {
        {
            let mut stats = self.stats.lock();
            stats.queue = queue;
            stats.spare = Some(buf);
        }
        *self.stats_stop.lock() = false;
    }

    /// Lets go of the queue (a buffer the host still holds is freed after the reset); returns
    /// how many stats buffers went to the host since bind.
    pub(super) fn drop_stats_queue(&self) -> u64 {
        self.stats.lock().queue = None;
        self.snapshot().stats_requests
    }
}

impl WorkItem<1> for VBalloon {
    type Pointer = Arc<VBalloon>;

    fn run(this: Arc<VBalloon>) {
        this.awake_processing(crate::balloon::wakeup::STATS);
        this.refresh_stats();
        this.awake_done();
    }
}
