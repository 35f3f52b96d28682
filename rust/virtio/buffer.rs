// SPDX-License-Identifier: GPL-2.0

//! Device-readable buffers, and a queue that owns its one outstanding buffer.

use super::{queue::Virtqueue, segments::Segments};
use kernel::prelude::*;

/// A buffer the device reads. Queues take it only inside a `KBox` (kmalloc memory, in the
/// linear map), and check that [`DeviceReadable::bytes`] lies inside the box: a buffer that
/// names stack, rodata or vmalloc bytes is refused with `EINVAL`.
pub(crate) trait DeviceReadable: Send + 'static {
    /// The bytes the device reads, inside `self`.
    fn bytes(&self) -> &[u8];
}

/// A buffer the device writes, owning the memory its segments describe: while a queue holds
/// it, that memory stays valid (a [`Segments`] can only be made by `unsafe` code that vouches
/// for exactly that, and it borrows `self`).
pub(crate) trait OwnsSegments: Send + 'static {
    /// The segments of memory the device may write.
    fn segments(&mut self) -> Option<Segments<'_>>;
}

/// Whether `bytes` lies inside `owner`'s own memory.
pub(super) fn contains<B>(owner: &B, bytes: &[u8]) -> bool {
    let start = core::ptr::from_ref(owner) as usize;
    let end = start.saturating_add(core::mem::size_of::<B>());
    let b = bytes.as_ptr() as usize;
    b >= start && b.saturating_add(bytes.len()) <= end
}

/// A virtqueue with at most one device-readable buffer outstanding, owned by the queue while
/// the device has it (the statistics queue's model: the device returns the buffer to ask for
/// fresh contents).
///
/// # Invariants
///
/// When `posted` is `Some`, its buffer is on the ring and the device may read it.
pub(crate) struct BufferQueue<B: DeviceReadable> {
    vq: Virtqueue,
    posted: Option<KBox<B>>,
}

impl<B: DeviceReadable> BufferQueue<B> {
    /// Wraps `vq`, which must have no buffer outstanding (a fresh queue). Reserves room to
    /// park the one buffer at drop, so dropping never allocates (nor leaks it).
    pub(crate) fn new(vq: Virtqueue) -> Result<Self> {
        vq.reserve_parking(1)?;
        Ok(Self { vq, posted: None })
    }

    /// Posts `buf` and notifies the device. With a buffer already outstanding, or when the ring
    /// refuses it, the buffer comes back with the error.
    pub(crate) fn post(&mut self, buf: KBox<B>) -> core::result::Result<(), (Error, KBox<B>)> {
        if self.posted.is_some() {
            return Err((EBUSY, buf));
        }
        match self.vq.post_owned(&buf) {
            Ok(()) => {
                self.posted = Some(buf);
                Ok(())
            }
            Err(e) => Err((e, buf)),
        }
    }

    /// The posted buffer, if the device has returned it.
    pub(crate) fn take_used(&mut self) -> Option<KBox<B>> {
        self.posted.as_ref()?;
        if self.vq.take_used() {
            self.posted.take()
        } else {
            None
        }
    }
}

impl<B: DeviceReadable> Drop for BufferQueue<B> {
    fn drop(&mut self) {
        if let Some(buf) = self.posted.take() {
            // The device may still read it: the queue set frees it after the device is reset.
            self.vq.park(buf);
        }
    }
}
