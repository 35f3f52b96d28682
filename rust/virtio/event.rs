// SPDX-License-Identifier: GPL-2.0

//! A wake-up signalled from a virtqueue callback (hard IRQ) and waited on in process context,
//! with the driver's patience for the device: how long a wait may last before it is overdue,
//! and whether overdue waits are to be ended by resetting the device.

use crate::ffi;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::{prelude::*, time::msecs_to_jiffies, types::Opaque};

/// The waiter re-checks the count after queueing itself on the wait queue, and the signaller
/// bumps the count before waking the queue (whose lock orders the two), so a signal that comes
/// between the check and the sleep is never lost. Waits sleep in `TASK_IDLE`: a signal to the
/// waiting task (rmmod's) does not end them, only the device's answer or the slice does.
///
/// A transfer waiting on this event is *overdue* once the device has not used its buffers for
/// `limit_ms`. An overdue transfer keeps waiting (its buffers may still be used by the device,
/// so they cannot be given back), unless the event is *abandoned*: then the transfer breaks and
/// resets the device, after which the device uses no buffer, and returns `ETIMEDOUT`.
#[pin_data]
pub(crate) struct AckEvent {
    /// Bumped by every signal.
    seq: AtomicU64,
    /// Where waiters sleep.
    #[pin]
    wq: Opaque<ffi::wait_queue_head>,
    limit_ms: u32,
    abandoned: AtomicBool,
    overdue: AtomicU32,
    /// Waits that went past the limit, since the event was made.
    past_limit: AtomicU64,
}

impl AckEvent {
    /// A new event; waits on it are overdue after `limit_ms` (at least 1).
    pub(crate) fn new(limit_ms: u32) -> impl PinInit<Self> {
        pin_init!(Self {
            seq: AtomicU64::new(0),
            // SAFETY: `slot` is valid, pinned memory for a wait queue head, initialised here
            // before any use.
            wq <- Opaque::ffi_init(|slot| unsafe { ffi::vballoon_init_waitqueue(slot) }),
            limit_ms: limit_ms.max(1),
            abandoned: AtomicBool::new(false),
            overdue: AtomicU32::new(0),
            past_limit: AtomicU64::new(0),
        })
    }

    /// How long a wait lasts before it is overdue.
    pub(crate) fn limit_ms(&self) -> u32 {
        self.limit_ms
    }

    /// Whether a transfer is waiting past the limit right now.
    pub(crate) fn overdue(&self) -> bool {
        self.overdue.load(Ordering::Acquire) > 0
    }

    /// From now on, a transfer that is (or becomes) overdue resets the device and returns
    /// `ETIMEDOUT` instead of waiting on: every wait ends within the limit. For unbind.
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.signal();
    }

    /// Undoes [`AckEvent::abandon`]: overdue transfers wait on again. For a suspend, whose
    /// teardown is bounded by `abandon`, once the device has been reset and set up afresh.
    pub(crate) fn stop_abandoning(&self) {
        self.abandoned.store(false, Ordering::Release);
    }

    pub(super) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// How many waits have gone past the limit so far.
    pub(crate) fn waits_past_limit(&self) -> u64 {
        self.past_limit.load(Ordering::Relaxed)
    }

    pub(super) fn enter_overdue(&self) {
        self.past_limit.fetch_add(1, Ordering::Relaxed);
        self.overdue.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn leave_overdue(&self) {
        self.overdue.fetch_sub(1, Ordering::AcqRel);
    }

    /// Signals the event. Safe in hard-IRQ context (an atomic and a wake-up).
    pub(crate) fn signal(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        // SAFETY: `wq` was initialised by `new` and lives as long as `self`.
        unsafe { ffi::vballoon_wake_all(self.wq.get()) };
    }

    /// The event's current count, to pass to [`AckEvent::wait_changed`].
    pub(super) fn current(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Sleeps until the event has been signalled since `seen` was read, at most `slice_ms`.
    pub(super) fn wait_changed(&self, seen: u64, slice_ms: u32) {
        // SAFETY: `wq` was initialised by `new`; `seq` is a live `u64` the C side only reads
        // (with `READ_ONCE`, as the atomic's own loads do); both outlive the call.
        unsafe {
            ffi::vballoon_wait_seq_changed(
                self.wq.get(),
                self.seq.as_ptr(),
                seen,
                msecs_to_jiffies(slice_ms),
            )
        };
    }
}

// SAFETY: The wait queue head is only used through the kernel's wait-queue functions, which
// serialise on its own IRQ-safe lock, from any thread and context; the rest is atomics.
unsafe impl Send for AckEvent {}
// SAFETY: As for `Send`: shared use goes through the wait queue's lock or atomics.
unsafe impl Sync for AckEvent {}
