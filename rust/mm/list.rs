// SPDX-License-Identifier: GPL-2.0

//! The list of pages in the balloon (`struct balloon_dev_info`).

use super::{
    field::{owner_of, HasField},
    page::{BalloonPage, PageRef},
};
use crate::ffi;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    error::from_result,
    prelude::*,
    time::{delay::fsleep, Delta},
    types::Opaque,
};

/// The owner of a [`BalloonList`], told when compaction moves one of its pages.
pub(crate) trait Migrate {
    /// Tell the host that `new` replaces `old` in the balloon (inflate `new`, deflate `old`).
    ///
    /// Runs in process context from compaction or page migration, which may be triggered by an
    /// allocation inside the driver's own inflate path: never wait for a lock that path holds
    /// (try-lock, and return `EAGAIN` to let the core retry later).
    fn migrate(&self, new: PageRef<'_>, old: PageRef<'_>) -> Result;
}

/// What a [`BalloonList`] needs of its owner: to be told of migrations, and where the list
/// sits inside it (`impl_has_field!(Owner, list: BalloonList<Owner>)`).
pub(crate) trait Owner: Migrate + HasField<BalloonList<Self>> + Sized {}
impl<T: Migrate + HasField<BalloonList<T>>> Owner for T {}

/// The Rust-typed migration entry of a list, called by [`vballoon_rust_migratepage`].
type MigrateFn =
    unsafe fn(NonNull<ffi::balloon_dev_info>, NonNull<ffi::page>, NonNull<ffi::page>) -> Result;

/// Pages [`BalloonList::dequeue_into`] takes per round trip of the list lock (a stack array).
const DEQUEUE_CHUNK: usize = 64;

/// The list of pages in the balloon.
///
/// Pages on it are the host's: they are movable (compaction calls [`Migrate::migrate`] on the
/// owner) and, when created with `adjust_managed`, not counted in the guest's managed pages,
/// so `MemTotal` follows the balloon.
///
/// Dropping the list waits until compaction has no page of it isolated (an isolated page comes
/// back through the list), then frees what is left, as the C driver's remove waits for all of
/// its pages.
///
/// # Invariants
///
/// `info` is initialised with `migratepage` set to the C trampoline, which reaches `migrate`
/// (this list's own entry) through `info`'s address; the list is pinned inside a `T` at
/// `T::OFFSET`.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub(crate) struct BalloonList<T> {
    #[pin]
    info: Opaque<ffi::balloon_dev_info>,
    migrate: MigrateFn,
    _t: PhantomData<T>,
}

// SAFETY: The C list is protected by mm's `balloon_pages_lock`; any thread may use it.
unsafe impl<T> Send for BalloonList<T> {}
// SAFETY: As above.
unsafe impl<T> Sync for BalloonList<T> {}

impl<T> BalloonList<T> {
    /// Puts `page` into the balloon; the list owns it from now on.
    pub(crate) fn enqueue(&self, page: BalloonPage) {
        // SAFETY: `info` is initialised; the page reference moves to the list.
        unsafe { ffi::balloon_page_enqueue(self.info.get(), page.into_raw().as_ptr()) };
    }

    /// Puts every page of `pages` into the balloon with one round trip of the list lock;
    /// `pages` is empty afterwards.
    pub(crate) fn enqueue_all(&self, pages: &mut KVec<BalloonPage>) {
        if pages.is_empty() {
            return;
        }
        // SAFETY: `info` is initialised; `BalloonPage` is a transparent `struct page *`, so
        // `pages` is an array of `len` valid pages, each one reference that moves to the list.
        unsafe {
            ffi::vballoon_enqueue_pages(
                self.info.get(),
                pages.as_ptr().cast::<*mut ffi::page>(),
                pages.len(),
            )
        };
        // The list owns them now: forget our handles without dropping a reference.
        for page in pages.drain_all() {
            let _ = page.into_raw();
        }
    }

    /// Takes up to `n` pages out of the balloon into `out` (as far as it has room), with one
    /// round trip of the list lock per [`DEQUEUE_CHUNK`] pages. Pages being migrated are
    /// skipped. Returns how many.
    pub(crate) fn dequeue_into(&self, out: &mut KVec<BalloonPage>, n: usize) -> usize {
        let mut total = 0usize;
        loop {
            let room = out.capacity().saturating_sub(out.len());
            let want = n.saturating_sub(total).min(room).min(DEQUEUE_CHUNK);
            if want == 0 {
                return total;
            }
            let mut raw = [core::ptr::null_mut::<ffi::page>(); DEQUEUE_CHUNK];
            // SAFETY: `info` is initialised; `raw` has room for `want` pointers and C writes
            // at most that many.
            let got =
                unsafe { ffi::vballoon_dequeue_pages(self.info.get(), raw.as_mut_ptr(), want) }
                    as usize;
            for &p in raw.iter().take(got.min(want)) {
                let Some(p) = NonNull::new(p) else { continue };
                // SAFETY: A dequeued page's reference becomes ours.
                let page = unsafe { BalloonPage::from_raw(p) };
                if let Err(e) = out.push_within_capacity(page) {
                    // Unreachable (room was checked); keep the page in the balloon.
                    self.enqueue(e.0);
                    continue;
                }
                total = total.saturating_add(1);
            }
            if got < want {
                return total;
            }
        }
    }

