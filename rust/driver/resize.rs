// SPDX-License-Identifier: GPL-2.0

//! Inflating and deflating towards the host's target (`num_pages`), one step per run of the
//! resize work, and giving everything back at teardown.

use super::{enqueue_resize, State, VBalloon, ACTUAL, MIB, NUM_PAGES};
use crate::{
    balloon::{
        block,
        counters::Phase,
        pfn::{PfnBatch, PfnError},
        target::{self, Headroom, Step},
    },
    kext,
    mm::{self, BalloonPage},
    virtio::{DeviceReadable, Stream},
};
use core::sync::atomic::Ordering;
use kernel::{
    prelude::*,
    sync::{Arc, ArcBorrow},
    time::{delay::fsleep, msecs_to_jiffies, Delta},
    workqueue::{self, WorkItem},
};

/// Delay before retrying after the allocator said no (the C driver's 200 ms).
const OUT_OF_PUFF_RETRY_MS: u32 = 200;
/// Delay before checking again whether the guest has room above the floor.
const FLOOR_RETRY_MS: u32 = 1000;
/// Delay before retrying a deflate whose pages are all being migrated.
const ISOLATED_RETRY_MS: u32 = 10;
/// How often teardown says it is still waiting for pages under migration.
const TEARDOWN_LOG_EVERY_MS: u32 = 5000;

impl DeviceReadable for PfnBatch {
    fn bytes(&self) -> &[u8] {
        self.wire()
    }
}

/// Encodes the PFNs of `pages`, in order, into `batch`. Returns how many were encoded (all,
/// unless the batch is full or a PFN does not fit), and whether encoding stopped at a page
/// whose PFN does not fit in 32 bits.
fn encode(batch: &mut PfnBatch, pages: &[BalloonPage]) -> (usize, bool) {
    batch.clear();
    let mut got = 0usize;
    for page in pages {
        match batch.push_page(page.pfn()) {
            Ok(()) => got = got.saturating_add(1),
            Err(e) => return (got, e == PfnError::TooHigh),
        }
    }
    (got, false)
}

/// Pages held in per-buffer vectors.
fn count(bufs: &[KVec<BalloonPage>]) -> usize {
    bufs.iter().fold(0usize, |n, b| n.saturating_add(b.len()))
}

impl VBalloon {
    fn block_pages(&self) -> usize {
        1usize.checked_shl(self.block_order).unwrap_or(1)
    }

    fn max_step_pages(&self) -> usize {
        self.inflight
            .saturating_mul(self.geometry.pages_per_buffer())
    }

    /// Queues a resize step now (config change, probe).
    pub(super) fn kick(this: ArcBorrow<'_, Self>) {
        enqueue_resize(this);
    }

    /// Queues a resize step after `delay_ms` (0: now). Callers hold `state` and have checked
    /// `stopping`, so nothing is queued once remove has set it.
    fn schedule(this: ArcBorrow<'_, Self>, delay_ms: u32) {
        if delay_ms == 0 {
            enqueue_resize(this);
        } else {
            // Already pending is fine: the earlier timer queues the same step.
            let _ = workqueue::system_freezable().enqueue_delayed::<Arc<Self>, 2>(
                Arc::<Self>::from(this),
                msecs_to_jiffies(delay_ms),
            );
        }
    }

    pub(super) fn write_actual(&self, held: u64) {
        self.counters.set_held(held);
        // Fails only on a transport without config writes; the host then reads no `actual`.
        let _ = self
            .dev
            .write(ACTUAL, target::actual_units(&self.geometry, held));
    }

