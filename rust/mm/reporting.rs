// SPDX-License-Identifier: GPL-2.0

//! Free page reporting: the kernel hands a device batches of free pages to report to the host
//! (`page_reporting_register`).

use super::field::{owner_of, HasField};
use crate::{ffi, virtio::Segments};
use core::marker::PhantomData;
use kernel::{error::from_result, new_mutex, prelude::*, sync::Mutex, types::Opaque};

/// The owner of a [`PageReporting`]; called from the reporting work on any CPU, hence `Sync`.
pub(crate) trait Reporter: Sync {
    /// Report `pages` (free pages the kernel holds back until this returns) to the host and
    /// wait until the host has taken them. Process context (the reporting work). An error
    /// gives the pages back to the allocator unreported.
    fn report(&self, pages: &mut Segments<'_>) -> Result;
}

/// Free page reporting of its owner `T` (`impl_has_field!(T, field: PageReporting<T>)`).
///
/// # Invariants
///
/// `info` is registered with the kernel exactly while `registered` holds true (the mutex is held
/// across each registration and unregistration, so the two never race); its `report` is the C
/// trampoline, which reaches `call` (this wrapper's own entry) through `info`'s address. The
/// wrapper is pinned inside a `T` (the contract of [`PageReporting::new`]).
#[repr(C)]
#[pin_data(PinnedDrop)]
pub(crate) struct PageReporting<T> {
    #[pin]
    info: Opaque<ffi::page_reporting_dev_info>,
    call: ReportFn,
    #[pin]
    registered: Mutex<bool>,
    _t: PhantomData<T>,
}

type ReportFn = unsafe fn(*const ffi::page_reporting_dev_info, Segments<'_>) -> Result;

// SAFETY: The C structure is only touched by page reporting's own locking and work item.
unsafe impl<T> Send for PageReporting<T> {}
// SAFETY: As above.
unsafe impl<T> Sync for PageReporting<T> {}

impl<T: Reporter + HasField<PageReporting<T>>> PageReporting<T> {
    /// Reporting, not registered yet.
    ///
    /// # Safety
    ///
    /// The wrapper is initialised in place as the `HasField` field of a `T`, and that `T` calls
    /// [`PageReporting::unregister`] before it drops any field that [`Reporter::report`] uses.
    pub(crate) unsafe fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            info <- Opaque::ffi_init(|info: *mut ffi::page_reporting_dev_info| {
                // SAFETY: `info` is valid for writes.
                unsafe { info.write(ffi::page_reporting_dev_info::default()) };
            }),
            call: Self::call,
            registered <- new_mutex!(false, "vballoon::PageReporting::registered"),
            _t: PhantomData,
        })
    }

    /// Starts reporting, at most `capacity` pages per report, at the kernel's reporting order
    /// (`page_reporting.page_reporting_order`, else the pageblock order, as the C driver).
    /// `Err(errno)` when the kernel refuses (`EBUSY`: another device reports already).
    pub(crate) fn register(&self, capacity: usize) -> core::result::Result<(), i32> {
        let cap = u32::try_from(capacity).map_err(|_| EINVAL.to_errno())?;
        let mut registered = self.registered.lock();
        if *registered {
            return Ok(());
        }
        // SAFETY: `info` is initialised and pinned inside its owner (the contract of `new`);
        // it stays registered until `unregister`, which the owner calls before it goes.
        let r = unsafe { ffi::vballoon_reporting_register(self.info.get(), cap) };
        if r != 0 {
            return Err(r);
        }
        *registered = true;
        Ok(())
    }

    /// # Safety
    ///
    /// `info` is the `info` of a live `PageReporting<T>` inside a live `T`.
    unsafe fn call(info: *const ffi::page_reporting_dev_info, mut pages: Segments<'_>) -> Result {
        // SAFETY: `info` is the first field of a `#[repr(C)]` `PageReporting<T>`, the field of
        // a live `T` (function requirement; the contract of `new`: the owner unregisters before
        // any field the callback uses goes away).
        let owner: &T = unsafe { owner_of(info.cast::<PageReporting<T>>()) };
        owner.report(&mut pages)
    }
}

impl<T> PageReporting<T> {
    /// Stops reporting; when this returns no report is running. Idempotent.
    pub(crate) fn unregister(&self) {
        let mut registered = self.registered.lock();
        if *registered {
            // SAFETY: Registered (invariant); unregistering waits for the reporting work.
            unsafe { ffi::page_reporting_unregister(self.info.get()) };
            *registered = false;
        }
    }
}

#[pinned_drop]
impl<T> PinnedDrop for PageReporting<T> {
    fn drop(self: Pin<&mut Self>) {
        self.unregister();
    }
}

/// Reached from C's `vballoon_page_report`, the `report` callback: a direct call, so kernel
/// CFI never compares a Rust function's type with the C callback type.
///
/// # Safety
///
/// `info` belongs to a registered [`PageReporting`]; `sg` holds `nents` valid entries for the
/// call.
#[no_mangle]
unsafe extern "C" fn vballoon_rust_page_report(
    info: *mut ffi::page_reporting_dev_info,
    sg: *mut ffi::scatterlist,
    nents: kernel::ffi::c_uint,
) -> kernel::ffi::c_int {
    let entry = info
        .cast::<u8>()
        .wrapping_add(core::mem::offset_of!(PageReporting<()>, call))
        .cast::<ReportFn>();
    // SAFETY: `info` belongs to a live `PageReporting` (only registered ones are called),
    // whose `call` field is at the offset computed above (the layout does not depend on `T`).
    let call = unsafe { *entry };
    // SAFETY: The kernel's list of `nents` free pages, ours until we return.
    let Some(pages) = (unsafe { Segments::from_raw(sg, nents) }) else {
        return EINVAL.to_errno();
    };
    // SAFETY: `call` is that wrapper's own entry, given its own `info`.
    from_result(|| unsafe { call(info, pages) }.map(|()| 0))
}
