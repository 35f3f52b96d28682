// SPDX-License-Identifier: GPL-2.0

//! A wake-up signalled from a virtqueue callback (hard IRQ) and waited on in process context.

use kernel::{
    new_condvar, new_spinlock_irq,
    prelude::*,
    sync::{CondVar, CondVarTimeoutResult, SpinLockIrq},
    time::{delay::fsleep, msecs_to_jiffies, Delta},
};

/// The waiter re-checks its condition under the event's IRQ-safe lock, so a signal that comes
/// between the check and the sleep is never lost.
#[pin_data]
pub(crate) struct AckEvent {
    #[pin]
    seq: SpinLockIrq<u64>,
    #[pin]
    cv: CondVar,
}

impl AckEvent {
    /// A new event.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            seq <- new_spinlock_irq!(0, "vballoon::AckEvent::seq"),
            cv <- new_condvar!("vballoon::AckEvent::cv"),
        })
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
