// SPDX-License-Identifier: GPL-2.0

//! Small gaps of the 7.3 `kernel` crate that the driver needs, kept apart so they can go
//! upstream (or away) on their own.

pub(crate) mod irqlock;
pub(crate) mod shared_dir;
pub(crate) mod trace;

use crate::ffi;
use core::ptr::NonNull;
use kernel::{
    alloc::{AllocError, Flags},
    prelude::*,
    workqueue::{DelayedWork, Queue, Work, WorkItem},
};

/// The module parameters, as modprobe.d or the kernel command line set them. They are C
/// `module_param`s (rust/helpers.c) so that sysfs shows them, read-only; each is read once, at
/// probe.
pub(crate) mod param {
    use crate::ffi;

    /// `floor_mib`: vballoon never inflates while MemAvailable is below this many MiB.
    pub(crate) fn floor_mib() -> u64 {
        // SAFETY: Reads a `static` of this module, alive as long as the module's code.
        let mib = unsafe { ffi::vballoon_param_floor_mib() };
        // `unsigned long`: never wider than 64 bits.
        mib as u64
    }

    /// `block_kib`: the inflate block size in KiB (0: single pages).
    pub(crate) fn block_kib() -> u32 {
        // SAFETY: As above.
        unsafe { ffi::vballoon_param_block_kib() }
    }

    /// `host_timeout_ms`: how long the host may take to use a buffer.
    pub(crate) fn host_timeout_ms() -> u32 {
        // SAFETY: As above.
        unsafe { ffi::vballoon_param_host_timeout_ms() }
    }
}

/// `v.push(x, flags)` without a panic path where the kernel has `CONFIG_RUST_OVERFLOW_CHECKS`
/// (Debian's kernels): `KVec::push` inlines `reserve`, whose `cap - len` and `cap * 2` rely on
/// the vector's invariant, which the optimizer cannot see, so each caller got overflow checks
/// that panic. Here `len == cap` and `cap <= isize::MAX` are checked first, which makes both
/// operations provably in range; nothing else changes (the vector grows as `push` grows it).
pub(crate) fn push<T>(v: &mut KVec<T>, x: T, flags: Flags) -> Result<(), AllocError> {
    let (len, cap) = (v.len(), v.capacity());
    if len == cap {
        if cap > isize::MAX as usize {
            return Err(AllocError);
        }
        v.reserve(1, flags)?;
    }
    v.push_within_capacity(x).map_err(|_| AllocError)
}

/// `v.retain(keep)` without `KVec::retain`'s bounds-checked `swap`, which overflow-checked
/// builds cannot prove in range: the kept elements move to the front in order, the rest are
/// dropped.
pub(crate) fn retain<T>(v: &mut KVec<T>, mut keep: impl FnMut(&T) -> bool) {
    let mut kept = 0usize;
    let s: &mut [T] = v;
    for i in 0..s.len() {
        let Some((head, tail)) = s.split_at_mut_checked(i) else {
            break;
        };
        let Some(cur) = tail.first_mut() else {
            break;
        };
        if keep(cur) {
            // `kept <= i`: when equal, the element is already in place.
            if let Some(dst) = head.get_mut(kept) {
                core::mem::swap(dst, cur);
            }
            kept = kept.saturating_add(1);
        }
    }
    v.truncate(kept);
}

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
