// SPDX-License-Identifier: GPL-2.0

//! Lists of memory segments the device writes (or discards), borrowed from their owner for one
//! transfer: free page reporting hands the driver such a list of free pages.

use crate::ffi;
use core::{marker::PhantomData, ptr::NonNull};

/// A borrowed scatterlist of `nents` entries, device-writable for one transfer.
///
/// # Invariants
///
/// `sg` has `nents > 0` valid entries describing memory that nobody else uses for `'a`.
pub(crate) struct Segments<'a> {
    sg: NonNull<ffi::scatterlist>,
    nents: u32,
    _life: PhantomData<&'a mut ffi::scatterlist>,
}

impl Segments<'_> {
    /// # Safety
    ///
    /// `sg` must have `nents` valid entries describing memory that nobody else uses for the
    /// lifetime the caller picks (the kernel's page reporting gives such a list to `report`).
    pub(crate) unsafe fn from_raw(sg: *mut ffi::scatterlist, nents: u32) -> Option<Self> {
        let sg = NonNull::new(sg)?;
        if nents == 0 {
            return None;
        }
        Some(Self {
            sg,
            nents,
            _life: PhantomData,
        })
    }

    /// Bytes the segments describe.
    pub(crate) fn bytes(&self) -> u64 {
        // SAFETY: `sg` has `nents` valid entries (invariant).
        unsafe { ffi::vballoon_sg_bytes(self.sg.as_ptr(), self.nents) }
    }

    pub(super) fn raw(&mut self) -> (*mut ffi::scatterlist, u32) {
        (self.sg.as_ptr(), self.nents)
    }
}
