// SPDX-License-Identifier: GPL-2.0

//! Balloon page frame numbers and the batches they travel in.
//!
//! The virtio balloon speaks in 4 KiB page frames whatever the guest's `PAGE_SIZE` is: one guest
//! page is `PAGE_SIZE / 4096` consecutive balloon PFNs. PFNs are 32 bits wide on the wire, so a
//! page at or above 16 TiB cannot be described; it is refused, never truncated.

use super::wire::WireEndian;
use core::num::NonZeroU64;

/// log2 of the balloon's page size (4 KiB), fixed by the virtio spec.
pub(crate) const BALLOON_PAGE_SHIFT: u32 = 12;

/// Most PFNs one inflate/deflate buffer carries (1 MiB of 4 KiB pages). Firecracker and
/// cloud-hypervisor skip descriptors with more, so this is a hard upper bound.
pub(crate) const MAX_PFNS_PER_BUFFER: usize = 256;

/// Balloon (4 KiB) pages per guest page, for a guest page size of `1 << page_shift`.
///
/// Returns `None` for page sizes below 4 KiB or so large that one guest page would not fit in a
/// single buffer (the 2017 64 KiB-page overflow class, rejected up front instead).
pub(crate) const fn pfns_per_page(page_shift: u32) -> Option<usize> {
    if page_shift < BALLOON_PAGE_SHIFT || page_shift - BALLOON_PAGE_SHIFT > 8 {
        return None;
    }
    let n = 1usize << (page_shift - BALLOON_PAGE_SHIFT);
    if n > MAX_PFNS_PER_BUFFER {
        None
    } else {
        Some(n)
    }
}

/// Why a page cannot go into a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PfnError {
    /// The page's 4 KiB frame number does not fit in 32 bits (page above 16 TiB).
    TooHigh,
    /// The batch has no room for one more guest page.
    Full,
}

/// A guest page size the balloon can work with.
///
/// All arithmetic here is panic-free (no overflow checks, no division by a value the compiler
/// cannot prove non-zero), because it runs in the kernel.
///
/// # Invariants
///
/// `per_page == 1 << (shift - 12)` is at most [`MAX_PFNS_PER_BUFFER`] and
/// `page_bytes == 1 << shift`, for the `shift` given to `new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageGeometry {
    per_page: NonZeroU64,
    page_bytes: NonZeroU64,
}

impl PageGeometry {
    /// Geometry for guest pages of `1 << shift` bytes, if the balloon can use such pages.
    pub(crate) const fn new(shift: u32) -> Option<Self> {
        let Some(n) = pfns_per_page(shift) else {
            return None;
        };
        let (Some(per_page), Some(page_bytes)) = (
            NonZeroU64::new(n as u64),
            NonZeroU64::new((n as u64) << BALLOON_PAGE_SHIFT),
        ) else {
            return None;
        };
        Some(Self {
            per_page,
            page_bytes,
        })
    }

    /// Balloon PFNs per guest page.
    pub(crate) const fn pfns_per_page(&self) -> usize {
        // At most 256 (type invariant).
        self.per_page.get() as usize
    }

    /// Guest page size in bytes.
    pub(crate) const fn page_bytes(&self) -> u64 {
        self.page_bytes.get()
    }

    /// Guest pages that fit whole in one buffer.
    pub(crate) fn pages_per_buffer(&self) -> usize {
        // At most 256.
        (MAX_PFNS_PER_BUFFER as u64 / self.per_page) as usize
    }

    /// Balloon (4 KiB) units in `pages` guest pages, saturating.
    pub(crate) const fn pages_to_units(&self, pages: u64) -> u64 {
        pages.saturating_mul(self.per_page.get())
    }

    /// Whole guest pages in `units` balloon units, rounding up (the C driver's `ALIGN`).
    pub(crate) fn units_to_pages_up(&self, units: u64) -> u64 {
        units / self.per_page + u64::from(units % self.per_page != 0)
    }

    /// Whole guest pages in `bytes` bytes, rounding down.
    pub(crate) fn bytes_to_pages(&self, bytes: u64) -> u64 {
        bytes / self.page_bytes
    }

