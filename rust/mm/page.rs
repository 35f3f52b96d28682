// SPDX-License-Identifier: GPL-2.0

//! Balloon pages.

use crate::ffi;
use core::{marker::PhantomData, ptr::NonNull};

/// The guest's page shift (`PAGE_SHIFT`).
pub(crate) fn page_shift() -> u32 {
    // SAFETY: Reads a compile-time constant.
    unsafe { ffi::vballoon_page_shift() }
}

/// A page allocated for the balloon and owned by the driver: not on the balloon list.
/// Dropping it frees it to the page allocator.
///
/// # Invariants
///
/// `page` holds one reference the driver owns, from `balloon_page_alloc` or a dequeue.
pub(crate) struct BalloonPage {
    page: NonNull<ffi::page>,
}

// SAFETY: A page reference can be released from any thread.
unsafe impl Send for BalloonPage {}

impl BalloonPage {
    /// Allocates a movable page the way balloons must: no retries, no warning, no emergency
    /// reserves. `None` when memory is short; the caller backs off. May sleep.
    pub(crate) fn alloc() -> Option<Self> {
        // SAFETY: `balloon_page_alloc` has no preconditions.
        NonNull::new(unsafe { ffi::balloon_page_alloc() }).map(|page| Self { page })
    }

    /// The page's frame number in guest pages.
    pub(crate) fn pfn(&self) -> u64 {
        // SAFETY: The page is valid by the type invariant.
        unsafe { ffi::vballoon_page_to_pfn(self.page.as_ptr()) as u64 }
    }

    /// Gives up ownership to the C list (`balloon_page_enqueue` takes the reference).
    pub(super) fn into_raw(self) -> NonNull<ffi::page> {
        let p = self.page;
        core::mem::forget(self);
        p
    }

    /// # Safety
    ///
    /// `page` carries one reference that the caller gives to the new `BalloonPage`.
    pub(super) unsafe fn from_raw(page: NonNull<ffi::page>) -> Self {
        Self { page }
    }
}

impl Drop for BalloonPage {
    fn drop(&mut self) {
        // SAFETY: We own one reference (type invariant) and give it up here.
        unsafe { ffi::vballoon_put_page(self.page.as_ptr()) };
    }
}

/// A page the migration core is moving, borrowed for the duration of the callback.
pub(crate) struct PageRef<'a> {
    page: NonNull<ffi::page>,
    _life: PhantomData<&'a ffi::page>,
}

impl PageRef<'_> {
    /// # Safety
    ///
    /// `page` is valid for the lifetime the caller picks.
    pub(super) unsafe fn new(page: NonNull<ffi::page>) -> Self {
        Self {
            page,
            _life: PhantomData,
        }
    }

    /// The page's frame number in guest pages.
    pub(crate) fn pfn(&self) -> u64 {
        // SAFETY: The page is valid for the borrow.
        unsafe { ffi::vballoon_page_to_pfn(self.page.as_ptr()) as u64 }
    }
}
