// SPDX-License-Identifier: GPL-2.0

//! Small gaps of the 7.3 `kernel` crate that the driver needs, kept apart so they can go
//! upstream (or away) on their own.

pub(crate) mod trace;

use crate::ffi;
use core::ptr::NonNull;
use kernel::{
    prelude::*,
    workqueue::{DelayedWork, Queue, Work, WorkItem},
};

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

/// A freezable workqueue of the module's own (`alloc_workqueue(WQ_FREEZABLE)`), destroyed
/// (after draining) when dropped.
///
/// # Invariants
///
/// `raw` is a live workqueue this value owns.
pub(crate) struct FreezableQueue {
    raw: NonNull<kernel::bindings::workqueue_struct>,
}

// SAFETY: A workqueue may be used and destroyed from any thread.
unsafe impl Send for FreezableQueue {}
// SAFETY: Queueing work is thread-safe.
unsafe impl Sync for FreezableQueue {}

impl FreezableQueue {
    /// A new freezable queue named `name`.
    pub(crate) fn new(name: &'static CStr) -> Result<Self> {
        // SAFETY: `name` is a valid C string for the call (the name is copied).
        let raw = unsafe { ffi::vballoon_alloc_freezable_wq(name.as_char_ptr()) };
        let raw = NonNull::new(raw.cast()).ok_or(ENOMEM)?;
        Ok(Self { raw })
    }

    /// The queue, to enqueue work on.
    pub(crate) fn queue(&self) -> &Queue {
        // SAFETY: `raw` is live for as long as `self` (invariant).
        unsafe { Queue::from_raw(self.raw.as_ptr()) }
    }
}

impl Drop for FreezableQueue {
    fn drop(&mut self) {
        // SAFETY: `raw` is ours (invariant) and nothing queues on it any more.
        unsafe { ffi::destroy_workqueue(self.raw.as_ptr().cast()) };
    }
}

/// Milliseconds on the monotonic clock, for measuring waits (`Instant` subtraction carries an
/// overflow check that would be a panic path in the driver).
pub(crate) fn monotonic_ms() -> u64 {
    // SAFETY: `ktime_get` has no preconditions and may be called in any context.
    let ns = unsafe { kernel::bindings::ktime_get() };
    u64::try_from(ns).unwrap_or(0) / 1_000_000
}

/// Nanoseconds on the monotonic clock.
pub(crate) fn monotonic_ns() -> u64 {
    // SAFETY: `ktime_get` has no preconditions and may be called in any context.
    let ns = unsafe { kernel::bindings::ktime_get() };
    u64::try_from(ns).unwrap_or(0)
}

/// Milliseconds since boot, counting suspend (the clock of `/proc/uptime`), for time stamps
/// an operator compares with the guest's uptime.
pub(crate) fn boottime_ms() -> u64 {
    // SAFETY: `ktime_get_boot_fast_ns` has no preconditions and may be called in any context
    // (hard IRQ included).
    let ns = unsafe { kernel::bindings::ktime_get_boot_fast_ns() };
    ns / 1_000_000
}
