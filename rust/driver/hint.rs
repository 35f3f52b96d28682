// SPDX-License-Identifier: GPL-2.0

//! Free page hinting (`FREE_PAGE_HINT`) for live migration, as the C driver: on a new command
//! id from the host, send the id, then blocks of `MAX_PAGE_ORDER` free pages as
//! device-writable buffers until the id changes or no free block is left, then STOP. Hinted
//! blocks are held until the host says DONE; under memory pressure the shrinker gives them
//! back earlier. The work runs on the driver's own freezable workqueue.
//!
//! Locks: `hint` (mutex) → the hint queue's slot lock; `hinted` (spinlock) is a leaf, the
//! only lock the shrinker takes, and never held across an allocation.

use super::{VBalloon, HINT_CMD_ID, MIB};
use crate::{
    balloon::hint::{self, CmdIdBuf, HintCommand},
    mm::{PageBlock, Shrink},
    virtio::{OwnedQueue, Returned},
};
use core::sync::atomic::Ordering;
use kernel::{
    prelude::*,
    sync::{Arc, ArcBorrow},
    time::{delay::fsleep, Delta},
    workqueue::WorkItem,
};

/// The hinting queue and the cycle, under `VBalloon::hint`.
pub(super) struct Hint {
    /// `None` without `FREE_PAGE_HINT`, after teardown and while suspended.
    pub(super) queue: Option<OwnedQueue<CmdIdBuf, PageBlock>>,
    /// The id of the cycle served last.
    active: Option<u32>,
    /// Between a cycle's start and the host's DONE: returned blocks are kept.
    open: bool,
    /// The host's command id as last read. The config field is read again only after a
    /// config change (as C): while a cycle runs, QEMU's config reads do not show its id.
    received: u32,
}

impl Hint {
    pub(super) fn new(queue: Option<OwnedQueue<CmdIdBuf, PageBlock>>) -> Self {
        Self {
            queue,
            active: None,
            open: false,
            received: hint::CMD_ID_STOP,
        }
    }
}

impl crate::virtio::DeviceReadable for CmdIdBuf {
    fn bytes(&self) -> &[u8] {
        self.wire()
    }
}

impl VBalloon {
    /// A config change: if hinting is on, look at the host's command id (any context).
    pub(super) fn hint_requested(this: ArcBorrow<'_, Self>) {
        if this.hint_stop.load(Ordering::Acquire) {
            return;
        }
        this.hint_cmd_changed.store(true, Ordering::Release);
        if let Some(wq) = this.hint_wq.as_ref() {
            // Already queued is fine: the queued run reads the newest id.
            let _ = wq.queue().enqueue::<Arc<Self>, 3>(Arc::<Self>::from(this));
        }
    }

    /// Takes back what the device returned: hint blocks are kept while a cycle is open
    /// (they go back at DONE or to the shrinker), freed otherwise; command ids are freed.
    fn reap_hints(&self, q: &mut OwnedQueue<CmdIdBuf, PageBlock>, open: bool) {
        while let Some(r) = q.reap() {
            if let Returned::Writable(block) = r {
                if open {
                    let mut held = self.hinted.lock();
                    // Room for every block of guest memory was reserved at probe.
                    if let Err(e) = held.push_within_capacity(block) {
                        drop(held);
                        drop(e.0);
                    }
                }
            }
        }
    }

    /// Gives up to `blocks` hinted blocks back to the allocator; returns the pages freed.
    pub(super) fn return_hinted(&self, blocks: u64) -> u64 {
        let mut pages = 0u64;
        for _ in 0..blocks {
            // Pop under the lock, free outside it.
            let Some(block) = self.hinted.lock().pop() else {
                break;
            };
            pages = pages.saturating_add(block.pages());
        }
        pages
    }

    /// The host's command id: read from config after a config change, else the last one read.
    fn received_cmd_id(&self, last: &mut u32) -> u32 {
        if self.hint_cmd_changed.swap(false, Ordering::AcqRel) {
            if let Ok(id) = self.dev.read(HINT_CMD_ID) {
                *last = id;
            }
        }
        *last
    }

