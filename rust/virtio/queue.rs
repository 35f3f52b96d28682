// SPDX-License-Identifier: GPL-2.0

//! Virtqueues: created once per binding through a [`VqFactory`] (only `probe` and `restore`
//! get one, and creating consumes it), owned as a [`VqSet`] that the binding revokes at unbind
//! or freeze, and used one transfer at a time through [`Virtqueue`] handles.
//!
//! A handle that outlives its binding (a driver that kept one past `remove`) cannot touch the
//! deleted queue: every use takes the queue's slot lock and finds it empty (`ENODEV`).

use super::{
    buffer::{contains, DeviceReadable},
    device::Device,
    event::AckEvent,
    segments::Segments,
    Adapter, Driver,
};
use crate::ffi;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    device::Core,
    error::to_result,
    new_mutex,
    prelude::*,
    sync::{aref::ARef, Arc, Mutex},
};

/// What a queue's slot holds while the binding lives. Its mutex is taken inside reclaim (the
/// balloon's shrinker reaps the free page queue), so nothing that can enter reclaim runs with
/// it held: ring adds are `GFP_NOWAIT`, parking room is allocated outside it.
struct Slot {
    /// The queue's name, for log lines.
    name: &'static CStr,
    /// `None` once the set is revoked.
    vq: Option<NonNull<ffi::virtqueue>>,
    /// Buffers the device may still use whose owners went away: freed after the reset.
    parked: KVec<KBox<dyn Send>>,
}

// SAFETY: The queue pointer is only used under the slot's mutex; the parked buffer is `Send`.
unsafe impl Send for Slot {}

/// One binding's set of virtqueues.
///
/// # Invariants
///
/// Every `Some` queue in `slots` is a live queue created for `dev` by the factory that made
/// this set; the set is the only one of its device (a factory makes one, and a binding gets
/// one factory per probe or restore). Once a slot is `None` it stays `None`.
pub(crate) struct VqSet {
    dev: ARef<Device>,
    slots: KVec<Pin<KBox<Mutex<Slot>>>>,
}

impl VqSet {
    /// Makes the device let go of every buffer, then deletes the queues. Handles keep working
    /// only as far as returning `ENODEV`. Idempotent.
    ///
    /// Call with the device already marked broken when a driver might still wait on it.
    pub(super) fn revoke(&self) {
        let mut live = false;
        for slot in &self.slots {
            live |= slot.lock().vq.take().is_some();
        }
        if live {
            self.dev.reset();
            // SAFETY: Every slot is empty, so no handle can reach the queues, and after the
            // reset the device uses none of their buffers and no callback is running.
            unsafe { ffi::vballoon_del_vqs(self.dev.as_raw()) };
        }
        // The device is reset (now or at an earlier revoke): nothing reads these any more.
        // Cleared in place, so the reserved room stays: a buffer parked after this (its owner
        // dropped late) still finds room, and is freed when the set drops. (Dropping a parked
        // buffer takes no lock of ours.)
        for slot in &self.slots {
            slot.lock().parked.clear();
        }
    }
}

impl Drop for VqSet {
    fn drop(&mut self) {
        self.revoke();
    }
}

/// One queue to create: its name, and whether the driver hears of its used buffers.
#[derive(Clone, Copy)]
pub(crate) struct QueueSpec {
    name: &'static CStr,
    callback: bool,
}

impl QueueSpec {
    /// A queue whose used buffers reach `Driver::vq_callback`.
    pub(crate) const fn new(name: &'static CStr) -> Self {
        Self {
            name,
            callback: true,
        }
    }

    /// A queue without a callback (the driver polls it): the device sends no interrupt for
    /// it, as a C driver's `NULL` callback.
    pub(crate) const fn polled(name: &'static CStr) -> Self {
        Self {
            name,
            callback: false,
        }
    }
}

/// The one-time right to create a binding's queues, handed to `probe` and `restore`.
pub(crate) struct VqFactory<'a, T: Driver> {
    /// Only ever a `Device<Core>` (see `new`).
    dev: &'a Device,
    out: &'a mut Option<Arc<VqSet>>,
    _t: PhantomData<T>,
}