    /// Takes one page out of the balloon, or `None` if every page still in it is being
    /// migrated right now (or the list is empty).
    pub(crate) fn dequeue(&self) -> Option<BalloonPage> {
        // SAFETY: `info` is initialised.
        let page = NonNull::new(unsafe { ffi::vballoon_dequeue_one(self.info.get()) })?;
        // SAFETY: A dequeued page's reference becomes ours.
        Some(unsafe { BalloonPage::from_raw(page) })
    }

    /// Pages of the list that compaction holds isolated right now.
    pub(crate) fn isolated(&self) -> u64 {
        // SAFETY: `info` is initialised; the helper reads the counter with `READ_ONCE`.
        unsafe { ffi::vballoon_isolated_pages(self.info.get()) as u64 }
    }
}

impl<T: Owner> BalloonList<T> {
    /// An empty list; with `adjust_managed`, pages on it leave the managed page count.
    pub(crate) fn new(adjust_managed: bool) -> impl PinInit<Self> {
        pin_init!(Self {
            info <- Opaque::ffi_init(move |info: *mut ffi::balloon_dev_info| {
                // SAFETY: `info` is valid for writes.
                unsafe { ffi::vballoon_devinfo_init(info, adjust_managed) };
            }),
            migrate: Self::migrate_entry,
            _t: PhantomData,
        })
    }

    /// # Safety
    ///
    /// `info` is the `info` of a live `BalloonList<T>`; the pages are valid for the call.
    unsafe fn migrate_entry(
        info: NonNull<ffi::balloon_dev_info>,
        new: NonNull<ffi::page>,
        old: NonNull<ffi::page>,
    ) -> Result {
        // SAFETY: `info` is the first field of a `#[repr(C)]` `BalloonList<T>` (invariant),
        // which is a field of a live `T` (`HasField`); dropping the list waits for every
        // isolated page, so the owner outlives any migration of its pages.
        let owner: &T = unsafe { owner_of(info.as_ptr().cast::<BalloonList<T>>()) };
        // SAFETY: The pages are valid for the call (function requirement).
        let (new, old) = unsafe { (PageRef::new(new), PageRef::new(old)) };
        owner.migrate(new, old)
    }
}

/// Reached from C's `vballoon_migratepage`, the `balloon_dev_info::migratepage` of every list:
/// a direct call, so kernel CFI never compares a Rust function's type against the C pointer
/// type (which takes an `enum migrate_mode`, which Rust cannot spell for CFI).
///
/// # Safety
///
/// `info` is the `balloon_dev_info` of a live [`BalloonList`] and the pages are valid for the
/// call: mm's `balloon_page_migrate` guarantees both for an isolated page of the list.
#[no_mangle]
unsafe extern "C" fn vballoon_rust_migratepage(
    info: *mut ffi::balloon_dev_info,
    newpage: *mut ffi::page,
    page: *mut ffi::page,
) -> kernel::ffi::c_int {
    let (Some(info), Some(new), Some(old)) = (
        NonNull::new(info),
        NonNull::new(newpage),
        NonNull::new(page),
    ) else {
        return EAGAIN.to_errno();
    };
    // The entry right after `info` in the `#[repr(C)]` list: every `BalloonList<T>` has the
    // same layout up to it, whatever `T`.
    let entry = info
        .as_ptr()
        .cast::<u8>()
        .wrapping_add(core::mem::offset_of!(BalloonList<Never>, migrate))
        .cast::<MigrateFn>();
    // SAFETY: `info` belongs to a live `BalloonList` (mm calls this only for pages of one),
    // whose `migrate` field is at the offset computed above.
    let f = unsafe { *entry };
    // SAFETY: `f` is that list's own entry, given its own `info` and valid pages.
    from_result(|| unsafe { f(info, new, old) }.map(|()| 0))
}

/// A stand-in owner, only to compute `BalloonList`'s field offsets (the same for every `T`).
struct Never;
impl Migrate for Never {
    fn migrate(&self, _: PageRef<'_>, _: PageRef<'_>) -> Result {
        Err(EAGAIN)
    }
}
// SAFETY: Never instantiated; the offset is never used to find a `BalloonList` in a `Never`.
unsafe impl HasField<BalloonList<Never>> for Never {
    const OFFSET: usize = 0;
}

#[pinned_drop]
impl<T> PinnedDrop for BalloonList<T> {
    fn drop(self: Pin<&mut Self>) {
        // An isolated page comes back through this list (put back, or migrated and its
        // replacement inserted): wait for all of them before the list goes.
        let mut waited = 0u32;
        while self.isolated() > 0 {
            fsleep(Delta::from_millis(1));
            waited = waited.saturating_add(1);
            if waited % 5000 == 0 {
                pr_warn!(
                    "waiting for {} balloon pages under migration\n",
                    self.isolated()
                );
            }
        }
        // The owner deflates (telling the host) and resets the device before dropping the
        // list; anything left is no longer the host's, so free it.
        let mut left = 0usize;
        while let Some(page) = self.dequeue() {
            drop(page);
            left = left.saturating_add(1);
        }
        if left > 0 {
            pr_warn!("freed {} pages left in the balloon at teardown\n", left);
        }
    }
}
