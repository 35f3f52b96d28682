// SPDX-License-Identifier: GPL-2.0

//! The OOM notifier: the kernel asks registered parties to free memory before it kills a
//! process (`register_oom_notifier`).

use super::field::{owner_of, HasField};
use crate::ffi;
use core::marker::PhantomData;
use kernel::{error::to_result, new_mutex, prelude::*, sync::Mutex, types::Opaque};

/// The owner of an [`OomNotifier`]; called from any CPU, hence `Sync`.
pub(crate) trait OomHandler: Sync {
    /// The guest is out of memory: give back what can be given without allocating, and
    /// return how many guest pages went back to the allocator. Runs in the context of the
    /// task whose allocation failed, under the kernel's OOM lock: never allocate, and never
    /// wait for a lock that is held while allocating.
    fn out_of_memory(&self) -> u64;
}

/// An OOM notifier of its owner `T` (`impl_has_field!(T, field: OomNotifier<T>)`).
///
/// # Invariants
///
/// `nb` is registered with the OOM notifier chain exactly while `registered` holds true (the
/// mutex is held across each registration and unregistration, so the two never race); its
/// callback is the C trampoline, which reaches `call` (this notifier's own entry) through
/// `nb`'s address. The notifier is pinned inside a `T` (the contract of [`OomNotifier::new`]).
#[repr(C)]
#[pin_data(PinnedDrop)]
pub(crate) struct OomNotifier<T> {
    #[pin]
    nb: Opaque<ffi::notifier_block>,
    call: unsafe fn(*const ffi::notifier_block) -> u64,
    #[pin]
    registered: Mutex<bool>,
    _t: PhantomData<T>,
}

// SAFETY: The C notifier block is only touched by the notifier chain's own locking.
unsafe impl<T> Send for OomNotifier<T> {}
// SAFETY: As above.
unsafe impl<T> Sync for OomNotifier<T> {}

impl<T: OomHandler + HasField<OomNotifier<T>>> OomNotifier<T> {
    /// A notifier, not registered yet.
    ///
    /// # Safety
    ///
    /// The notifier is initialised in place as the `HasField` field of a `T`, and that `T`
    /// calls [`OomNotifier::unregister`] before it drops any field that
    /// [`OomHandler::out_of_memory`] uses.
    pub(crate) unsafe fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            nb <- Opaque::ffi_init(|nb: *mut ffi::notifier_block| {
                // SAFETY: `nb` is valid for writes.
                unsafe { nb.write(ffi::notifier_block::default()) };
            }),
            call: Self::call,
            registered <- new_mutex!(false, "vballoon::OomNotifier::registered"),
            _t: PhantomData,
        })
    }

    /// Starts delivering OOM notifications to the owner. Call once the owner is fully built;
    /// a second call does nothing.
    pub(crate) fn register(&self) -> Result {
        let mut registered = self.registered.lock();
        if *registered {
            return Ok(());
        }
        // SAFETY: `nb` is initialised and pinned inside its owner (the contract of `new`); it
        // stays registered until `unregister`, which the owner calls before it goes.
        to_result(unsafe { ffi::vballoon_oom_register(self.nb.get()) })?;
        *registered = true;
        Ok(())
    }

    /// # Safety
    ///
    /// `nb` is the `nb` of a live `OomNotifier<T>` inside a live `T`.
    unsafe fn call(nb: *const ffi::notifier_block) -> u64 {
        // SAFETY: `nb` is the first field of a `#[repr(C)]` `OomNotifier<T>`, the field of a
        // live `T` (function requirement; the contract of `new`: the owner unregisters before
        // any field the callback uses goes away).
        let owner: &T = unsafe { owner_of(nb.cast::<OomNotifier<T>>()) };
        owner.out_of_memory()
    }
}

impl<T> OomNotifier<T> {
    /// Stops the notifications; when this returns no call is running. Idempotent.
    pub(crate) fn unregister(&self) {
        let mut registered = self.registered.lock();
        if *registered {
            // SAFETY: Registered (invariant); the chain's lock waits out running calls.
            unsafe { ffi::unregister_oom_notifier(self.nb.get()) };
            *registered = false;
        }
    }
}

#[pinned_drop]
impl<T> PinnedDrop for OomNotifier<T> {
    fn drop(self: Pin<&mut Self>) {
        self.unregister();
    }
}

/// Reached from C's `vballoon_oom_notify`, the notifier's callback: a direct call, so kernel
/// CFI never compares a Rust function's type with the C notifier type.
///
/// # Safety
///
/// `nb` is the notifier block of a registered [`OomNotifier`].
#[no_mangle]
unsafe extern "C" fn vballoon_rust_oom_notify(
    nb: *mut ffi::notifier_block,
) -> kernel::ffi::c_ulong {
    let entry = nb
        .cast::<u8>()
        .wrapping_add(core::mem::offset_of!(OomNotifier<()>, call))
        .cast::<unsafe fn(*const ffi::notifier_block) -> u64>();
    // SAFETY: `nb` belongs to a live `OomNotifier` (only registered ones are called), whose
    // `call` field is at the offset computed above (the layout does not depend on `T`).
    let call = unsafe { *entry };
    // SAFETY: `call` is that notifier's own entry, given its own block.
    let freed = unsafe { call(nb) };
    freed as kernel::ffi::c_ulong
}