impl<'a, T: Driver> VqFactory<'a, T> {
    pub(super) fn new(dev: &'a Device<Core<'_>>, out: &'a mut Option<Arc<VqSet>>) -> Self {
        Self {
            dev,
            out,
            _t: PhantomData,
        }
    }

    /// Creates the device's virtqueues, in order, as `specs` say. Their callbacks (where they
    /// have one) reach `T::vq_callback` with the queue's position in `specs`. Consumes the
    /// factory: a binding has one queue set.
    pub(crate) fn create(self, specs: &[QueueSpec]) -> Result<KVec<Virtqueue>> {
        let n = specs.len();
        let mut info = KVec::<ffi::virtqueue_info>::with_capacity(n, GFP_KERNEL)?;
        let mut raw = KVec::<*mut ffi::virtqueue>::with_capacity(n, GFP_KERNEL)?;
        let mut slots = KVec::with_capacity(n, GFP_KERNEL)?;
        for spec in specs {
            let name = spec.name;
            crate::kext::push(
                &mut info,
                ffi::virtqueue_info {
                    name: name.as_char_ptr(),
                    callback: if spec.callback {
                        Some(Adapter::<T>::vq_callback)
                    } else {
                        None
                    },
                    ctx: false,
                },
                GFP_KERNEL,
            )?;
            crate::kext::push(&mut raw, core::ptr::null_mut(), GFP_KERNEL)?;
            crate::kext::push(
                &mut slots,
                KBox::pin_init(
                    new_mutex!(
                        Slot {
                            name,
                            vq: None,
                            parked: KVec::new()
                        },
                        "vballoon::virtio::vq_slot"
                    ),
                    GFP_KERNEL,
                )?,
                GFP_KERNEL,
            )?;
        }
        let nvqs = u32::try_from(n).map_err(|_| EINVAL)?;
        // SAFETY: `raw` and `info` have `n` valid entries; the device is valid and in probe or
        // restore, with no queue (this factory is the binding's only one).
        to_result(unsafe {
            ffi::vballoon_find_vqs(self.dev.as_raw(), nvqs, raw.as_mut_ptr(), info.as_mut_ptr())
        })?;
        // From here the set owns the queues: an error below drops it, which deletes them.
        let mut set = VqSet {
            dev: self.dev.into(),
            slots,
        };
        let mut ok = true;
        for (slot, vq) in set.slots.iter_mut().zip(raw.iter()) {
            // A null queue would be a transport bug; refuse the set rather than use it.
            let vq = NonNull::new(*vq);
            ok &= vq.is_some();
            slot.lock().vq = vq;
        }
        let set = Arc::new(set, GFP_KERNEL)?;
        if !ok {
            return Err(EINVAL);
        }
        let mut out = KVec::with_capacity(n, GFP_KERNEL)?;
        for index in 0..n {
            crate::kext::push(
                &mut out,
                Virtqueue {
                    set: set.clone(),
                    index,
                },
                GFP_KERNEL,
            )?;
        }
        *self.out = Some(set);
        Ok(out)
    }
}

/// One virtqueue of a [`VqSet`]. The slot lock makes its users take turns, as the virtio core
/// requires.
pub(crate) struct Virtqueue {
    set: Arc<VqSet>,
    index: usize,
}

/// What [`Virtqueue::stream`] asks of its caller.
pub(crate) enum Stream<'a, B> {
    /// Fill buffer `.0` (not yet posted); `false`: nothing more to send.
    Fill(usize, &'a mut B),
    /// The device has used buffer `.0`.
    Used(usize),
}

/// How a [`Virtqueue::transfer`] went.
pub(crate) struct Transferred {
    /// Buffers the device was given (and has returned, unless `result` is an error).
    pub(crate) posted: usize,
    /// `Ok` when every buffer was posted and returned.
    pub(crate) result: Result,
    /// Time spent blocked waiting for the device to use buffers, in ns.
    pub(crate) waited_ns: u64,
}

/// Longest a transfer sleeps between checks of the device (a broken device ends the wait).
const WAIT_SLICE_MS: u32 = 1000;

