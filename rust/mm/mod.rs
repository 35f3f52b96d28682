// SPDX-License-Identifier: GPL-2.0

//! Memory-management wrappers: balloon pages, the balloon page list (which keeps ballooned
//! pages movable and, optionally, out of the managed page count), and memory figures.
//!
//! Every `unsafe` block of the module that touches mm is in this directory.
//!
//! C header: `include/linux/balloon.h`, `mm/balloon.c`.

use crate::{balloon::stats::Sample, ffi};
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{error::from_result, prelude::*, types::Opaque};

/// The guest's page shift (`PAGE_SHIFT`).
pub(crate) fn page_shift() -> u32 {
    // SAFETY: Reads a compile-time constant.
    unsafe { ffi::vballoon_page_shift() }
}

/// Memory the guest could hand out without swapping (`MemAvailable`), in pages.
pub(crate) fn mem_available_pages() -> u64 {
    // SAFETY: `si_mem_available` only reads global counters.
    unsafe { ffi::vballoon_mem_available_pages() as u64 }
}

/// The guest's memory figures from the kernel's own counters, in the kernel's units (pages and
/// event counts), for the statistics queue. Sleeps never; allocates nothing.
pub(crate) fn stats_sample() -> Sample {
    use kernel::bindings as b;
    const N: usize = b::vm_event_item_NR_VM_EVENT_ITEMS as usize;
    let mut ev = [0 as kernel::ffi::c_ulong; N];
    // SAFETY: `ev` has room for every vm event item.
    unsafe { b::all_vm_events(ev.as_mut_ptr()) };
    let e = |item: b::vm_event_item| ev.get(item as usize).map_or(0, |v| *v as u64);
    let node = |item: b::node_stat_item| {
        // SAFETY: Reads a global counter.
        unsafe { ffi::vballoon_node_page_state(item) as u64 }
    };
    let base = (b::vm_event_item_ALLOCSTALL_NORMAL - b::zone_type_ZONE_NORMAL) as usize;
    let alloc_stalls = (0..b::MAX_NR_ZONES as usize)
        .map(|z| ev.get(base.saturating_add(z)).map_or(0, |v| *v as u64))
        .fold(0u64, u64::saturating_add);
    let mut info = b::sysinfo::default();
    // SAFETY: `info` is a valid `sysinfo` to fill.
    unsafe { b::si_meminfo(&mut info) };
    #[cfg(CONFIG_HUGETLB_PAGE)]
    let hugetlb = Some((
        e(b::vm_event_item_HTLB_BUDDY_PGALLOC),
        e(b::vm_event_item_HTLB_BUDDY_PGALLOC_FAIL),
    ));
    #[cfg(not(CONFIG_HUGETLB_PAGE))]
    let hugetlb = None;
    Sample {
        swap_in_pages: e(b::vm_event_item_PSWPIN),
        swap_out_pages: e(b::vm_event_item_PSWPOUT),
        major_faults: e(b::vm_event_item_PGMAJFAULT),
        minor_faults: e(b::vm_event_item_PGFAULT),
        oom_kills: e(b::vm_event_item_OOM_KILL),
        alloc_stalls,
        async_scan_pages: node(b::node_stat_item_PGSCAN_KSWAPD),
        direct_scan_pages: node(b::node_stat_item_PGSCAN_DIRECT),
        async_reclaim_pages: node(b::node_stat_item_PGSTEAL_KSWAPD),
        direct_reclaim_pages: node(b::node_stat_item_PGSTEAL_DIRECT),
        hugetlb,
        free_pages: info.freeram as u64,
        total_pages: info.totalram as u64,
        available_pages: mem_available_pages(),
        file_pages: node(b::node_stat_item_NR_FILE_PAGES),
    }
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
    /// reserves. `None` when memory is short; the caller backs off.
    pub(crate) fn alloc() -> Option<Self> {
        // SAFETY: `balloon_page_alloc` has no preconditions.
        NonNull::new(unsafe { ffi::balloon_page_alloc() }).map(|page| Self { page })
    }

    /// The page's frame number in guest pages.
    pub(crate) fn pfn(&self) -> u64 {
        // SAFETY: The page is valid by the type invariant.
        unsafe { ffi::vballoon_page_to_pfn(self.page.as_ptr()) as u64 }
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
    /// The page's frame number in guest pages.
    pub(crate) fn pfn(&self) -> u64 {
        // SAFETY: The page is valid for the borrow.
        unsafe { ffi::vballoon_page_to_pfn(self.page.as_ptr()) as u64 }
    }
}

/// The owner of a [`BalloonList`], told when compaction moves one of its pages.
pub(crate) trait Migrate {
    /// Tell the host that `new` replaces `old` in the balloon (inflate `new`, deflate `old`).
    ///
    /// Runs in process context from compaction or page migration, which may be triggered by an
    /// allocation inside the driver's own inflate path: never wait for a lock that path holds
    /// (try-lock, and return `EAGAIN` to let the core retry later).
    fn migrate(&self, new: PageRef<'_>, old: PageRef<'_>) -> Result;
}

/// Where a [`BalloonList`] sits inside its owner.
///
/// # Safety
///
/// `OFFSET` must be the byte offset of a `BalloonList<Self>` field inside `Self`. Use
/// [`impl_has_balloon_list!`] rather than implementing this by hand.
pub(crate) unsafe trait HasBalloonList: Migrate + Sized {
    /// Byte offset of the list inside `Self`.
    const OFFSET: usize;
}

/// Implements [`HasBalloonList`] for `$type` whose field `$field` is its `BalloonList`.
macro_rules! impl_has_balloon_list {
    ($type:ty, $field:ident) => {
        // SAFETY: `offset_of!` gives the offset of the named `BalloonList<Self>` field.
        unsafe impl $crate::mm::HasBalloonList for $type {
            const OFFSET: usize = ::core::mem::offset_of!($type, $field);
        }
        const _: fn(&$type) -> &$crate::mm::BalloonList<$type> = |t| &t.$field;
    };
}
pub(crate) use impl_has_balloon_list;

/// The list of pages in the balloon (`struct balloon_dev_info`).
///
/// Pages on it are the host's: they are movable (compaction calls [`Migrate::migrate`] on the
/// owner) and, when created with `adjust_managed`, not counted in the guest's managed pages,
/// so `MemTotal` follows the balloon.
///
/// # Invariants
///
/// `info` is initialised, lives inside a `T` at `T::OFFSET`, and is pinned.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub(crate) struct BalloonList<T: HasBalloonList> {
    #[pin]
    info: Opaque<ffi::balloon_dev_info>,
    _t: PhantomData<T>,
}

