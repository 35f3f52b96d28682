// SPDX-License-Identifier: GPL-2.0

//! Memory figures: `MemAvailable` for the floor, and the statistics queue's sample.

use crate::{balloon::stats::Sample, ffi};

/// Memory the guest could hand out without swapping (`MemAvailable`), in pages.
pub(crate) fn mem_available_pages() -> u64 {
    // SAFETY: `si_mem_available` only reads global counters.
    unsafe { ffi::vballoon_mem_available_pages() as u64 }
}

/// The guest's memory figures from the kernel's own counters, in the kernel's units (pages and
/// event counts), for the statistics queue. Process context only: summing the per-CPU event
/// counters takes the CPU hotplug lock, which may sleep. Allocates nothing.
pub(crate) fn stats_sample() -> Sample {
    use kernel::bindings as b;
    let node = |item: b::node_stat_item| {
        // SAFETY: Reads a global counter.
        unsafe { ffi::vballoon_node_page_state(item) as u64 }
    };
    let mut info = b::sysinfo::default();
    // SAFETY: `info` is a valid `sysinfo` to fill.
    unsafe { b::si_meminfo(&mut info) };
    let mut s = Sample {
        async_scan_pages: node(b::node_stat_item_PGSCAN_KSWAPD),
        direct_scan_pages: node(b::node_stat_item_PGSCAN_DIRECT),
        async_reclaim_pages: node(b::node_stat_item_PGSTEAL_KSWAPD),
        direct_reclaim_pages: node(b::node_stat_item_PGSTEAL_DIRECT),
        free_pages: info.freeram as u64,
        total_pages: info.totalram as u64,
        available_pages: mem_available_pages(),
        file_pages: node(b::node_stat_item_NR_FILE_PAGES),
        no_vm_events: true,
        ..Sample::default()
    };
    add_vm_events(&mut s);
    s
}

/// The VM event counters of the sample, as the C driver sends them when the kernel has them.
#[cfg(CONFIG_VM_EVENT_COUNTERS)]
fn add_vm_events(s: &mut Sample) {
    use kernel::bindings as b;
    const N: usize = b::vm_event_item_NR_VM_EVENT_ITEMS as usize;
    let mut ev = [0 as kernel::ffi::c_ulong; N];
    // SAFETY: `ev` has room for every vm event item.
    unsafe { b::all_vm_events(ev.as_mut_ptr()) };
    let e = |item: b::vm_event_item| ev.get(item as usize).map_or(0, |v| *v as u64);
    let base = (b::vm_event_item_ALLOCSTALL_NORMAL - b::zone_type_ZONE_NORMAL) as usize;
    s.alloc_stalls = (0..b::MAX_NR_ZONES as usize)
        .map(|z| ev.get(base.saturating_add(z)).map_or(0, |v| *v as u64))
        .fold(0u64, u64::saturating_add);
    s.swap_in_pages = e(b::vm_event_item_PSWPIN);
    s.swap_out_pages = e(b::vm_event_item_PSWPOUT);
    s.major_faults = e(b::vm_event_item_PGMAJFAULT);
    s.minor_faults = e(b::vm_event_item_PGFAULT);
    s.oom_kills = e(b::vm_event_item_OOM_KILL);
    #[cfg(CONFIG_HUGETLB_PAGE)]
    {
        s.hugetlb = Some((
            e(b::vm_event_item_HTLB_BUDDY_PGALLOC),
            e(b::vm_event_item_HTLB_BUDDY_PGALLOC_FAIL),
        ));
    }
    s.no_vm_events = false;
}

/// Without VM event counters the sample has only the memory figures (see `Sample`).
#[cfg(not(CONFIG_VM_EVENT_COUNTERS))]
fn add_vm_events(_s: &mut Sample) {}

/// What the kernel does to pages it frees (`init_on_free`, page poisoning), for the
/// `PAGE_POISON` rules.
pub(crate) fn freed_pages() -> crate::balloon::validate::FreedPages {
    crate::balloon::validate::FreedPages {
        // SAFETY: Reads boot-time settings.
        init_on_free: unsafe { ffi::vballoon_want_init_on_free() },
        // SAFETY: As above.
        poisoning: unsafe { ffi::vballoon_page_poisoning_enabled() },
    }
}

/// Pages of RAM the kernel manages (`totalram_pages`).
pub(crate) fn totalram_pages() -> u64 {
    // SAFETY: Reads a global counter.
    unsafe { ffi::vballoon_totalram_pages() as u64 }
}

/// The order of free page hint blocks (`MAX_PAGE_ORDER`, as the C driver).
pub(crate) fn hint_block_order() -> u32 {
    // SAFETY: Reads a compile-time constant.
    unsafe { ffi::vballoon_hint_block_order() }
}