impl Virtqueue {
    fn slot(&self) -> Result<&Pin<KBox<Mutex<Slot>>>> {
        self.set.slots.get(self.index).ok_or(ENODEV)
    }

    /// Descriptors in the ring: buffers of one segment that can be outstanding at once.
    pub(crate) fn ring_size(&self) -> Result<usize> {
        let slot = self.slot()?.lock();
        let vq = slot.vq.ok_or(ENODEV)?;
        // SAFETY: `vq` is live while the slot holds it and we hold the slot.
        Ok(unsafe { ffi::virtqueue_get_vring_size(vq.as_ptr()) } as usize)
    }

    /// Posts the buffers of `bufs` as device-readable, up to the first empty one, notifying the
    /// device as each goes out, and waits until the device has used every posted buffer. The
    /// borrow keeps the buffers alive and unchanged until then.
    ///
    /// Buffers come only from `KBox` (kmalloc: the linear map the device's DMA needs), and the
    /// bytes a buffer names must lie inside it (`EINVAL` otherwise). Posting stops at the first
    /// error; what was posted is still waited for. `acked` must be signalled by the driver's
    /// callback for this queue. If the device is broken (marked by unbind, or by the
    /// transport), the device is reset before this returns `EIO`; if `acked` is abandoned and
    /// the device is past its limit, it is broken and reset before this returns `ETIMEDOUT`.
    pub(crate) fn transfer<B: DeviceReadable>(
        &self,
        bufs: &mut [KBox<B>],
        acked: &AckEvent,
    ) -> Transferred {
        // Every buffer as it is; a stream ends at the first empty one.
        self.stream(bufs, acked, |_| true)
    }