    /// What the next step is, from the host's target and what the balloon holds. Logs floor
    /// episodes. `None`: nothing to do (or the target cannot be read).
    fn plan(&self, st: &mut State) -> Option<Step> {
        let num_pages = match self.dev.read(NUM_PAGES) {
            Ok(n) => n,
            Err(e) => {
                dev_err!(
                    self.dev.as_dev(),
                    "cannot read the host's target ({:?}); balloon stays at {} MiB\n",
                    e,
                    self.held_mib(st.held)
                );
                self.counters.error(e.to_errno());
                return None;
            }
        };
        let fresh = self.target_changed.swap(false, Ordering::AcqRel);
        let host_target = target::target_pages(&self.geometry, num_pages);
        self.counters.set_target(num_pages, host_target);
        if fresh {
            kext::trace::target(self.dev.as_dev(), num_pages, host_target, st.held);
            // A new target ends a hold after an OOM deflate (any other config change, such
            // as a hint command id, does not), and a hold at the floor for it is a new
            // episode (one log line each).
            st.oom_hold = target::hold_after(st.oom_hold, num_pages);
            st.floor_logged = false;
        }
        let target = target::effective_target(&self.geometry, num_pages, st.oom_hold, st.held);
        let headroom = Headroom {
            available_bytes: self.geometry.pages_to_bytes(mm::mem_available_pages()),
            floor_bytes: self.floor_bytes,
        };
        // The first step towards a new target is one block (or one buffer): the host sees
        // the balloon move as soon as that is allocated, not after a whole step.
        let max = if fresh {
            block::first_step_pages(self.geometry.pages_per_buffer(), self.block_pages())
                .min(self.max_step_pages())
        } else {
            self.max_step_pages()
        };
        let step = target::next_step_to(&self.geometry, target, st.held, headroom, max);
        match step {
            Step::Inflate(_) | Step::Deflate(_) => self.counters.set_phase(Phase::Moving, 0),
            Step::AtFloor => {
                let available = self.geometry.bytes_to_pages(headroom.available_bytes);
                self.counters.set_phase(Phase::Floor, available);
                kext::trace::floor(
                    self.dev.as_dev(),
                    st.held,
                    target,
                    available,
                    self.geometry.bytes_to_pages(self.floor_bytes),
                );
                if !st.floor_logged {
                    self.counters.floor_episode();
                    dev_info!(
                        self.dev.as_dev(),
                        "holding at {} MiB (host asks for {} MiB): guest MemAvailable {} MiB is at the floor (floor_mib={})\n",
                        self.held_mib(st.held),
                        self.held_mib(target),
                        headroom.available_bytes / MIB,
                        self.floor_bytes / MIB
                    );
                    st.floor_logged = true;
                }
            }
            Step::Done => {
                st.floor_logged = false;
                st.puff_logged = false;
                let phase = if st.oom_hold.is_some() {
                    Phase::OomHold
                } else {
                    Phase::AtTarget
                };
                self.counters.set_phase(phase, 0);
            }
        }
        Some(step)
    }

    /// Inflates by up to `n` pages: allocates them holding only `incoming` (so the OOM path
    /// and migration, which need `state`, never wait for an allocation), then tells the host
    /// with `state` held. Returns the delay before the next step, if any.
    fn inflate(&self, n: usize) -> Option<u32> {
        let mut incoming = self.incoming.lock();
        let room = incoming.iter().fold(0usize, |r, b| {
            r.saturating_add(b.capacity().saturating_sub(b.len()))
        });
        let want = n.min(room);
        let block_pages = self.block_pages();
        let mut blocks = true;
        let mut short = false;
        let mut got = count(&incoming);
        // Fills the per-buffer vectors in order, each full before the next.
        let mut cur = 0usize;
        let mut put = |incoming: &mut KVec<KVec<BalloonPage>>, page: BalloonPage| {
            let mut page = Some(page);
            while let Some(p) = page.take() {
                let Some(buf) = incoming.get_mut(cur) else {
                    // No room (cannot happen: `want` is within the room); free it.
                    return false;
                };
                if let Err(e) = buf.push_within_capacity(p) {
                    page = Some(e.0);
                    cur = cur.saturating_add(1);
                }
            }
            true
        };
        while got < want {
            // Whole blocks while the allocator has them free and one fits; then single pages.
            if blocks && block::take_block(want.saturating_sub(got), block_pages) {
                if let Some(split) = BalloonPage::alloc_block(self.block_order) {
                    for page in split {
                        if put(&mut incoming, page) {
                            got = got.saturating_add(1);
                        }
                    }
                    continue;
                }
                blocks = false;
            }
            match BalloonPage::alloc() {
                Some(page) => {
                    if put(&mut incoming, page) {
                        got = got.saturating_add(1);
                    }
                }
                None => {
                    short = true;
                    break;
                }
            }
        }
        let mut st = self.state.lock();
        if st.stopping {
            incoming.iter_mut().for_each(|b| b.clear());
            return None;
        }
        // A few pages of progress while MemAvailable hovers at the floor do not end the floor
        // episode (only reaching the target or a new target does): no line per wobble.
        match self.fill(&mut st, &mut incoming) {
            Ok(_) if short => {
                self.counters.alloc_failed();
                self.counters.set_phase(Phase::OutOfMemory, 0);
                if !st.puff_logged {
                    dev_info!(
                        self.dev.as_dev(),
                        "out of puff: allocator refused a page at {} MiB held; retrying every {} ms\n",
                        self.held_mib(st.held),
                        OUT_OF_PUFF_RETRY_MS
                    );
                    st.puff_logged = true;
                }
                Some(OUT_OF_PUFF_RETRY_MS)
            }
            Ok(_) => Some(0),
            Err(e) => {
                self.log_stopped(&st, e);
                None
            }
        }
    }

