// SPDX-License-Identifier: GPL-2.0

//! Virtqueues and the event their callbacks signal.

use super::Device;
use crate::ffi;
use core::ptr::NonNull;
use kernel::{
    error::to_result,
    new_condvar, new_spinlock_irq,
    prelude::*,
    sync::{aref::ARef, Arc, CondVar, CondVarTimeoutResult, SpinLockIrq},
    time::{delay::fsleep, msecs_to_jiffies, Delta},
};

/// Owns a device's set of queues: when the last [`Virtqueue`] of the set drops, the device is
/// reset (so it lets go of every buffer and callbacks have finished) and the queues deleted.
pub(super) struct VqOwner {
    dev: ARef<Device>,
}

impl VqOwner {
    pub(super) fn new(dev: ARef<Device>) -> Self {
        Self { dev }
    }
}

impl Drop for VqOwner {
    fn drop(&mut self) {
        self.dev.reset();
        // SAFETY: Every `Virtqueue` of the set is gone (each holds an `Arc<VqOwner>`), and the
        // device is reset, so nothing uses the queues any more.
        unsafe { ffi::vballoon_del_vqs(self.dev.as_raw()) };
    }
}

/// One virtqueue, usable by one thread at a time (`&mut self`), as the virtio core requires.
///
/// # Invariants
///
/// `vq` is a live queue of the set `owner` keeps alive.
pub(crate) struct Virtqueue {
    vq: NonNull<ffi::virtqueue>,
    owner: Arc<VqOwner>,
}

// SAFETY: A virtqueue may be used from any thread, one at a time (`&mut self` methods only).
unsafe impl Send for Virtqueue {}

/// Longest a transfer waits between checks of the device (a broken device ends the wait).
const WAIT_SLICE_MS: u32 = 1000;

impl Virtqueue {
    /// # Safety
    ///
    /// `vq` must be a queue created for `owner`'s device and not yet deleted.
    pub(super) unsafe fn new(vq: NonNull<ffi::virtqueue>, owner: Arc<VqOwner>) -> Self {
        Self { vq, owner }
    }

    /// Posts every buffer of `bufs` as a device-readable buffer, notifies the device once, and
    /// waits until the device has used all of them. Between posting and return the buffers are
    /// the device's: the borrow keeps them alive and unchanged.
    ///
    /// `acked` must be signalled by the driver's queue callback for this queue. If the queue is
    /// broken (the device will never answer), the device is reset before this returns `EIO`.
    pub(crate) fn transfer(&mut self, bufs: &[&[u8]], acked: &AckEvent) -> Result {
        let mut posted = 0usize;
        let mut result = Ok(());
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            // Never return early once something is posted: the borrow must outlive the device's
            // use of every posted buffer, so errors stop posting and the wait below still runs.
            let Ok(len) = u32::try_from(buf.len()) else {
                result = Err(EINVAL);
                break;
            };
            // SAFETY: `vq` is live; `buf` stays borrowed (alive, unaliased by writers) until
            // the device has returned it below; the helper uses it as the token too.
            let r = to_result(unsafe {
                ffi::vballoon_add_outbuf(self.vq.as_ptr(), buf.as_ptr().cast_mut().cast(), len)
            });
            if let Err(e) = r {
                result = Err(e);
                break;
            }
            posted = posted.saturating_add(1);
        }
        if posted == 0 {
            return result;
        }
        // SAFETY: `vq` is live.
        unsafe { ffi::virtqueue_kick(self.vq.as_ptr()) };
        while posted > 0 {
            // Read the event before looking at the ring: a callback after the look changes it,
            // so the wait below cannot miss it.
            let seen = acked.current();
            let mut len = 0u32;
            // SAFETY: `vq` is live; we are its only user (`&mut self`).
            let token = unsafe { ffi::virtqueue_get_buf(self.vq.as_ptr(), &mut len) };
            if !token.is_null() {
                posted = posted.saturating_sub(1);
                continue;
            }
            // SAFETY: `vq` is live.
            if unsafe { ffi::virtqueue_is_broken(self.vq.as_ptr()) } {
                // The device will never return the buffers. Reset it, so it lets go of them
                // before the borrow ends; the queue set is unusable from here on anyway.
                self.owner.dev.reset();
                return Err(EIO);
            }
            acked.wait_changed(seen);
        }
        result
    }
}

