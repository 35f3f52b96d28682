// SPDX-License-Identifier: GPL-2.0

//! Feature bits of the balloon device and the virtqueue layout they imply.

/// Host must be told before pages are reused (bit 0).
pub(crate) const F_MUST_TELL_HOST: u32 = 0;
/// Memory statistics virtqueue (bit 1).
pub(crate) const F_STATS_VQ: u32 = 1;
/// Deflate the balloon when the guest runs out of memory (bit 2).
pub(crate) const F_DEFLATE_ON_OOM: u32 = 2;
/// Free page hinting for live migration (bit 3).
pub(crate) const F_FREE_PAGE_HINT: u32 = 3;
/// The host is told what freed pages contain (`poison_val`) (bit 4).
pub(crate) const F_PAGE_POISON: u32 = 4;
/// Free page reporting virtqueue (bit 5).
pub(crate) const F_REPORTING: u32 = 5;
/// Transport feature: a modern (virtio 1.0) device, little-endian throughout (bit 32).
pub(crate) const F_VERSION_1: u32 = 32;
/// Transport feature: indirect descriptors (bit 28).
pub(crate) const F_RING_INDIRECT_DESC: u32 = 28;
/// Transport feature: the device is behind an IOMMU / uses the platform's DMA rules (bit 33).
pub(crate) const F_ACCESS_PLATFORM: u32 = 33;

/// The virtqueues a balloon device can have, in the order Linux creates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// Inflate queue, always present.
    Inflate,
    /// Deflate queue, always present.
    Deflate,
    /// Statistics queue, with `F_STATS_VQ`.
    Stats,
    /// Free page hinting queue, with `F_FREE_PAGE_HINT`.
    FreePage,
    /// Free page reporting queue, with `F_REPORTING`.
    Reporting,
}

/// Every queue in creation order.
pub(crate) const ALL_QUEUES: [Queue; 5] = [
    Queue::Inflate,
    Queue::Deflate,
    Queue::Stats,
    Queue::FreePage,
    Queue::Reporting,
];

/// Which queue index each present queue has.
///
/// Linux numbers the queues densely: an absent queue takes no index, so with neither stats nor
/// hinting the reporting queue is index 2. Hosts follow Linux, so this does too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueMap {
    index: [Option<u16>; 5],
    count: u16,
}

impl QueueMap {
    /// The layout for a device with the given negotiated feature test.
    pub(crate) fn new(has: impl Fn(u32) -> bool) -> Self {
        let mut index = [None; 5];
        let mut count = 0u16;
        for (slot, q) in index.iter_mut().zip(ALL_QUEUES) {
            let present = match q {
                Queue::Inflate | Queue::Deflate => true,
                Queue::Stats => has(F_STATS_VQ),
                Queue::FreePage => has(F_FREE_PAGE_HINT),
                Queue::Reporting => has(F_REPORTING),
            };
            if present {
                *slot = Some(count);
                count = count.saturating_add(1);
            }
        }
        Self { index, count }
    }

    /// Index of `q`, if the device has it.
    pub(crate) fn index(&self, q: Queue) -> Option<u16> {
        self.index.get(q as usize).copied().flatten()
    }

    /// Which queue has index `i`.
    pub(crate) fn queue(&self, i: u16) -> Option<Queue> {
        ALL_QUEUES.into_iter().find(|q| self.index(*q) == Some(i))
    }

    /// Number of queues to create.
    pub(crate) fn count(&self) -> u16 {
        self.count
    }
}