    /// One cycle with id `id`: the id, blocks while the host keeps the id, then STOP.
    fn hint_cycle(&self, q: &mut OwnedQueue<CmdIdBuf, PageBlock>, id: u32, received: &mut u32) {
        let Ok(start) = KBox::new(CmdIdBuf::new(id, self.endian), GFP_KERNEL) else {
            return;
        };
        if q.post_readable(start).is_err() {
            dev_warn!(
                self.dev.as_dev(),
                "free page hint: could not send id {}\n",
                id
            );
            return;
        }
        let mut pages = 0u64;
        let mut waited = 0u32;
        let why = loop {
            if self.hint_stop.load(Ordering::Acquire) {
                break "unbinding";
            }
            if !hint::keep_hinting(self.received_cmd_id(received), id) {
                break "the host ended the cycle";
            }
            self.reap_hints(q, true);
            if !hint::hint_ring_room(q.ring_size(), q.outstanding()) {
                // The host is busy with the ring: let it catch up (bounded by host_timeout_ms).
                waited = waited.saturating_add(1);
                if waited > self.acked.limit_ms() {
                    break "the host stopped taking hints";
                }
                fsleep(Delta::from_millis(1));
                continue;
            }
            let Some(block) = PageBlock::alloc(self.hint_order) else {
                break "no free block left";
            };
            let n = block.pages();
            if q.post_writable(block).is_err() {
                break "the ring refused a block";
            }
            pages = pages.saturating_add(n);
        };
        if let Ok(stop) = KBox::new(CmdIdBuf::new(hint::CMD_ID_STOP, self.endian), GFP_KERNEL) {
            let _ = q.post_readable(stop);
        }
        // Take back what the host returns now (bounded: 200 ms), so the held blocks are where
        // the shrinker finds them rather than on the ring until the next config change.
        for _ in 0..200 {
            self.reap_hints(q, true);
            if q.outstanding() == 0 {
                break;
            }
            fsleep(Delta::from_millis(1));
        }
        self.counters.hinted(self.geometry.pages_to_bytes(pages));
        dev_info!(
            self.dev.as_dev(),
            "free page hint: id {} hinted {} MiB ({})\n",
            id,
            self.geometry.pages_to_bytes(pages) / MIB,
            why
        );
    }

    /// At teardown or suspend: no more hint work runs after this returns, every hinted block
    /// goes back, and the queue goes (blocks still on it are freed after the reset).
    pub(super) fn stop_hinting(&self, wait: bool) {
        self.hint_stop.store(true, Ordering::Release);
        if wait {
            crate::kext::flush_work(&self.hint_work);
        }
        let mut h = self.hint.lock();
        h.queue = None;
        h.open = false;
        drop(h);
        self.return_hinted(u64::MAX);
    }

    /// At resume: the new queue; hinting takes requests again.
    pub(super) fn resume_hinting(&self, queue: Option<OwnedQueue<CmdIdBuf, PageBlock>>) {
        let mut h = self.hint.lock();
        h.queue = queue;
        h.active = None;
        h.open = false;
        h.received = hint::CMD_ID_STOP;
        drop(h);
        self.hint_stop.store(false, Ordering::Release);
    }
}

impl WorkItem<3> for VBalloon {
    type Pointer = Arc<VBalloon>;

    fn run(this: Arc<VBalloon>) {
        if this.hint_stop.load(Ordering::Acquire) {
            return;
        }
        let mut guard = this.hint.lock();
        let Hint {
            queue,
            active,
            open,
            received,
        } = &mut *guard;
        let Some(q) = queue.as_mut() else {
            return;
        };
        this.reap_hints(q, *open);
        match hint::on_cmd_id(this.received_cmd_id(received), *active) {
            HintCommand::ReturnAll => {
                *open = false;
                let pages = this.return_hinted(u64::MAX);
                if pages > 0 {
                    dev_info!(
                        this.dev.as_dev(),
                        "free page hint: host done, {} MiB back to the guest\n",
                        this.geometry.pages_to_bytes(pages) / MIB
                    );
                }
            }
            HintCommand::Start(id) => {
                *active = Some(id);
                *open = true;
                this.hint_cycle(q, id, received);
            }
            HintCommand::Nothing => {}
        }
    }
}

impl Shrink for VBalloon {
    fn count(&self) -> u64 {
        let blocks = self.hinted.lock().len() as u64;
        blocks.saturating_mul(1u64.checked_shl(self.hint_order).unwrap_or(0))
    }

    fn scan(&self, nr_to_scan: u64) -> u64 {
        // Blocks the host has returned but the hint work has not taken back yet count too;
        // never wait for the hint work (it may be allocating).
        if let Some(mut h) = self.hint.try_lock() {
            let open = h.open;
            if let Some(q) = h.queue.as_mut() {
                self.reap_hints(q, open);
            }
        }
        let block_pages = 1u64.checked_shl(self.hint_order).unwrap_or(0);
        self.return_hinted(hint::blocks_to_shrink(nr_to_scan, block_pages))
    }
}