/// A buffer the device reads, that a [`BufferQueue`] can own while the device has it.
pub(crate) trait DeviceReadable: Send {
    /// The bytes the device reads. Must not change while the buffer is posted (it cannot: the
    /// queue owns the buffer then).
    fn bytes(&self) -> &[u8];
}

/// A virtqueue with at most one device-readable buffer outstanding, owned by the queue while the
/// device has it (the statistics queue's model: the device returns the buffer to ask for fresh
/// contents).
///
/// # Invariants
///
/// When `posted` is `Some`, its buffer is on the ring and the device may read it.
pub(crate) struct BufferQueue<B: DeviceReadable> {
    vq: Virtqueue,
    posted: Option<KBox<B>>,
}

impl<B: DeviceReadable> BufferQueue<B> {
    /// Wraps `vq`, which must have no buffer outstanding.
    pub(crate) fn new(vq: Virtqueue) -> Self {
        Self { vq, posted: None }
    }

    /// Posts `buf` and notifies the device. With a buffer already outstanding, or when the ring
    /// refuses it, the buffer comes back with the error.
    pub(crate) fn post(&mut self, buf: KBox<B>) -> core::result::Result<(), (Error, KBox<B>)> {
        if self.posted.is_some() {
            return Err((EBUSY, buf));
        }
        let bytes = buf.bytes();
        let Ok(len) = u32::try_from(bytes.len()) else {
            return Err((EINVAL, buf));
        };
        // SAFETY: `vq` is live; the buffer is heap memory that `self.posted` owns from here
        // until the device returns it (`take_used`) or is reset (`drop`).
        let r = to_result(unsafe {
            ffi::vballoon_add_outbuf(self.vq.vq.as_ptr(), bytes.as_ptr().cast_mut().cast(), len)
        });
        if let Err(e) = r {
            return Err((e, buf));
        }
        self.posted = Some(buf);
        // SAFETY: `vq` is live.
        unsafe { ffi::virtqueue_kick(self.vq.vq.as_ptr()) };
        Ok(())
    }

    /// The posted buffer, if the device has returned it.
    pub(crate) fn take_used(&mut self) -> Option<KBox<B>> {
        self.posted.as_ref()?;
        let mut len = 0u32;
        // SAFETY: `vq` is live; we are its only user (`&mut self`).
        let token = unsafe { ffi::virtqueue_get_buf(self.vq.vq.as_ptr(), &mut len) };
        if token.is_null() {
            None
        } else {
            self.posted.take()
        }
    }
}

impl<B: DeviceReadable> Drop for BufferQueue<B> {
    fn drop(&mut self) {
        if self.posted.is_some() {
            // The device may still read the buffer: reset it before the buffer is freed.
            // Queues are dropped at teardown only, when the device is going away anyway.
            self.vq.owner.dev.reset();
        }
    }
}

/// A wake-up signalled from a virtqueue callback (hard IRQ) and waited on in process context.
///
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

    /// Signals the event. Safe in hard-IRQ context.
    pub(crate) fn signal(&self) {
        let mut seq = self.seq.lock();
        *seq = seq.wrapping_add(1);
        drop(seq);
        self.cv.notify_all();
    }

    /// The event's current count, to pass to [`AckEvent::wait_changed`].
    fn current(&self) -> u64 {
        *self.seq.lock()
    }

    /// Sleeps until the event has been signalled since `seen` was read, at most one slice.
    fn wait_changed(&self, seen: u64) {
        let mut g = self.seq.lock();
        while *g == seen {
            match self
                .cv
                .wait_interruptible_timeout(&mut g, msecs_to_jiffies(WAIT_SLICE_MS))
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
