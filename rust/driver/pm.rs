// SPDX-License-Identifier: GPL-2.0

//! Suspend and resume, as the C driver: freeze gives every page back (telling the host) and
//! lets go of the queues, the adapter resets the device; restore creates the queues again, and
//! once the device is live (`ready`) the stats buffer goes out again and the balloon returns
//! to the host's standing target. A wakeup source is held while the balloon works on a new
//! target, so the system does not suspend half-way through.

use super::{hint_queue, queue_names, reporting_queue, Queues, VBalloon, POISON_VAL};
use crate::{
    balloon::{
        features::{Queue, F_PAGE_POISON},
        stats::StatsBuf,
        validate,
    },
    mm,
    virtio::{BufferQueue, Device, VqFactory},
};
use kernel::{device::Core, prelude::*};

impl VBalloon {
    /// `freeze`. The freezable workqueue is already frozen, so no resize or stats work runs,
    /// and none may be waited for (it would run only after the resume).
    ///
    /// A host that is not answering right now gets a clean refusal, with nothing changed.
    /// Otherwise every wait below is bounded by `host_timeout_ms` (the event is abandoned until
    /// restore); if the host stops answering half-way, the suspend still goes on: the pages it
    /// was not told about stay in the balloon while the adapter resets the device, and restore
    /// frees them before the device goes live again, so the balloon works after the resume.
    pub(super) fn freeze(&self, dev: &Device<Core<'_>>) -> Result {
        if self.acked.overdue() {
            dev_err!(
                dev.as_dev(),
                "cannot suspend: the host has not answered a transfer for over {} ms\n",
                self.acked.limit_ms()
            );
            return Err(EBUSY);
        }
        self.acked.abandon();
        // No report runs after this; reporting starts again once the device is live.
        self.reporting.unregister();
        let held = self.held_mib(self.state.lock().held);
        if let Err(e) = self.teardown() {
            dev_err!(
                dev.as_dev(),
                "suspend: the host did not take back {} MiB ({:?}); freeing it on resume, after the device reset\n",
                self.held_mib(self.state.lock().held),
                e
            );
        } else {
            dev_info!(
                dev.as_dev(),
                "suspend: gave back {} MiB; the balloon returns to the host's target on resume\n",
                held
            );
        }
        self.suspend_stats();
        // The hint work is frozen too: do not wait for it.
        self.stop_hinting(false);
        self.relax();
        Ok(())
    }

    /// `restore`: the device was reset; create the queues again, with the features the device
    /// negotiated at probe, and write what the device forgot at the reset (`poison_val`,
    /// `actual`) before it goes live.
    pub(super) fn restore(&self, dev: &Device<Core<'_>>, vqs: VqFactory<'_, Self>) -> Result {
        // Pages a bounded freeze could not give back: the device was reset since, so they are
        // the guest's again.
        let freed = self.list.release_all();
        if freed > 0 {
            dev_info!(
                dev.as_dev(),
                "resume: freed {} MiB the host was not told about before the suspend\n",
                self.held_mib(freed as u64)
            );
        }
        {
            let mut st = self.state.lock();
            st.held = st.held.saturating_sub(freed as u64);
        }
        self.acked.stop_abandoning();
        let mut vqs = vqs.create(&queue_names(&self.queues)?)?.into_iter();
        let inflate = vqs.next().ok_or(EINVAL)?;
        let deflate = vqs.next().ok_or(EINVAL)?;
        let stats = match self.queues.index(Queue::Stats) {
            Some(_) => Some(BufferQueue::new(vqs.next().ok_or(EINVAL)?)?),
            None => None,
        };
        let hint = hint_queue(dev, &self.queues, &mut vqs)?;
        let report = reporting_queue(dev, &self.queues, &mut vqs)?;
        let buf = KBox::new(StatsBuf::with_endian(self.endian), GFP_KERNEL)?;
        if dev.has_feature(F_PAGE_POISON) {
            // The reset zeroed it; before DRIVER_OK, as at probe.
            dev.write(POISON_VAL, validate::poison_val(mm::freed_pages()))?;
        }
        let mut st = self.state.lock();
        // The reset zeroed `actual` too: say what the balloon holds (0 after a full teardown).
        self.write_actual(st.held);
        st.queues = Some(Queues { inflate, deflate });
        drop(st);
        *self.report_vq.lock() = report;
        self.resume_stats(stats, buf);
        self.resume_hinting(hint);
        dev_info!(dev.as_dev(), "resume: returning to the host's target\n");
        Ok(())
    }

    /// An event for `reason` (a `wakeup` bit) arrived: hold the device's wakeup source until
    /// its work is done (any context).
    pub(super) fn stay_awake(&self, reason: u32) {
        let mut w = self.awake.lock();
        if w.start(reason) {
            self.dev.stay_awake();
        }
    }

    /// The work for `reason` starts handling it.
    pub(super) fn awake_processing(&self, reason: u32) {
        self.awake.lock().process(reason);
    }

    /// A work is done: lets go of the wakeup source unless another event came in meanwhile
    /// (its work, queued, lets go when it is done).
    pub(super) fn awake_done(&self) {
        let mut w = self.awake.lock();
        if w.finish() {
            self.dev.relax();
        }
    }

    /// Teardown or suspend: lets go of the wakeup source whatever is pending. Idempotent.
    pub(super) fn relax(&self) {
        let mut w = self.awake.lock();
        if w.clear() {
            self.dev.relax();
        }
    }
}
