// SPDX-License-Identifier: GPL-2.0

//! Target arithmetic: from the host's `num_pages` and what the balloon holds to the next step.

use super::pfn::PageGeometry;

/// What the resize worker should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Take this many more guest pages (at most one buffer's worth).
    Inflate(usize),
    /// Give back this many guest pages (at most one buffer's worth).
    Deflate(usize),
    /// The host wants more, but the guest is at its memory floor: hold still and retry later.
    AtFloor,
    /// The balloon holds exactly the host's target.
    Done,
}

/// What the guest can spare right now, sampled by the driver before each inflate batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Headroom {
    /// Memory the guest could still hand out without swapping (`MemAvailable`), in bytes.
    pub(crate) available_bytes: u64,
    /// The floor the balloon never pushes `available_bytes` below, in bytes.
    pub(crate) floor_bytes: u64,
}

impl Headroom {
    /// Guest pages the balloon may still take before `available` reaches the floor.
    pub(crate) fn spare_pages(&self, geometry: &PageGeometry) -> u64 {
        geometry.bytes_to_pages(self.available_bytes.saturating_sub(self.floor_bytes))
    }
}

/// The host's target in whole guest pages: `num_pages` is in 4 KiB units and is rounded up to
/// whole guest pages, as the C driver does, so `actual` is always a whole number of guest pages.
pub(crate) fn target_pages(geometry: &PageGeometry, num_pages: u32) -> u64 {
    geometry.units_to_pages_up(u64::from(num_pages))
}

/// The `actual` value to write back: balloon units held, saturated at what 32 bits can say.
pub(crate) fn actual_units(geometry: &PageGeometry, held_pages: u64) -> u32 {
    u32::try_from(geometry.pages_to_units(held_pages)).unwrap_or(u32::MAX)
}

/// Decides the next step towards the host's target.
///
/// `held_pages` is what the balloon holds now, in guest pages; `headroom` is consulted only
/// when inflating. Steps never exceed `max_pages` (the pages the caller can post at once).
#[allow(
    dead_code,
    reason = "the host unit tests' entry; the driver uses next_step_to"
)]
pub(crate) fn next_step(
    geometry: &PageGeometry,
    num_pages: u32,
    held_pages: u64,
    headroom: Headroom,
    max_pages: usize,
) -> Step {
    next_step_to(
        geometry,
        target_pages(geometry, num_pages),
        held_pages,
        headroom,
        max_pages,
    )
}

/// [`next_step`] towards `target` guest pages (see [`effective_target`]).
pub(crate) fn next_step_to(
    geometry: &PageGeometry,
    target: u64,
    held_pages: u64,
    headroom: Headroom,
    max_pages: usize,
) -> Step {
    let max = max_pages as u64;
    match target.cmp(&held_pages) {
        core::cmp::Ordering::Greater => {
            let want = target.saturating_sub(held_pages).min(max);
            match want.min(headroom.spare_pages(geometry)) {
                0 => Step::AtFloor,
                // `n <= max_pages`, a usize.
                n => Step::Inflate(n as usize),
            }
        }
        // `<= max_pages`, a usize.
        core::cmp::Ordering::Less => {
            Step::Deflate(held_pages.saturating_sub(target).min(max) as usize)
        }
        core::cmp::Ordering::Equal => Step::Done,
    }
}

/// Most inflate/deflate buffers posted in one step.
pub(crate) const MAX_INFLIGHT: usize = 8;

/// Buffers to post per step on queues with `ring_size` descriptors: each buffer is one
/// descriptor, and a step must never post more than the ring holds, or the ring refuses some
/// and their pages would be counted without the host seeing them. `None` for an empty ring.
pub(crate) fn buffers_in_flight(ring_size: usize) -> Option<usize> {
    match MAX_INFLIGHT.min(ring_size) {
        0 => None,
        n => Some(n),
    }
}

/// The target the resize work steers to. After the OOM path deflated the balloon, the host's
/// `num_pages` is the one it gave before that (`oom_hold`): the balloon stays where the OOM
/// deflate left it (`held`) until the host sets a different target, so the driver does not
/// inflate straight back into the memory shortage.
pub(crate) fn effective_target(
    geometry: &PageGeometry,
    num_pages: u32,
    oom_hold: Option<u32>,
    held_pages: u64,
) -> u64 {
    match oom_hold {
        Some(n) if n == num_pages => held_pages.min(target_pages(geometry, num_pages)),
        _ => target_pages(geometry, num_pages),
    }
}

/// The OOM hold after the host's config changed and `num_pages` now reads as it does: the hold
/// ends only when the host set a different target. Other config changes (a free page hint
/// command id, `actual` echoes) leave it, or the balloon would inflate straight back into the
/// shortage the OOM deflate answered.
pub(crate) fn hold_after(oom_hold: Option<u32>, num_pages: u32) -> Option<u32> {
    oom_hold.filter(|&n| n == num_pages)
}

/// Guest pages one OOM notification gives back: the C driver's 256 balloon (4 KiB) pages, in
/// whole guest pages, at least one.
pub(crate) fn oom_pages(geometry: &PageGeometry) -> usize {
    256usize
        .checked_div(geometry.pfns_per_page())
        .unwrap_or(1)
        .max(1)
}