    /// Bytes in `pages` guest pages, saturating.
    pub(crate) const fn pages_to_bytes(&self, pages: u64) -> u64 {
        pages.saturating_mul(self.page_bytes.get())
    }

    /// First balloon PFN of the guest page with frame number `guest_pfn`.
    pub(crate) fn first_pfn(&self, guest_pfn: u64) -> Result<u32, PfnError> {
        let per_page = self.per_page.get();
        // The page's last 4 KiB frame must fit in 32 bits, so the whole page does.
        let first = guest_pfn
            .checked_mul(per_page)
            .filter(|f| {
                f.checked_add(per_page - 1)
                    .is_some_and(|l| l <= u64::from(u32::MAX))
            })
            .ok_or(PfnError::TooHigh)?;
        u32::try_from(first).map_err(|_| PfnError::TooHigh)
    }
}

/// Bytes of one full buffer on the wire.
pub(crate) const MAX_BUFFER_BYTES: usize = MAX_PFNS_PER_BUFFER * 4;

/// The PFN array of one inflate or deflate buffer, as the bytes that go on the wire.
///
/// # Invariants
///
/// `len <= MAX_PFNS_PER_BUFFER`, `len` is a multiple of the geometry's PFNs per page, and
/// `wire[..4 * len]` holds the encodings (in `endian` order) of the PFNs pushed since the last
/// `clear`.
pub(crate) struct PfnBatch {
    geometry: PageGeometry,
    endian: WireEndian,
    len: usize,
    wire: [u8; MAX_BUFFER_BYTES],
}

impl PfnBatch {
    /// An empty batch for pages of the given geometry, little-endian on the wire.
    #[allow(dead_code, reason = "used by the host unit tests")]
    pub(crate) const fn new(geometry: PageGeometry) -> Self {
        Self::with_endian(geometry, WireEndian::Little)
    }

    /// An empty batch whose PFNs go on the wire in `endian` order (see [`WireEndian`]).
    pub(crate) const fn with_endian(geometry: PageGeometry, endian: WireEndian) -> Self {
        Self {
            geometry,
            endian,
            len: 0,
            wire: [0; MAX_BUFFER_BYTES],
        }
    }

    /// Adds every balloon PFN of guest page `guest_pfn`, or nothing at all on error.
    pub(crate) fn push_page(&mut self, guest_pfn: u64) -> Result<(), PfnError> {
        if self.is_full() {
            return Err(PfnError::Full);
        }
        let first = self.geometry.first_pfn(guest_pfn)?;
        let n = self.geometry.pfns_per_page();
        let bytes = self
            .wire
            .get_mut(self.len.saturating_mul(4)..)
            .and_then(|rest| rest.get_mut(..n.saturating_mul(4)))
            .ok_or(PfnError::Full)?;
        let mut pfn = first;
        for slot in bytes.chunks_exact_mut(4) {
            // `first_pfn` checked that the page's last PFN fits in 32 bits.
            slot.copy_from_slice(&self.endian.u32(pfn));
            pfn = pfn.wrapping_add(1);
        }
        self.len = self.len.saturating_add(n);
        Ok(())
    }

    /// Guest pages in the batch.
    #[allow(dead_code, reason = "used by the host unit tests")]
    pub(crate) fn pages(&self) -> usize {
        self.len / self.geometry.pfns_per_page().max(1)
    }

    /// Balloon PFNs in the batch.
    #[allow(dead_code, reason = "used by the host unit tests")]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// True when no page is in the batch.
    #[allow(dead_code, reason = "used by the host unit tests")]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when one more guest page would not fit.
    pub(crate) fn is_full(&self) -> bool {
        self.len.saturating_add(self.geometry.pfns_per_page()) > MAX_PFNS_PER_BUFFER
    }

    /// Empties the batch.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// The wire form of the batch: `len()` little-endian 32-bit PFNs, nothing more.
    pub(crate) fn wire(&self) -> &[u8] {
        self.wire.get(..self.len.saturating_mul(4)).unwrap_or(&[])
    }
}
