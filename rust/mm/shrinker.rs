// SPDX-License-Identifier: GPL-2.0

//! A shrinker: memory reclaim asks the owner to give back memory it holds but does not need.

use super::field::{owner_of, HasField};
use crate::ffi;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{new_mutex, prelude::*, sync::Mutex};

/// The owner of a [`Shrinker`]; called from reclaim on any CPU, hence `Sync`.
pub(crate) trait Shrink: Sync {
    /// Pages the owner could give back now.
    fn count(&self) -> u64;
    /// Give back about `nr_to_scan` pages; returns how many went back. Runs in reclaim, in any
    /// task that allocates: never allocate, never wait for a lock held across an allocation.
    fn scan(&self, nr_to_scan: u64) -> u64;
}

type CountFn = unsafe fn(*const ()) -> u64;
type ScanFn = unsafe fn(*const (), u64) -> u64;

/// A shrinker of its owner `T` (`impl_has_field!(T, field: Shrinker<T>)`).
///
/// # Invariants
///
/// `raw` holds `None`, or a shrinker registered by `register` whose private data is this
/// wrapper's address and whose callbacks (C trampolines) reach `count`/`scan` through it; the
/// mutex is held across each registration and unregistration, so two never race. The wrapper
/// is pinned inside a `T` (the contract of [`Shrinker::new`]).
#[repr(C)]
#[pin_data(PinnedDrop)]
pub(crate) struct Shrinker<T> {
    count: CountFn,
    scan: ScanFn,
    #[pin]
    raw: Mutex<Option<RawShrinker>>,
    _t: PhantomData<T>,
}

/// A registered C shrinker.
struct RawShrinker(NonNull<ffi::shrinker>);

// SAFETY: The C shrinker may be freed from any thread.
unsafe impl Send for RawShrinker {}

// SAFETY: The C shrinker is used by the shrinker core's own synchronisation; the wrapper's
// own state is under its mutex.
unsafe impl<T> Send for Shrinker<T> {}
// SAFETY: As above.
unsafe impl<T> Sync for Shrinker<T> {}

impl<T: Shrink + HasField<Shrinker<T>>> Shrinker<T> {
    /// A shrinker, not registered yet.
    ///
    /// # Safety
    ///
    /// The shrinker is initialised in place as the `HasField` field of a `T`, and that `T`
    /// calls [`Shrinker::unregister`] before it drops any field that [`Shrink`]'s methods use.
    pub(crate) unsafe fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            count: Self::count_entry,
            scan: Self::scan_entry,
            raw <- new_mutex!(None, "vballoon::Shrinker::raw"),
            _t: PhantomData,
        })
    }

    /// Starts taking reclaim's requests. A second call does nothing.
    pub(crate) fn register(&self, name: &'static CStr) -> Result {
        let mut raw = self.raw.lock();
        if raw.is_some() {
            return Ok(());
        }
        let me = core::ptr::from_ref(self)
            .cast_mut()
            .cast::<kernel::ffi::c_void>();
        // SAFETY: `me` stays valid while registered: the wrapper is pinned inside its owner,
        // which unregisters (freeing the shrinker) before it goes (the contract of `new`).
        let r = unsafe { ffi::vballoon_shrinker_register(me, name.as_char_ptr()) };
        *raw = Some(RawShrinker(NonNull::new(r).ok_or(ENOMEM)?));
        Ok(())
    }

    /// # Safety
    ///
    /// `me` is the address of a live `Shrinker<T>` inside a live `T`.
    unsafe fn count_entry(me: *const ()) -> u64 {
        // SAFETY: Function requirement; the shrinker is freed before the owner goes (the
        // contract of `new`).
        let owner: &T = unsafe { owner_of(me.cast::<Shrinker<T>>()) };
        owner.count()
    }

    /// # Safety
    ///
    /// As for `count_entry`.
    unsafe fn scan_entry(me: *const (), nr: u64) -> u64 {
        // SAFETY: Function requirement; the shrinker is freed before the owner goes.
        let owner: &T = unsafe { owner_of(me.cast::<Shrinker<T>>()) };
        owner.scan(nr)
    }
}

impl<T> Shrinker<T> {
    /// Stops the requests; when this returns no callback runs. Idempotent.
    pub(crate) fn unregister(&self) {
        let mut raw = self.raw.lock();
        if let Some(r) = raw.take() {
            // SAFETY: `r` was registered by `register` and is freed once (taken out under the
            // lock); `shrinker_free` waits out running callbacks.
            unsafe { ffi::shrinker_free(r.0.as_ptr()) };
        }
    }
}

#[pinned_drop]
impl<T> PinnedDrop for Shrinker<T> {
    fn drop(self: Pin<&mut Self>) {
        self.unregister();
    }
}

/// Reached from C's `count_objects` trampoline (a direct call: kernel CFI).
///
/// # Safety
///
/// `me` is the private data of a registered shrinker: a live [`Shrinker`].
#[no_mangle]
unsafe extern "C" fn vballoon_rust_shrink_count(
    me: *mut kernel::ffi::c_void,
) -> kernel::ffi::c_ulong {
    // SAFETY: `me` is a live `Shrinker`; `count` is its first field whatever `T` (`repr(C)`).
    let count = unsafe { *me.cast::<CountFn>() };
    // SAFETY: `count` is that shrinker's own entry, given its own address.
    unsafe { count(me.cast()) as kernel::ffi::c_ulong }
}

/// Reached from C's `scan_objects` trampoline (a direct call: kernel CFI).
///
/// # Safety
///
/// As for [`vballoon_rust_shrink_count`].
#[no_mangle]
unsafe extern "C" fn vballoon_rust_shrink_scan(
    me: *mut kernel::ffi::c_void,
    nr: kernel::ffi::c_ulong,
) -> kernel::ffi::c_ulong {
    let entry = me
        .cast::<u8>()
        .wrapping_add(core::mem::offset_of!(Shrinker<()>, scan))
        .cast::<ScanFn>();
    // SAFETY: `me` is a live `Shrinker` whose `scan` field is at that offset (`repr(C)`).
    let scan = unsafe { *entry };
    // SAFETY: `scan` is that shrinker's own entry, given its own address.
    unsafe { scan(me.cast(), nr as u64) as kernel::ffi::c_ulong }
}
