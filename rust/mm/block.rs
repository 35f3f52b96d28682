// SPDX-License-Identifier: GPL-2.0

//! Blocks of contiguous free pages, taken from the page allocator only if they are free right
//! now (no reclaim, no compaction, no reserves), for free page hinting.

use crate::{
    ffi,
    virtio::{OwnsSegments, Segments},
};
use core::ptr::NonNull;
use kernel::{prelude::*, types::Opaque};

/// An owned block of `2^order` pages, with the one-entry scatterlist that describes it to a
/// device. Freed on drop.
///
/// # Invariants
///
/// `page` heads a block of `2^order` pages that this value owns; `sg` describes exactly that
/// block once `alloc` returns.
pub(crate) struct PageBlock {
    page: NonNull<ffi::page>,
    order: u32,
    sg: Opaque<ffi::scatterlist>,
}

// SAFETY: The block is owned memory; freeing it is allowed from any thread.
unsafe impl Send for PageBlock {}

impl PageBlock {
    /// A free block of `2^order` pages if the allocator has one without reclaiming, else
    /// `None`.
    pub(crate) fn alloc(order: u32) -> Option<KBox<Self>> {
        // SAFETY: No preconditions; the flags forbid reclaim, warnings and reserves.
        let page = NonNull::new(unsafe { ffi::vballoon_alloc_free_block(order) })?;
        let block = KBox::new(
            Self {
                page,
                order,
                sg: Opaque::uninit(),
            },
            GFP_NOWAIT,
        );
        let Ok(block) = block else {
            // SAFETY: The block came from `vballoon_alloc_free_block` with this order.
            unsafe { ffi::vballoon_free_block(page.as_ptr(), order) };
            return None;
        };
        // SAFETY: `sg` is valid for writes and stays at this address inside the box; the block
        // is ours.
        unsafe { ffi::vballoon_sg_init_block(block.sg.get(), page.as_ptr(), order) };
        Some(block)
    }

    /// Guest pages in the block.
    pub(crate) fn pages(&self) -> u64 {
        1u64.checked_shl(self.order).unwrap_or(0)
    }
}

impl OwnsSegments for PageBlock {
    fn segments(&mut self) -> Option<Segments<'_>> {
        // SAFETY: `sg` is one valid entry (invariant) describing memory this value owns, and
        // `&mut self` keeps anyone else from using it for the borrow.
        unsafe { Segments::from_raw(self.sg.get(), 1) }
    }
}

impl Drop for PageBlock {
    fn drop(&mut self) {
        // SAFETY: We own the block (invariant); nothing uses it any more.
        unsafe { ffi::vballoon_free_block(self.page.as_ptr(), self.order) };
    }
}
