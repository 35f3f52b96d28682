// SPDX-License-Identifier: GPL-2.0

//! Small gaps of the 7.3 `kernel` crate that the driver needs, kept apart so they can go
//! upstream (or away) on their own.

use crate::ffi;
use kernel::workqueue::{DelayedWork, Work, WorkItem};

/// Waits until `work` is idle: a pending timer fires at once and the item runs to completion.
///
/// The item may queue itself again while it runs; callers stop that first (under their own
/// lock) so that after this returns nothing of `work` is pending or running.
pub(crate) fn flush_delayed_work<T: WorkItem<ID>, const ID: u64>(work: &DelayedWork<T, ID>) {
    // SAFETY: `work` is a live, initialised `DelayedWork`; `raw_as_work` gives the address of
    // its `work_struct`, the first field of the C `delayed_work` it wraps, so the cast gives the
    // `delayed_work` itself.
    unsafe {
        let w = DelayedWork::raw_as_work(core::ptr::from_ref(work));
        ffi::vballoon_flush_delayed_work(w.cast());
    }
}

/// Waits until `work` is idle (see [`flush_delayed_work`] for re-queueing).
pub(crate) fn flush_work<T: WorkItem<ID>, const ID: u64>(work: &Work<T, ID>) {
    // SAFETY: `work` is a live, initialised `Work`; `raw_get` gives its `work_struct`.
    unsafe { kernel::bindings::flush_work(Work::raw_get(core::ptr::from_ref(work))) };
}