    fn log_stopped(&self, st: &State, e: Error) {
        self.counters.error(e.to_errno());
        self.counters.set_phase(Phase::HostStopped, 0);
        dev_err!(
            self.dev.as_dev(),
            "device stopped taking buffers ({:?}); balloon frozen at {} MiB\n",
            e,
            self.held_mib(st.held)
        );
    }

    /// Tells the host about the pages in `incoming`, one buffer per vector, streaming: each
    /// buffer is posted as soon as it is encoded, and its pages join the balloon as soon as
    /// the host has used it, while the host works on the next. Pages the host was not told
    /// about go back to the allocator. Returns how many went in.
    fn fill(&self, st: &mut State, incoming: &mut KVec<KVec<BalloonPage>>) -> Result<usize> {
        let State {
            queues,
            batches,
            held,
            high_pages,
            ..
        } = st;
        let q = queues.as_ref().ok_or(ENODEV)?;
        let mut high = 0usize;
        let mut went_in = 0usize;
        let t = q.inflate.stream(batches, &self.acked, |ev| match ev {
            Stream::Fill(i, batch) => {
                let Some(pages) = incoming.get_mut(i) else {
                    return false;
                };
                let (mut told, too_high) = encode(batch, pages);
                if too_high {
                    // Pages whose PFN does not fit in 32 bits cannot be ballooned: free them
                    // and encode the rest (a second pass only for a vector that has one, so
                    // the common case looks at each page once).
                    let before = pages.len();
                    kext::retain(pages, |p| self.geometry.first_pfn(p.pfn()).is_ok());
                    high = high.saturating_add(before.saturating_sub(pages.len()));
                    told = encode(batch, pages).0;
                }
                // Only pages the host is told about may join the balloon: one that did not fit
                // in the buffer (the vectors are filled to fit, so none should) goes back to
                // the allocator here.
                pages.truncate(told);
                told > 0
            }
            Stream::Used(i) => {
                // Told and acked: the pages are the host's. While the host worked they were
                // ours alone, off the list, so migration could not move them.
                if let Some(pages) = incoming.get_mut(i) {
                    let n = pages.len();
                    self.list.enqueue_all(pages);
                    went_in = went_in.saturating_add(n);
                    *held = held.saturating_add(n as u64);
                    // `actual` is written once, after the stream: on a vhost-user device
                    // every config write is a SET_CONFIG round trip to the host (the C
                    // driver also writes it once per step).
                    self.counters.set_held(*held);
                }
                true
            }
        });
        // On an error, the buffers that were posted but not reported used may have reached the
        // host (which is reset now): their pages go into the balloon too, never back to the
        // guest. The rest were never posted: back to the allocator.
        for pages in incoming.iter_mut().take(t.posted) {
            let n = pages.len();
            self.list.enqueue_all(pages);
            went_in = went_in.saturating_add(n);
            *held = held.saturating_add(n as u64);
        }
        incoming.iter_mut().for_each(|b| b.clear());
        if high > 0 {
            if *high_pages == 0 {
                dev_warn!(
                    self.dev.as_dev(),
                    "pages above 16 TiB cannot be ballooned (32-bit PFNs); they are left to the guest\n"
                );
            }
            *high_pages = high_pages.saturating_add(high as u64);
        }
        self.write_actual(*held);
        if went_in > 0 {
            self.counters.inflated(went_in as u64);
            kext::trace::step(self.dev.as_dev(), true, went_in as u64, t.waited_ns, *held);
        }
        t.result.map(|()| went_in)
    }