// SAFETY: The C list is protected by mm's `balloon_pages_lock`; any thread may use it.
unsafe impl<T: HasBalloonList> Send for BalloonList<T> {}
// SAFETY: As above.
unsafe impl<T: HasBalloonList> Sync for BalloonList<T> {}

impl<T: HasBalloonList> BalloonList<T> {
    /// An empty list; with `adjust_managed`, pages on it leave the managed page count.
    pub(crate) fn new(adjust_managed: bool) -> impl PinInit<Self> {
        pin_init!(Self {
            info <- Opaque::ffi_init(move |info: *mut ffi::balloon_dev_info| {
                // SAFETY: `info` is valid for writes.
                unsafe {
                    ffi::vballoon_devinfo_init(info, adjust_managed);
                    (*info).migratepage = Some(Self::migrate_callback);
                }
            }),
            _t: PhantomData,
        })
    }

    /// Puts `page` into the balloon; the list owns it from now on.
    pub(crate) fn enqueue(&self, page: BalloonPage) {
        let p = page.page.as_ptr();
        core::mem::forget(page);
        // SAFETY: `info` is initialised; the page reference moves to the list.
        unsafe { ffi::balloon_page_enqueue(self.info.get(), p) };
    }

    /// Takes one page out of the balloon, or `None` if every page still in it is being
    /// migrated right now (or the list is empty).
    pub(crate) fn dequeue(&self) -> Option<BalloonPage> {
        // SAFETY: `info` is initialised; a returned page's reference becomes ours.
        NonNull::new(unsafe { ffi::vballoon_dequeue_one(self.info.get()) })
            .map(|page| BalloonPage { page })
    }

    /// `balloon_dev_info::migratepage`: called by `mm/balloon.c` for a page of this list that
    /// compaction isolated, with the new page it should become.
    extern "C" fn migrate_callback(
        info: *mut ffi::balloon_dev_info,
        newpage: *mut ffi::page,
        page: *mut ffi::page,
        _mode: ffi::migrate_mode,
    ) -> kernel::ffi::c_int {
        let (Some(new), Some(old)) = (NonNull::new(newpage), NonNull::new(page)) else {
            return EAGAIN.to_errno();
        };
        // SAFETY: `info` is the first field of a `#[repr(C)]` `BalloonList<T>` (invariant),
        // which sits at `T::OFFSET` inside a live `T` (`HasBalloonList`): the owner drops the
        // list only once no page of it is left, so no migration can be running.
        let owner = unsafe { &*info.cast::<u8>().sub(T::OFFSET).cast::<T>() };
        from_result(|| {
            owner.migrate(
                PageRef {
                    page: new,
                    _life: PhantomData,
                },
                PageRef {
                    page: old,
                    _life: PhantomData,
                },
            )?;
            Ok(0)
        })
    }
}

#[pinned_drop]
impl<T: HasBalloonList> PinnedDrop for BalloonList<T> {
    fn drop(self: Pin<&mut Self>) {
        // The owner deflates (telling the host) and resets the device before dropping the list;
        // anything left is no longer the host's, so free it rather than leave pages pointing at
        // freed memory.
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
