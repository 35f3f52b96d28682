// SPDX-License-Identifier: GPL-2.0

//! The statistics buffer: packed `{le16 tag; le64 val}` entries, in the C driver's order and
//! units, so hosts (QEMU, libvirt's `dommemstat`, oVirt MOM) see the same figures either way.
//! (`le` on modern devices; legacy devices on big-endian guests get big-endian, see
//! [`WireEndian`].)

use super::wire::WireEndian;

/// Bytes of one entry on the wire: `le16` tag then `le64` value, no padding.
pub(crate) const ENTRY_BYTES: usize = 10;
/// Number of tags Linux knows (`VIRTIO_BALLOON_S_NR`).
pub(crate) const NR_TAGS: usize = 16;

/// Statistic tags (virtio spec plus the Linux extensions 10..15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum Tag {
    /// Bytes swapped in.
    SwapIn = 0,
    /// Bytes swapped out.
    SwapOut = 1,
    /// Major page faults.
    MajorFaults = 2,
    /// Minor page faults.
    MinorFaults = 3,
    /// Free memory, bytes.
    MemFree = 4,
    /// Total memory, bytes.
    MemTotal = 5,
    /// Available memory (`MemAvailable`), bytes.
    MemAvailable = 6,
    /// Disk caches (file pages), bytes.
    DiskCaches = 7,
    /// Hugetlb pages allocated from the buddy allocator.
    HugetlbAllocs = 8,
    /// Hugetlb allocations that failed.
    HugetlbFailures = 9,
    /// OOM kills.
    OomKills = 10,
    /// Allocation stalls (all zones).
    AllocStalls = 11,
    /// Pages scanned by kswapd, bytes.
    AsyncScans = 12,
    /// Pages scanned by direct reclaim, bytes.
    DirectScans = 13,
    /// Pages reclaimed by kswapd, bytes.
    AsyncReclaims = 14,
    /// Pages reclaimed by direct reclaim, bytes.
    DirectReclaims = 15,
}

/// The guest's figures, in the kernel's own units (pages or event counts), as the driver reads
/// them from the kernel's counters. `hugetlb` is `None` on kernels without hugetlb pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    /// `PSWPIN` events (pages).
    pub(crate) swap_in_pages: u64,
    /// `PSWPOUT` events (pages).
    pub(crate) swap_out_pages: u64,
    /// `PGMAJFAULT` events.
    pub(crate) major_faults: u64,
    /// `PGFAULT` events.
    pub(crate) minor_faults: u64,
    /// `OOM_KILL` events.
    pub(crate) oom_kills: u64,
    /// Sum of `ALLOCSTALL_*` events.
    pub(crate) alloc_stalls: u64,
    /// `PGSCAN_KSWAPD` (pages).
    pub(crate) async_scan_pages: u64,
    /// `PGSCAN_DIRECT` (pages).
    pub(crate) direct_scan_pages: u64,
    /// `PGSTEAL_KSWAPD` (pages).
    pub(crate) async_reclaim_pages: u64,
    /// `PGSTEAL_DIRECT` (pages).
    pub(crate) direct_reclaim_pages: u64,
    /// `HTLB_BUDDY_PGALLOC` and `HTLB_BUDDY_PGALLOC_FAIL`, if the kernel has hugetlb pages.
    pub(crate) hugetlb: Option<(u64, u64)>,
    /// `si_meminfo().freeram` (pages).
    pub(crate) free_pages: u64,
    /// `si_meminfo().totalram` (pages).
    pub(crate) total_pages: u64,
    /// `si_mem_available()` (pages).
    pub(crate) available_pages: u64,
    /// `NR_FILE_PAGES` (pages).
    pub(crate) file_pages: u64,
    /// The kernel has no VM event counters (`CONFIG_VM_EVENT_COUNTERS=n`): the C driver then
    /// sends only the four memory figures, and so does this.
    pub(crate) no_vm_events: bool,
}

/// A stats buffer as it goes on the wire.
///
/// # Invariants
///
/// `count <= NR_TAGS` and `wire[..count * ENTRY_BYTES]` holds `count` packed entries.
pub(crate) struct StatsBuf {
    count: usize,
    endian: WireEndian,
    wire: [u8; NR_TAGS * ENTRY_BYTES],
}

impl Default for StatsBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl StatsBuf {
    /// An empty buffer.
    pub(crate) const fn new() -> Self {
        Self::with_endian(WireEndian::Little)
    }

    /// An empty buffer whose entries go on the wire in `endian` order (see [`WireEndian`]).
    pub(crate) const fn with_endian(endian: WireEndian) -> Self {
        Self {
            count: 0,
            endian,
            wire: [0; NR_TAGS * ENTRY_BYTES],
        }
    }

    fn push(&mut self, tag: Tag, val: u64) {
        // `fill` pushes each tag at most once, so there is always room.
        let Some(e) = self.wire.chunks_exact_mut(ENTRY_BYTES).nth(self.count) else {
            return;
        };
        let (t, v) = e.split_at_mut(2);
        t.copy_from_slice(&self.endian.u16(tag as u16));
        v.copy_from_slice(&self.endian.u64(val));
        self.count = self.count.saturating_add(1);
    }

    /// Refills the buffer from `s`, in the C driver's order and units (`page_shift` turns page
    /// counts into bytes). The tag set depends only on whether the kernel has hugetlb pages,
    /// so it is the same on every refill.
    pub(crate) fn fill(&mut self, s: &Sample, page_shift: u32) {
        let bytes = |pages: u64| {
            if page_shift >= 64 || pages > (u64::MAX >> page_shift) {
                u64::MAX
            } else {
                pages << page_shift
            }
        };
        self.count = 0;
        if !s.no_vm_events {
            self.push_events(s, bytes);
        }
        self.push(Tag::MemFree, bytes(s.free_pages));
        self.push(Tag::MemTotal, bytes(s.total_pages));
        self.push(Tag::MemAvailable, bytes(s.available_pages));
        self.push(Tag::DiskCaches, bytes(s.file_pages));
    }

    fn push_events(&mut self, s: &Sample, bytes: impl Fn(u64) -> u64) {
        self.push(Tag::SwapIn, bytes(s.swap_in_pages));
        self.push(Tag::SwapOut, bytes(s.swap_out_pages));
        self.push(Tag::MajorFaults, s.major_faults);
        self.push(Tag::MinorFaults, s.minor_faults);
        self.push(Tag::OomKills, s.oom_kills);
        self.push(Tag::AllocStalls, s.alloc_stalls);
        self.push(Tag::AsyncScans, bytes(s.async_scan_pages));
        self.push(Tag::DirectScans, bytes(s.direct_scan_pages));
        self.push(Tag::AsyncReclaims, bytes(s.async_reclaim_pages));
        self.push(Tag::DirectReclaims, bytes(s.direct_reclaim_pages));
        if let Some((allocs, fails)) = s.hugetlb {
            self.push(Tag::HugetlbAllocs, allocs);
            self.push(Tag::HugetlbFailures, fails);
        }
    }

    /// Entries in the buffer.
    #[allow(dead_code, reason = "used by the host unit tests")]
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The packed entries.
    pub(crate) fn wire(&self) -> &[u8] {
        self.wire
            .get(..self.count.saturating_mul(ENTRY_BYTES))
            .unwrap_or(&[])
    }
}
