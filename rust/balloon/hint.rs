// SPDX-License-Identifier: GPL-2.0

//! Free page hinting (`FREE_PAGE_HINT`): the command-id protocol with the host.
//!
//! The host writes a command id to `free_page_hint_cmd_id` and signals a config change. A new
//! id (not STOP, not DONE, not the one being served) starts a cycle: the driver sends the id,
//! then hands the host blocks of free memory (as device-writable buffers) for as long as the
//! host's id stays the same and free blocks can be had, then sends STOP. The driver keeps
//! every hinted block until the host says DONE (at the end of the migration), then gives them
//! all back; under memory pressure a shrinker gives them back earlier.

/// The host ends a cycle: the driver stops hinting (`VIRTIO_BALLOON_CMD_ID_STOP`).
pub(crate) const CMD_ID_STOP: u32 = 0;
/// The host is done with the hints: every hinted page goes back (`VIRTIO_BALLOON_CMD_ID_DONE`).
pub(crate) const CMD_ID_DONE: u32 = 1;

/// What a command id from the host asks of the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HintCommand {
    /// Give every hinted block back.
    ReturnAll,
    /// A new cycle with this id.
    Start(u32),
    /// Nothing new (STOP, or the cycle being served).
    Nothing,
}

/// The C driver's `report_free_page_func` decision, for the host's `received` id and the id
/// of the cycle served last (`active`).
pub(crate) fn on_cmd_id(received: u32, active: Option<u32>) -> HintCommand {
    match received {
        CMD_ID_DONE => HintCommand::ReturnAll,
        CMD_ID_STOP => HintCommand::Nothing,
        id if Some(id) == active => HintCommand::Nothing,
        id => HintCommand::Start(id),
    }
}

/// A cycle goes on while the host's id is the one it started with.
pub(crate) fn keep_hinting(received: u32, active: u32) -> bool {
    received == active
}

/// Blocks to give back for a shrinker asking for `nr_to_scan` pages, with `block_pages` pages
/// a block: enough blocks to cover the request, at least one.
pub(crate) fn blocks_to_shrink(nr_to_scan: u64, block_pages: u64) -> u64 {
    // Checked division: no panic path, even for a zero block size (which gives 0).
    match (
        nr_to_scan.checked_div(block_pages),
        nr_to_scan.checked_rem(block_pages),
    ) {
        (Some(q), Some(r)) => q.saturating_add(u64::from(r != 0)).max(1),
        _ => 0,
    }
}

/// Buffers a hint cycle may have outstanding on a ring of `ring_size` descriptors: one
/// descriptor a block, two kept free for the command ids (start and stop), as C keeps one.
pub(crate) fn hint_ring_room(ring_size: usize, outstanding: usize) -> bool {
    outstanding.saturating_add(2) < ring_size
}

/// Whether a ring of `ring_size` descriptors can hint at all: a block beside the two command
/// ids. A smaller ring is refused at probe with a log line rather than left to time out.
pub(crate) fn hint_ring_usable(ring_size: usize) -> bool {
    hint_ring_room(ring_size, 0)
}

/// A command id as the driver sends it (`__virtio32`: see [`WireEndian`]).
pub(crate) struct CmdIdBuf {
    wire: [u8; 4],
}

impl CmdIdBuf {
    /// The id `id` in the device's byte order.
    pub(crate) fn new(id: u32, endian: super::wire::WireEndian) -> Self {
        Self {
            wire: endian.u32(id),
        }
    }

    /// The bytes on the wire.
    pub(crate) fn wire(&self) -> &[u8] {
        &self.wire
    }
}