    /// Takes up to `n` pages out of the balloon, tells the host, then frees them, streaming:
    /// each buffer is posted as soon as it is filled, and its pages are freed as soon as the
    /// host has used it. Returns how many were given back (0 when every page left is being
    /// migrated right now).
    pub(super) fn leak(&self, st: &mut State, n: usize) -> Result<usize> {
        let State {
            queues,
            batches,
            held,
            leaving,
            ..
        } = st;
        let q = queues.as_ref().ok_or(ENODEV)?;
        let mut taken = 0usize;
        let mut freed = 0usize;
        let t = q.deflate.stream(batches, &self.acked, |ev| match ev {
            Stream::Fill(i, batch) => {
                let Some(pages) = leaving.get_mut(i) else {
                    return false;
                };
                // The most recently inflated pages first: whole blocks, in PFN order, so the
                // guest gets its contiguous memory back too.
                taken =
                    taken.saturating_add(self.list.dequeue_into(pages, n.saturating_sub(taken)));
                let (got, _) = encode(batch, pages);
                // Only encodable pages went in, so all encode; any other stays in the balloon.
                while pages.len() > got {
                    let Some(page) = pages.pop() else { break };
                    self.list.enqueue(page);
                }
                got > 0
            }
            Stream::Used(i) => {
                // Told and acked: the pages are the guest's again.
                if let Some(pages) = leaving.get_mut(i) {
                    let got = pages.len();
                    mm::free_all(pages);
                    freed = freed.saturating_add(got);
                    *held = held.saturating_sub(got as u64);
                    // `actual` is written once, after the stream (see `fill`).
                    self.counters.set_held(*held);
                }
                true
            }
        });
        // The host may not have been told about the rest: they stay in the balloon.
        for pages in leaving.iter_mut() {
            self.list.enqueue_all(pages);
        }
        if freed > 0 || t.result.is_err() {
            self.write_actual(*held);
        }
        if freed > 0 {
            self.counters.deflated(freed as u64);
            kext::trace::step(self.dev.as_dev(), false, freed as u64, t.waited_ns, *held);
        }
        t.result.map(|()| freed)
    }

    /// Gives every page back, telling the host, and lets go of the queues. Pages that
    /// compaction holds isolated are waited for (they come back to the list shortly), never
    /// given up on. If the host cannot be told, the pages stay in the balloon and the error is
    /// returned: they are freed only once the device has been reset, by the binding's drop
    /// after remove, or by restore after a suspend (`BalloonList::release_all`, which counts
    /// isolated pages too).
    pub(super) fn teardown(&self) -> Result {
        let mut result = Ok(());
        let mut st = self.state.lock();
        let max = self.max_step_pages();
        let mut waited_ms = 0u32;
        while st.held > 0 {
            match self.leak(&mut st, max) {
                Ok(0) => {
                    drop(st);
                    fsleep(Delta::from_millis(1));
                    waited_ms = waited_ms.saturating_add(1);
                    st = self.state.lock();
                    if waited_ms.checked_rem(TEARDOWN_LOG_EVERY_MS) == Some(0) {
                        dev_info!(
                            self.dev.as_dev(),
                            "teardown waiting for {} balloon pages under migration\n",
                            self.list.isolated()
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    dev_err!(
                        self.dev.as_dev(),
                        "could not tell the host about {} MiB ({:?}); freeing it after the device is reset\n",
                        self.held_mib(st.held),
                        e
                    );
                    self.write_actual(st.held);
                    self.counters.error(e.to_errno());
                    result = Err(e);
                    break;
                }
            }
        }
        st.queues = None;
        result
    }
}

impl WorkItem<0> for VBalloon {
    type Pointer = Arc<VBalloon>;

    fn run(this: Arc<VBalloon>) {
        this.awake_processing(crate::balloon::wakeup::ADJUST);
        let step = {
            let mut st = this.state.lock();
            if st.stopping {
                return;
            }
            this.plan(&mut st)
        };
        let delay = match step {
            Some(Step::Inflate(n)) => this.inflate(n),
            Some(Step::Deflate(n)) => {
                let mut st = this.state.lock();
                if st.stopping {
                    return;
                }
                match this.leak(&mut st, n) {
                    Ok(0) => Some(ISOLATED_RETRY_MS),
                    Ok(_) => Some(0),
                    Err(e) => {
                        this.log_stopped(&st, e);
                        None
                    }
                }
            }
            Some(Step::AtFloor) => Some(FLOOR_RETRY_MS),
            Some(Step::Done) | None => None,
        };
        // Idle (done, stopped, or waiting for room above the floor): the system may suspend,
        // unless a new target or a stats request came in meanwhile.
        if matches!(step, Some(Step::AtFloor) | Some(Step::Done) | None) || delay.is_none() {
            this.awake_done();
        }
        if let Some(delay) = delay {
            let st = this.state.lock();
            if !st.stopping {
                Self::schedule(this.as_arc_borrow(), delay);
            }
        }
    }
}

impl WorkItem<2> for VBalloon {
    type Pointer = Arc<VBalloon>;

    fn run(this: Arc<VBalloon>) {
        let st = this.state.lock();
        if !st.stopping {
            enqueue_resize(this.as_arc_borrow());
        }
    }
}
