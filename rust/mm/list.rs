// SPDX-License-Identifier: GPL-2.0

//! The list of pages in the balloon (`struct balloon_dev_info`).

use super::{
    field::{owner_of, HasField},
    page::{BalloonPage, PageRef},
};
use crate::ffi;
use core::{
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::{AtomicUsize, Ordering},
};
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

/// What a [`BalloonList`] needs of its owner: to be told of migrations (from any CPU, so the
/// owner is `Sync`), and where the list sits inside it
/// (`impl_has_field!(Owner, list: BalloonList<Owner>)`).
pub(crate) trait Owner: Migrate + HasField<BalloonList<Self>> + Sync + Sized {}
impl<T: Migrate + HasField<BalloonList<T>> + Sync> Owner for T {}

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
/// The list counts its pages itself (`pages`: every page that went in and has not come out,
/// whether on the list or isolated by compaction right now), because mm cannot tell the two
/// apart under its lock for us. [`BalloonList::release_all`] drains by that count, as the C
/// driver's remove drains by `num_pages`: it returns only once no page of the list is left
/// anywhere, so mm never touches `info` again and no migration callback can be running.
/// Dropping the list does the same, as a last resort: the owner is to call `release_all`
/// first, in its own teardown, before anything the migration callback uses goes.
///
/// # Invariants
///
/// `info` is initialised with `migratepage` set to the C trampoline, which reaches `migrate`
/// (this list's own entry) through `info`'s address; the list is pinned inside a `T` at
/// `T::OFFSET` (the contract of [`BalloonList::new`]). `pages` is at least the number of pages
/// on `info`'s list plus `info.isolated_pages` at every moment: it grows before a page goes in
/// and shrinks after one came out.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub(crate) struct BalloonList<T> {
    #[pin]
    info: Opaque<ffi::balloon_dev_info>,
    migrate: MigrateFn,
    pages: AtomicUsize,
    _t: PhantomData<T>,
}

// SAFETY: The C list is protected by mm's `balloon_pages_lock`; any thread may use it.
unsafe impl<T> Send for BalloonList<T> {}
// SAFETY: As above.
unsafe impl<T> Sync for BalloonList<T> {}

impl<T> BalloonList<T> {
    /// Puts `page` into the balloon; the list owns it from now on.
    pub(crate) fn enqueue(&self, page: BalloonPage) {
        // Counted before it is on the list (invariant).
        self.pages.fetch_add(1, Ordering::AcqRel);
        // SAFETY: `info` is initialised; the page reference moves to the list.
        unsafe { ffi::balloon_page_enqueue(self.info.get(), page.into_raw().as_ptr()) };
    }

    /// Puts every page of `pages` into the balloon with one round trip of the list lock;
    /// `pages` is empty afterwards.
    pub(crate) fn enqueue_all(&self, pages: &mut KVec<BalloonPage>) {
        if pages.is_empty() {
            return;
        }
        // Counted before they are on the list (invariant).
        self.pages.fetch_add(pages.len(), Ordering::AcqRel);
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
            let info = self.info.get();
            // SAFETY: `info` is initialised; `raw` has room for `want` pointers and C writes
            // at most that many.
            let got = unsafe { ffi::vballoon_dequeue_pages(info, raw.as_mut_ptr(), want) };
            let got = got as usize;
            // Off the list now (invariant: the count shrinks after).
            self.pages.fetch_sub(got.min(want), Ordering::AcqRel);
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
        self.pages.fetch_sub(1, Ordering::AcqRel);
        // SAFETY: A dequeued page's reference becomes ours.
        Some(unsafe { BalloonPage::from_raw(page) })
    }

    /// Pages of the list that compaction holds isolated right now.
    pub(crate) fn isolated(&self) -> u64 {
        // SAFETY: `info` is initialised; the helper reads the counter with `READ_ONCE`.
        unsafe { ffi::vballoon_isolated_pages(self.info.get()) as u64 }
    }

    /// Pages of the list: on it, or isolated by compaction right now.
    pub(crate) fn len(&self) -> usize {
        self.pages.load(Ordering::Acquire)
    }

    /// Frees every page of the list without telling anyone: for after the host has been told
    /// (or can no longer be, its device reset). Pages that compaction holds isolated are
    /// waited for: each comes back to the list (put back, or replaced by its migration target)
    /// and is freed then. When this returns, mm holds no page of the list and runs no
    /// migration of one. Returns how many pages it freed.
    pub(crate) fn release_all(&self) -> usize {
        let mut freed = 0usize;
        let mut waited_ms = 0u32;
        while self.len() > 0 {
            match self.dequeue() {
                Some(page) => {
                    drop(page);
                    freed = freed.saturating_add(1);
                }
                None => {
                    // Everything left is isolated: it comes back shortly.
                    fsleep(Delta::from_millis(1));
                    waited_ms = waited_ms.saturating_add(1);
                    if waited_ms.checked_rem(5000) == Some(0) {
                        pr_warn!(
                            "waiting for {} balloon pages under migration ({} isolated)\n",
                            self.len(),
                            self.isolated()
                        );
                    }
                }
            }
        }
        freed
    }
}

impl<T: Owner> BalloonList<T> {
    /// An empty list; with `adjust_managed`, pages on it leave the managed page count.
    ///
    /// # Safety
    ///
    /// The list is initialised in place as the `HasField` field of a `T` (so the migration
    /// callback finds its owner around it), and that `T` calls [`BalloonList::release_all`]
    /// before it drops any field that [`Migrate::migrate`] uses (in its own drop or earlier):
    /// until the list is empty, compaction may call the owner from any CPU.
    pub(crate) unsafe fn new(adjust_managed: bool) -> impl PinInit<Self> {
        pin_init!(Self {
            info <- Opaque::ffi_init(move |info: *mut ffi::balloon_dev_info| {
                // SAFETY: `info` is valid for writes.
                unsafe { ffi::vballoon_devinfo_init(info, adjust_managed) };
            }),
            migrate: Self::migrate_entry,
            pages: AtomicUsize::new(0),
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
        // `info` is the first field of a `#[repr(C)]` `BalloonList<T>` (invariant), which is
        // the `HasField` field of a `T` (the contract of `new`). The page being migrated is
        // isolated from the list, so the list is not empty, and the owner drains the list
        // before any field `migrate` uses goes (the contract of `new`).
        // SAFETY: by the above, `info` leads to a `T` that is whole for the call.
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
    // `ENOENT` would tell mm the old page left the balloon without the new one going in,
    // which the list's count would never hear of: the driver never means that.
    from_result(|| {
        // SAFETY: `f` is that list's own entry, given its own `info` and valid pages.
        let r = unsafe { f(info, new, old) };
        r.map_err(|e| if e == ENOENT { EAGAIN } else { e })
            .map(|()| 0)
    })
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
        // The owner drains the list in its own teardown (the contract of `new`); this only
        // makes sure mm holds no page of the list once its memory goes.
        let left = self.release_all();
        if left > 0 {
            pr_warn!("freed {} pages left in the balloon at teardown\n", left);
        }
    }
}
