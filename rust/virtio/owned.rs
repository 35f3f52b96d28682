// SPDX-License-Identifier: GPL-2.0

//! A queue that posts owned buffers without waiting and takes them back as the device returns
//! them: the free page hinting queue's model (command ids the device reads, blocks of free
//! memory it writes).

use super::{
    buffer::{DeviceReadable, OwnsSegments},
    queue::Virtqueue,
};
use kernel::prelude::*;

/// A buffer a [`OwnedQueue`] gave back.
pub(crate) enum Returned<R, W> {
    /// A device-readable buffer.
    Readable(KBox<R>),
    /// A device-writable buffer.
    Writable(KBox<W>),
}

impl<R, W> Returned<R, W> {
    fn holds(&self, token: usize) -> bool {
        let (start, size) = match self {
            Self::Readable(b) => (core::ptr::from_ref::<R>(b) as usize, size_of::<R>()),
            Self::Writable(b) => (core::ptr::from_ref::<W>(b) as usize, size_of::<W>()),
        };
        token >= start && token < start.saturating_add(size.max(1))
    }
}

/// Buffers posted on one queue, owned by it until the device returns them.
///
/// # Invariants
///
/// Every entry of `posted` is on the ring; its token lies inside its box. `posted` never has
/// more entries than the ring has descriptors (one each).
pub(crate) struct OwnedQueue<R: DeviceReadable, W: OwnsSegments> {
    vq: Virtqueue,
    ring: usize,
    posted: KVec<Returned<R, W>>,
}

impl<R: DeviceReadable, W: OwnsSegments> OwnedQueue<R, W> {
    /// Wraps `vq`, which must have no buffer outstanding (a fresh queue).
    pub(crate) fn new(vq: Virtqueue) -> Result<Self> {
        let ring = vq.ring_size()?;
        // Every posted buffer may have to be parked (dropping the queue): room for all of them
        // now, so parking never allocates.
        vq.reserve_parking(ring)?;
        Ok(Self {
            vq,
            ring,
            posted: KVec::with_capacity(ring, GFP_KERNEL)?,
        })
    }

    /// Descriptors in the ring.
    pub(crate) fn ring_size(&self) -> usize {
        self.ring
    }

    /// Buffers the device has not returned yet.
    pub(crate) fn outstanding(&self) -> usize {
        self.posted.len()
    }

    /// Posts `buf` for the device to read, without waiting.
    pub(crate) fn post_readable(&mut self, buf: KBox<R>) -> core::result::Result<(), KBox<R>> {
        if self.posted.len() >= self.ring {
            return Err(buf);
        }
        if self.vq.add_readable(&*buf).is_err() {
            return Err(buf);
        }
        // Room was checked against the ring, and `posted` has the ring's capacity.
        if let Err(e) = self.posted.push_within_capacity(Returned::Readable(buf)) {
            // Unreachable; never free a posted buffer: keep it until the device is reset.
            e.0.park_into(&self.vq);
        }
        self.vq.kick();
        Ok(())
    }

    /// Posts `buf` for the device to write, without waiting.
    pub(crate) fn post_writable(&mut self, mut buf: KBox<W>) -> core::result::Result<(), KBox<W>> {
        if self.posted.len() >= self.ring {
            return Err(buf);
        }
        let token = core::ptr::from_ref::<W>(&buf) as usize;
        let Some(mut segs) = buf.segments() else {
            return Err(buf);
        };
        if self.vq.add_writable(&mut segs, token).is_err() {
            return Err(buf);
        }
        if let Err(e) = self.posted.push_within_capacity(Returned::Writable(buf)) {
            e.0.park_into(&self.vq);
        }
        self.vq.kick();
        Ok(())
    }

    /// A buffer the device has returned, if any.
    pub(crate) fn reap(&mut self) -> Option<Returned<R, W>> {
        let token = self.vq.get_used()?;
        let i = self.posted.iter().position(|p| p.holds(token))?;
        self.posted.remove(i).ok()
    }
}

impl<R, W> Returned<R, W> {
    fn park_into(self, vq: &Virtqueue)
    where
        R: Send + 'static,
        W: Send + 'static,
    {
        match self {
            Self::Readable(b) => vq.park(b),
            Self::Writable(b) => vq.park(b),
        }
    }
}

impl<R: DeviceReadable, W: OwnsSegments> Drop for OwnedQueue<R, W> {
    fn drop(&mut self) {
        // The device may still use them: the queue set frees them after the reset.
        while let Some(b) = self.posted.pop() {
            b.park_into(&self.vq);
        }
    }
}
