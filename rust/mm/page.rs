// SPDX-License-Identifier: GPL-2.0

//! Balloon pages.

use crate::ffi;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::prelude::*;

/// The guest's page shift (`PAGE_SHIFT`).
pub(crate) fn page_shift() -> u32 {
    // SAFETY: Reads a compile-time constant.
    unsafe { ffi::vballoon_page_shift() }
}

/// The largest block the page allocator hands out is `2^max_page_order()` pages.
pub(crate) fn max_page_order() -> u32 {
    // SAFETY: Reads a compile-time constant.
    unsafe { ffi::vballoon_max_page_order() }
}

/// A page allocated for the balloon and owned by the driver: not on the balloon list.
/// Dropping it frees it to the page allocator.
///
/// # Invariants
///
/// `page` holds one reference the driver owns, from `balloon_page_alloc`, a split block or a
/// dequeue, and is an order-0 page (never part of a compound page: blocks are split).
/// `repr(transparent)`: a `[BalloonPage]` is an array of `struct page *` for C.
#[repr(transparent)]
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

    /// Allocates a block of `2^order` contiguous pages if the allocator has one free right now
    /// (no reclaim, no compaction) and splits it into balloon pages, handed out in PFN order.
    /// `None` when there is no such block; the caller falls back to [`BalloonPage::alloc`].
    /// May sleep.
    pub(crate) fn alloc_block(order: u32) -> Option<SplitBlock> {
        let n = 1usize.checked_shl(order)?;
        // SAFETY: No preconditions; a bad order just fails.
        let head = NonNull::new(unsafe { ffi::vballoon_balloon_block_alloc(order) })?;
        Some(SplitBlock { head, next: 0, n })
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

/// Frees every page of `pages` with batched calls into the page allocator (instead of one
/// `put_page` each): runs of consecutive PFNs as contiguous ranges where the kernel can, the
/// rest in batches. `pages` is empty afterwards.
pub(crate) fn free_all(pages: &mut KVec<BalloonPage>) {
    // `release_pages` takes an `int` count: at most `i32::MAX` pages per call.
    for chunk in pages.chunks_mut(1 << 20) {
        // SAFETY: `BalloonPage` is a transparent `struct page *`; each holds one reference to
        // an order-0, non-compound page (type invariant), which the helper drops (it may
        // reorder the array); the handles are forgotten below without dropping again.
        unsafe {
            ffi::vballoon_release_pages(
                chunk.as_mut_ptr().cast::<*mut ffi::page>(),
                chunk.len() as i32,
            )
        };
    }
    for page in pages.drain_all() {
        let _ = page.into_raw();
    }
}

/// The pages of a split block not handed out yet; dropping it frees them.
///
/// # Invariants
///
/// `head` heads a split block of `n` pages; each page at offset `next..n` holds one reference
/// this value owns.
pub(crate) struct SplitBlock {
    head: NonNull<ffi::page>,
    next: usize,
    n: usize,
}

// SAFETY: Page references can be released from any thread.
unsafe impl Send for SplitBlock {}

impl Iterator for SplitBlock {
    type Item = BalloonPage;

    fn next(&mut self) -> Option<BalloonPage> {
        if self.next >= self.n {
            return None;
        }
        // SAFETY: `next < n`, so the page is within the block, and a block's `struct page`s
        // are one array: a buddy block never crosses a memory section (the kernel walks a
        // split block as `page + i` too). So the offset stays inside that array.
        let page = unsafe { self.head.add(self.next) };
        self.next = self.next.saturating_add(1);
        // Its reference moves to the handle.
        Some(BalloonPage { page })
    }
}

impl Drop for SplitBlock {
    fn drop(&mut self) {
        for page in self.by_ref() {
            drop(page);
        }
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