    /// Streams `bufs` to the device: for each buffer in turn, `on(Stream::Fill(i, buf))` fills
    /// it (returning `false` ends the stream), and it is posted and the device notified at
    /// once, so the device works on one buffer while the next is filled. Each time the device
    /// has used a buffer, `on(Stream::Used(i))` is called (in any order, as the device returns
    /// them; the return value is ignored), while later buffers are still being filled or used.
    /// Returns once every posted buffer is used, with the same guarantees and errors as
    /// [`Virtqueue::transfer`]; on an error, buffers never reported `Used` may or may not have
    /// been seen by the device, which is reset (or never got them) and uses none of them.
    ///
    /// `on` runs in process context with this queue's slot lock held: it must not use this
    /// queue. A filled buffer is never handed out again until the stream ends.
    ///
    /// The queue's callback is off while the stream runs: the stream takes used buffers back
    /// itself as it posts, and turns the callback on only to sleep (one interrupt per sleep,
    /// not one per buffer, on a device that honours suppression). It is on again when this
    /// returns, unless the device was reset.
    pub(crate) fn stream<B: DeviceReadable>(
        &self,
        bufs: &mut [KBox<B>],
        acked: &AckEvent,
        mut on: impl FnMut(Stream<'_, B>) -> bool,
    ) -> Transferred {
        let Ok(slot) = self.slot() else {
            return Transferred {
                posted: 0,
                result: Err(ENODEV),
                waited_ns: 0,
            };
        };
        let guard = slot.lock();
        let Some(vq) = guard.vq else {
            return Transferred {
                posted: 0,
                result: Err(ENODEV),
                waited_ns: 0,
            };
        };
        // SAFETY: `vq` is live and ours (we hold the slot lock).
        unsafe { ffi::virtqueue_disable_cb(vq.as_ptr()) };
        // Each buffer's token is the address of its bytes (see `vballoon_add_outbuf`).
        let index_of = |bufs: &[KBox<B>], token: usize| {
            bufs.iter()
                .position(|b| b.bytes().as_ptr() as usize == token)
        };
        let mut posted = 0usize;
        let mut left = 0usize;
        let mut result = Ok(());
        while let Some(buf) = bufs.get_mut(posted) {
            if !on(Stream::Fill(posted, &mut **buf)) {
                break;
            }
            let bytes = buf.bytes();
            if bytes.is_empty() {
                break;
            }
            if !contains(&**buf, bytes) {
                result = Err(EINVAL);
                break;
            }
            let Ok(len) = u32::try_from(bytes.len()) else {
                result = Err(EINVAL);
                break;
            };
            // SAFETY: `vq` is live and ours (slot lock); `bytes` is kmalloc memory inside the
            // mutably borrowed `KBox`, which is never handed out again nor written until the
            // device has used it (below) or been reset.
            let r = to_result(unsafe {
                ffi::vballoon_add_outbuf(vq.as_ptr(), bytes.as_ptr().cast_mut().cast(), len)
            });
            if let Err(e) = r {
                result = Err(e);
                break;
            }
            posted = posted.saturating_add(1);
            left = left.saturating_add(1);
            // SAFETY: `vq` is live and ours.
            unsafe { ffi::virtqueue_kick(vq.as_ptr()) };
            // Take back what the device has finished meanwhile, without waiting.
            loop {
                let mut used_len = 0u32;
                // SAFETY: `vq` is live and ours.
                let token = unsafe { ffi::virtqueue_get_buf(vq.as_ptr(), &mut used_len) };
                if token.is_null() {
                    break;
                }
                left = left.saturating_sub(1);
                if let Some(i) = index_of(bufs, token as usize) {
                    on(Stream::Used(i));
                }
            }
        }
        let mut waited_ns = 0u64;
        let mut reset = false;
        if left > 0 {
            let mut used = |token: usize| {
                if let Some(i) = index_of(bufs, token) {
                    on(Stream::Used(i));
                }
            };
            let start = crate::kext::monotonic_ns();
            if let Err(e) = self.wait_used(vq, guard.name, left, acked, true, &mut used) {
                // `wait_used` fails only after resetting the device.
                reset = true;
                result = Err(e);
            }
            waited_ns = crate::kext::monotonic_ns().saturating_sub(start);
        }
        if !reset {
            // Every posted buffer is used, so there is nothing pending to report.
            // SAFETY: `vq` is live and ours (we still hold the slot lock).
            let _ = unsafe { ffi::virtqueue_enable_cb(vq.as_ptr()) };
        }
        drop(guard);
        Transferred {
            posted,
            result,
            waited_ns,
        }
    }

    /// Posts `segs` as one device-writable buffer of several segments, notifies the device and
    /// waits until the device has used it; the borrow keeps the memory the device's until
    /// then. Never allocates (indirect descriptors are the driver's to refuse). If the device
    /// is broken, it is reset before this returns `EIO`.
    pub(crate) fn transfer_writable(&self, segs: &mut Segments<'_>, acked: &AckEvent) -> Result {
        let slot = self.slot()?;
        let guard = slot.lock();
        let vq = guard.vq.ok_or(ENODEV)?;
        let (sg, nents) = segs.raw();
        // SAFETY: `vq` is live and ours (slot lock); `sg` has `nents` entries of memory that is
        // ours until the device returns the buffer, which we wait for below.
        to_result(unsafe { ffi::vballoon_add_inbuf_sg(vq.as_ptr(), sg, nents) })?;
        // SAFETY: `vq` is live and ours.
        unsafe { ffi::virtqueue_kick(vq.as_ptr()) };
        self.wait_used(vq, guard.name, 1, acked, false, &mut |_| {})
    }

    /// Waits until the device has used `left` more buffers of `vq` (this queue, whose slot
    /// lock the caller holds). Past `acked`'s limit the wait is overdue: one line says so and
    /// the wait goes on (the buffers are the device's until it uses them), unless `acked` is
    /// abandoned, which breaks and resets the device and returns `ETIMEDOUT`. A broken device
    /// is reset and gives `EIO`. After either reset the device uses none of the buffers.
    ///
    /// `quiet`: the caller turned the queue's callback off. It is turned on only to sleep and
    /// off again on waking, and it is off when this returns `Ok`.
    fn wait_used(
        &self,
        vq: NonNull<ffi::virtqueue>,
        name: &'static CStr,
        mut left: usize,
        acked: &AckEvent,
        quiet: bool,
        on_used: &mut dyn FnMut(usize),
    ) -> Result {
        let start = crate::kext::monotonic_ms();
        let elapsed = || crate::kext::monotonic_ms().saturating_sub(start);
        let limit = u64::from(acked.limit_ms());
        let mut overdue = false;
        let result = loop {
            // Read the event before looking at the ring: a callback after the look changes
            // it, so the wait below cannot miss it.
            let seen = acked.current();
            let mut len = 0u32;
            // SAFETY: `vq` is live and ours (the caller holds the slot lock).
            let token = unsafe { ffi::virtqueue_get_buf(vq.as_ptr(), &mut len) };
            if !token.is_null() {
                left = left.saturating_sub(1);
                on_used(token as usize);
                if left == 0 {
                    break Ok(());
                }
                continue;
            }
            // SAFETY: `vq` is live.
            if unsafe { ffi::virtqueue_is_broken(vq.as_ptr()) } {
                // The device will never return the buffers: reset it so it lets go of them
                // before the caller's borrow ends. Every queue is marked broken first, so no
                // other user kicks the reset device and every other waiter (woken here) ends
                // its wait with `EIO` too instead of waiting out its limit.
                self.set.dev.mark_broken();
                self.set.dev.reset();
                acked.signal();
                break Err(EIO);
            }
            if quiet {
                // SAFETY: `vq` is live and ours (the caller holds the slot lock).
                let armed = unsafe { ffi::virtqueue_enable_cb(vq.as_ptr()) };
                if !armed {
                    // A buffer was used since the look: take it instead of sleeping.
                    // SAFETY: as above.
                    unsafe { ffi::virtqueue_disable_cb(vq.as_ptr()) };
                    continue;
                }
            }
            let waited = elapsed();
            if waited < limit {
                let rest = u32::try_from(limit.saturating_sub(waited)).unwrap_or(WAIT_SLICE_MS);
                acked.wait_changed(seen, rest.clamp(1, WAIT_SLICE_MS));
                if quiet {
                    // SAFETY: `vq` is live and ours (the caller holds the slot lock).
                    unsafe { ffi::virtqueue_disable_cb(vq.as_ptr()) };
                }
                continue;
            }
            if !overdue {
                overdue = true;
                acked.enter_overdue();
                dev_warn!(
                    self.set.dev.as_dev(),
                    "{} queue: the device has not used {} buffer(s) in {} ms; they stay the device's until it does (unbinding resets it)\n",
                    name,
                    left,
                    waited
                );
            }
            if acked.is_abandoned() {
                // Unbinding: end the wait. Broken first, so no other user kicks a reset device;
                // other waiters on this event see the broken queue at once.
                self.set.dev.mark_broken();
                self.set.dev.reset();
                acked.signal();
                break Err(ETIMEDOUT);
            }
            acked.wait_changed(seen, WAIT_SLICE_MS);
            if quiet {
                // SAFETY: `vq` is live and ours (the caller holds the slot lock).
                unsafe { ffi::virtqueue_disable_cb(vq.as_ptr()) };
            }
        };
        if overdue {
            acked.leave_overdue();
            if result.is_ok() {
                dev_info!(
                    self.set.dev.as_dev(),
                    "{} queue: the device used its buffers after {} ms; going on\n",
                    name,
                    elapsed()
                );
            }
        }
        result
    }

    /// Posts `buf` as one device-readable buffer and notifies the device, without waiting.
    /// The caller keeps the buffer alive and unchanged until [`Virtqueue::take_used`] says
    /// the device returned it, or parks it with [`Virtqueue::park`].
    pub(super) fn post_owned<B: DeviceReadable>(&self, buf: &KBox<B>) -> Result {
        self.add_readable(&**buf)?;
        self.kick();
        Ok(())
    }

    /// Whether the device has returned a buffer posted with [`Virtqueue::post_owned`].
    pub(super) fn take_used(&self) -> bool {
        self.get_used().is_some()
    }

    /// Makes room for `n` more buffers to be parked on this queue, so [`Virtqueue::park`]
    /// never allocates (it may be called in any context).
    ///
    /// The room is allocated with the slot's lock released: the shrinker takes slot locks
    /// inside reclaim (it reaps the free page queue), so nothing may enter reclaim holding one.
    pub(super) fn reserve_parking(&self, n: usize) -> Result {
        let slot = self.slot()?;
        loop {
            let want = {
                let s = slot.lock();
                if s.parked.capacity().saturating_sub(s.parked.len()) >= n {
                    return Ok(());
                }
                s.parked.len().checked_add(n).ok_or(ENOMEM)?
            };
            let mut room = KVec::with_capacity(want, GFP_KERNEL)?;
            let mut s = slot.lock();
            if room.capacity().saturating_sub(s.parked.len()) < n {
                // More was parked meanwhile: size it again.
                continue;
            }
            while let Some(buf) = s.parked.pop() {
                if let Err(e) = room.push_within_capacity(buf) {
                    // Unreachable: `room` holds at least `len` more. Leak, never free a
                    // buffer the device may still use.
                    core::mem::forget(e.0);
                }
            }
            let old = core::mem::replace(&mut s.parked, room);
            drop(s);
            drop(old);
            return Ok(());
        }
    }

    /// Hands a posted buffer to the set, which frees it once the device is reset (at revoke,
    /// or when the set drops). Room was reserved by [`Virtqueue::reserve_parking`]; without
    /// room the buffer is leaked rather than freed while the device may still use it.
    pub(super) fn park(&self, buf: KBox<dyn Send>) {
        match self.slot() {
            Ok(slot) => {
                if let Err(e) = slot.lock().parked.push_within_capacity(buf) {
                    // Unreachable with the room reserved; leak rather than free.
                    core::mem::forget(e.0);
                }
            }
            // Unreachable: `index` is within the set. Leak rather than free too early.
            Err(_) => core::mem::forget(buf),
        }
    }

    /// Adds `buf` as one device-readable buffer (token: its bytes), without notifying.
    pub(super) fn add_readable<B: DeviceReadable>(&self, buf: &B) -> Result {
        let bytes = buf.bytes();
        if bytes.is_empty() || !contains(buf, bytes) {
            return Err(EINVAL);
        }
        let len = u32::try_from(bytes.len()).map_err(|_| EINVAL)?;
        let slot = self.slot()?.lock();
        let vq = slot.vq.ok_or(ENODEV)?;
        // SAFETY: `vq` is live and ours; the caller keeps the buffer alive and unchanged until
        // the device returns it or is reset (it owns the box, or parks it).
        to_result(unsafe {
            ffi::vballoon_add_outbuf(vq.as_ptr(), bytes.as_ptr().cast_mut().cast(), len)
        })
    }

    /// Adds `segs` as one device-writable buffer with `token`, without notifying.
    pub(super) fn add_writable(&self, segs: &mut Segments<'_>, token: usize) -> Result {
        let slot = self.slot()?.lock();
        let vq = slot.vq.ok_or(ENODEV)?;
        let (sg, nents) = segs.raw();
        // SAFETY: `vq` is live and ours; the memory of `segs` is owned by the caller's buffer,
        // kept alive until the device returns it or is reset. The token is only compared.
        to_result(unsafe {
            ffi::vballoon_add_inbuf_token(vq.as_ptr(), sg, nents, token as *mut kernel::ffi::c_void)
        })
    }

    /// Notifies the device.
    pub(super) fn kick(&self) {
        let Ok(slot) = self.slot() else { return };
        let slot = slot.lock();
        if let Some(vq) = slot.vq {
            // SAFETY: `vq` is live and ours.
            unsafe { ffi::virtqueue_kick(vq.as_ptr()) };
        }
    }

    /// The token of a buffer the device has returned, if any.
    pub(super) fn get_used(&self) -> Option<usize> {
        let slot = self.slot().ok()?.lock();
        let vq = slot.vq?;
        let mut len = 0u32;
        // SAFETY: `vq` is live and ours.
        let token = unsafe { ffi::virtqueue_get_buf(vq.as_ptr(), &mut len) };
        (!token.is_null()).then_some(token as usize)
    }
}
