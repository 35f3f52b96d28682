// SPDX-License-Identifier: GPL-2.0

//! Suspend and resume, as the C driver: freeze gives every page back (telling the host) and
//! lets go of the queues, the adapter resets the device; restore creates the queues again, and
//! once the device is live (`ready`) the stats buffer goes out again and the balloon returns
//! to the host's standing target. A wakeup source is held while the balloon works on a new
//! target, so the system does not suspend half-way through.

use super::{hint_queue, queue_names, reporting_queue, Queues, VBalloon};
use crate::{
    balloon::{features::Queue, stats::StatsBuf},
    virtio::{BufferQueue, Device, VqFactory},
};
use core::sync::atomic::Ordering;
use kernel::{device::Core, prelude::*};

impl VBalloon {
    /// `freeze`. The freezable workqueue is already frozen, so no resize or stats work runs,
    /// and none may be waited for (it would run only after the resume).
    pub(super) fn freeze(&self, dev: &Device<Core<'_>>) -> Result {
        // No report runs after this; reporting starts again once the device is live.
        self.reporting.unregister();
        let held = self.held_mib(self.state.lock().held);
        if let Err(e) = self.teardown() {
            dev_err!(
                dev.as_dev(),
                "cannot suspend: the host did not take back the balloon ({:?})\n",
                e
            );
            return Err(e);
        }
        self.suspend_stats();
        // The hint work is frozen too: do not wait for it.
        self.stop_hinting(false);
        self.relax();
        dev_info!(
            dev.as_dev(),
            "suspend: gave back {} MiB; the balloon returns to the host's target on resume\n",
            held
        );
        Ok(())
    }

    /// `restore`: the device was reset; create the queues again, with the features the device
    /// negotiated at probe.
    pub(super) fn restore(&self, dev: &Device<Core<'_>>, vqs: VqFactory<'_, Self>) -> Result {
        let mut vqs = vqs.create(&queue_names(&self.queues)?)?.into_iter();
        let inflate = vqs.next().ok_or(EINVAL)?;
        let deflate = vqs.next().ok_or(EINVAL)?;
        let stats = match self.queues.index(Queue::Stats) {
            Some(_) => Some(BufferQueue::new(vqs.next().ok_or(EINVAL)?)),
            None => None,
        };
        let hint = hint_queue(&self.queues, &mut vqs)?;
        let report = reporting_queue(dev, &self.queues, &mut vqs)?;
        let buf = KBox::new(StatsBuf::with_endian(self.endian), GFP_KERNEL)?;
        self.state.lock().queues = Some(Queues { inflate, deflate });
        *self.report_vq.lock() = report;
        self.resume_stats(stats, buf);
        self.resume_hinting(hint);
        dev_info!(dev.as_dev(), "resume: returning to the host's target\n");
        Ok(())
    }

    /// Holds the device's wakeup source (any context). Idempotent.
    pub(super) fn stay_awake(&self) {
        if !self.awake.swap(true, Ordering::AcqRel) {
            self.dev.stay_awake();
        }
    }

    /// Lets go of the device's wakeup source. Idempotent.
    pub(super) fn relax(&self) {
        if self.awake.swap(false, Ordering::AcqRel) {
            self.dev.relax();
        }
    }
}
