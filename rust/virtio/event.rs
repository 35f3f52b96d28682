// SPDX-License-Identifier: GPL-2.0

//! A wake-up signalled from a virtqueue callback (hard IRQ) and waited on in process context,
//! with the driver's patience for the device: how long a wait may last before it is overdue,
//! and whether overdue waits are to be ended by resetting the device.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::{
    new_condvar, new_spinlock_irq,
    prelude::*,
    sync::{CondVar, CondVarTimeoutResult, SpinLockIrq},
    time::{delay::fsleep, msecs_to_jiffies, Delta},
};

/// The waiter re-checks its condition under the event's IRQ-safe lock, so a signal that comes
/// between the check and the sleep is never lost.
///
/// A transfer waiting on this event is *overdue* once the device has not used its buffers for
/// `limit_ms`. An overdue transfer keeps waiting (its buffers may still be used by the device,
/// so they cannot be given back), unless the event is *abandoned*: then the transfer breaks and
/// resets the device, after which the device uses no buffer, and returns `ETIMEDOUT`.
#[pin_data]
pub(crate) struct AckEvent {
    #[pin]
    seq: SpinLockIrq<u64>,
    #[pin]
    cv: CondVar,
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
            seq <- new_spinlock_irq!(0, "vballoon::AckEvent::seq"),
            cv <- new_condvar!("vballoon::AckEvent::cv"),
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

    /// Signals the event. Safe in hard-IRQ context (an IRQ-safe spinlock and a wake-up).
    pub(crate) fn signal(&self) {
        let mut seq = self.seq.lock();
        *seq = seq.wrapping_add(1);
        drop(seq);
        self.cv.notify_all();
    }

    /// The event's current count, to pass to [`AckEvent::wait_changed`].
    pub(super) fn current(&self) -> u64 {
        *self.seq.lock()
    }

    /// Sleeps until the event has been signalled since `seen` was read, at most `slice_ms`.
    pub(super) fn wait_changed(&self, seen: u64, slice_ms: u32) {
        let mut g = self.seq.lock();
        while *g == seen {
            match self
                .cv
                .wait_interruptible_timeout(&mut g, msecs_to_jiffies(slice_ms))
            {
                CondVarTimeoutResult::Woken { .. } => {}
                CondVarTimeoutResult::Timeout => break,
                CondVarTimeoutResult::Signal { .. } => {
                    // A signal to the waiting task (rmmod) must not turn the wait into a busy
                    // loop; the host's answer is what ends it.
                    drop(g);
                    fsleep(Delta::from_millis(1));
                    break;
                }
            }
        }
    }
}
