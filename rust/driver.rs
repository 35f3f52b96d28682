// SPDX-License-Identifier: GPL-2.0

//! The virtio-balloon device driver: wires the pure logic of [`crate::balloon`] to the
//! [`crate::virtio`] and [`crate::mm`] layers. Safe code only.
//!
//! Work runs on the freezable system workqueue (one delayed work item per device), never in
//! the virtqueue callback, which only signals [`AckEvent`].
//!
//! Lock order: `state` → mm's balloon list lock → `acked`'s IRQ-safe lock. `stats` is never
//! held together with `state`. `stats_stop` is a leaf, taken in hard IRQ. The migration
//! callback only try-locks `state`, because compaction can be entered from an allocation made
//! while `state` is held.

use crate::{
    balloon::{
        features::{Queue, QueueMap, ALL_QUEUES, F_MUST_TELL_HOST, F_STATS_VQ},
        pfn::{PageGeometry, PfnBatch, PfnError},
        stats::StatsBuf,
        target::{self, Headroom, Step},
    },
    kext,
    mm::{self, impl_has_balloon_list, BalloonList, BalloonPage, Migrate, PageRef},
    virtio::{
        self, AckEvent, BufferQueue, ConfigLe32, Device, DeviceId, DeviceReadable, QueueIndex,
        Virtqueue,
    },
};
use kernel::{
    c_str, new_mutex, new_spinlock_irq,
    prelude::*,
    sync::{aref::ARef, Arc, ArcBorrow, Mutex, SpinLockIrq},
    time::{delay::fsleep, msecs_to_jiffies, Delta},
    workqueue::{
        self, impl_has_delayed_work, impl_has_work, new_delayed_work, new_work, DelayedWork, Work,
        WorkItem,
    },
    ThisModule,
};

/// Virtio device ID of the balloon.
const VIRTIO_ID_BALLOON: u32 = 5;
/// `struct virtio_balloon_config::num_pages`: the host's target, in 4 KiB units.
const NUM_PAGES: ConfigLe32 = ConfigLe32(0);
/// `struct virtio_balloon_config::actual`: what the balloon holds, in 4 KiB units.
const ACTUAL: ConfigLe32 = ConfigLe32(4);
/// Buffers of at most 256 PFNs posted together, so the host works on several at once.
const INFLIGHT: usize = 8;
/// Delay before retrying after the allocator said no (the C driver's 200 ms).
const OUT_OF_PUFF_RETRY_MS: u32 = 200;
/// Delay before checking again whether the guest has room above the floor.
const FLOOR_RETRY_MS: u32 = 1000;
/// Delay before retrying a deflate whose pages are all being migrated.
const ISOLATED_RETRY_MS: u32 = 10;

/// The inflate and deflate queues.
struct Queues {
    inflate: Virtqueue,
    deflate: Virtqueue,
}

/// Everything the resize work and the migration callback share, under `VBalloon::state`.
///
/// # Invariants
///
/// `held` counts the pages on `VBalloon::list` plus those compaction has isolated from it, and
/// `actual` in config space says `held` after every completed transfer. `leaving` is empty
/// between steps. Once `stopping` is set, no resize work is pending or queued again.
struct State {
    /// `None` once teardown has reset the device.
    queues: Option<Queues>,
    /// Guest pages in the balloon (on the list or being migrated).
    held: u64,
    /// `INFLIGHT` PFN arrays, allocated at probe so inflating never allocates for them.
    batches: KVec<PfnBatch>,
    /// Pages taken off the list and waiting for the host's deflate ack; capacity reserved.
    leaving: KVec<BalloonPage>,
    /// Set by remove: the work item must not run or queue itself again.
    stopping: bool,
    /// One log line per episode of holding at the floor / running out of memory.
    floor_logged: bool,
    puff_logged: bool,
}

impl DeviceReadable for StatsBuf {
    fn bytes(&self) -> &[u8] {
        self.wire()
    }
}

/// The statistics queue and the buffer it answers with, under `VBalloon::stats`.
struct Stats {
    /// `None` without `STATS_VQ`, and after teardown.
    queue: Option<BufferQueue<StatsBuf>>,
    /// The buffer while the driver holds it (before the first post, or if a post failed).
    spare: Option<KBox<StatsBuf>>,
    /// Requests answered, for the log.
    served: u64,
}

/// One bound balloon device.
#[pin_data]
pub(crate) struct VBalloon {
    dev: ARef<Device>,
    geometry: PageGeometry,
    floor_bytes: u64,
    queues: QueueMap,
    #[pin]
    acked: AckEvent,
    #[pin]
    state: Mutex<State>,
    #[pin]
    list: BalloonList<VBalloon>,
    #[pin]
    resize: DelayedWork<VBalloon>,
    #[pin]
    stats: Mutex<Stats>,
    /// Set by remove (under this IRQ-safe lock, which the stats callback takes to queue work),
    /// so no stats work is queued once remove has flushed it.
    #[pin]
    stats_stop: SpinLockIrq<bool>,
    #[pin]
    stats_work: Work<VBalloon, 1>,
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self> for VBalloon { self.resize }
}
impl_has_work! {
    impl HasWork<Self, 1> for VBalloon { self.stats_work }
}
impl_has_balloon_list!(VBalloon, list);

const MIB: u64 = 1 << 20;

/// Moves up to `n` pages from `take` into the batches (encoding their PFNs) and on to `keep`.
/// Stops when `take` runs dry, the batches are full, or a page cannot be encoded (that page
/// goes to `reject`). Returns how many pages were encoded and kept.
fn batch_pages(
    batches: &mut [PfnBatch],
    n: usize,
    mut take: impl FnMut() -> Option<BalloonPage>,
    mut keep: impl FnMut(BalloonPage),
    reject: impl FnOnce(BalloonPage, PfnError),
) -> usize {
    batches.iter_mut().for_each(PfnBatch::clear);
    let mut got = 0usize;
    for batch in batches.iter_mut() {
        while got < n && !batch.is_full() {
            let Some(page) = take() else {
                return got;
            };
            if let Err(e) = batch.push_page(page.pfn()) {
                reject(page, e);
                return got;
            }
            keep(page);
            got = got.saturating_add(1);
        }
    }
    got
}

/// The wire bytes of every batch, empty ones included (the queue skips those).
fn wires(batches: &[PfnBatch]) -> [&[u8]; INFLIGHT] {
    let mut bufs: [&[u8]; INFLIGHT] = [&[]; INFLIGHT];
    for (buf, batch) in bufs.iter_mut().zip(batches) {
        *buf = batch.wire();
    }
    bufs
}

impl VBalloon {
    fn max_step_pages(&self) -> usize {
        INFLIGHT.saturating_mul(self.geometry.pages_per_buffer())
    }

    /// Queues the resize work after `delay_ms`. Callers hold `state` (or run before teardown
    /// can start), so nothing is queued after `remove` has set `stopping`.
    fn schedule(this: ArcBorrow<'_, Self>, delay_ms: u32) {
        // Already pending is fine: the pending run will look at the newest target.
        let _ = workqueue::system_freezable()
            .enqueue_delayed(Arc::<Self>::from(this), msecs_to_jiffies(delay_ms));
    }

    fn write_actual(&self, held: u64) {
        self.dev
            .write(ACTUAL, target::actual_units(&self.geometry, held));
    }

    /// One step towards the host's target. Returns the delay before the next step, if any.
    fn step(&self, st: &mut State) -> Option<u32> {
        let num_pages = self.dev.read(NUM_PAGES);
        let headroom = Headroom {
            available_bytes: self.geometry.pages_to_bytes(mm::mem_available_pages()),
            floor_bytes: self.floor_bytes,
        };
        let step = target::next_step(
            &self.geometry,
            num_pages,
            st.held,
            headroom,
            self.max_step_pages(),
        );
        let result = match step {
            Step::Inflate(n) => self.fill(st, n).map(|got| {
                st.floor_logged = false;
                if got < n {
                    if !st.puff_logged {
                        dev_info!(
                            self.dev.as_dev(),
                            "out of puff: allocator refused a page at {} MiB held; retrying every {} ms\n",
                            self.held_mib(st.held),
                            OUT_OF_PUFF_RETRY_MS
                        );
                        st.puff_logged = true;
                    }
                    OUT_OF_PUFF_RETRY_MS
                } else {
                    0
                }
            }),
            Step::Deflate(n) => {
                self.leak(st, n).map(|got| if got == 0 { ISOLATED_RETRY_MS } else { 0 })
            }
            Step::AtFloor => {
                if !st.floor_logged {
                    dev_info!(
                        self.dev.as_dev(),
                        "holding at {} MiB (host asks for {} MiB): guest MemAvailable {} MiB is at the floor (floor_mib={})\n",
                        self.held_mib(st.held),
                        self.held_mib(target::target_pages(&self.geometry, num_pages)),
                        headroom.available_bytes / MIB,
                        self.floor_bytes / MIB
                    );
                    st.floor_logged = true;
                }
                Ok(FLOOR_RETRY_MS)
            }
            Step::Done => {
                st.floor_logged = false;
                st.puff_logged = false;
                return None;
            }
        };
        match result {
            Ok(delay) => Some(delay),
            Err(e) => {
                dev_err!(
                    self.dev.as_dev(),
                    "device stopped taking buffers ({:?}); balloon frozen at {} MiB\n",
                    e,
                    self.held_mib(st.held)
                );
                None
            }
        }
    }

    fn held_mib(&self, pages: u64) -> u64 {
        self.geometry.pages_to_bytes(pages) / MIB
    }

    /// Allocates up to `n` pages, puts them in the balloon and tells the host. Returns how
    /// many went in (fewer when the allocator said no).
    fn fill(&self, st: &mut State, n: usize) -> Result<usize> {
        let State {
            queues,
            batches,
            held,
            ..
        } = st;
        let q = queues.as_mut().ok_or(ENODEV)?;
        let got = batch_pages(
            batches,
            n,
            BalloonPage::alloc,
            // The page is the host's from here; migration cannot touch it before the ack,
            // because it try-locks `state`, which we hold.
            |page| self.list.enqueue(page),
            |page, _| {
                dev_warn!(
                    self.dev.as_dev(),
                    "page frame {} is above what 32-bit balloon PFNs can say; not ballooning it\n",
                    page.pfn()
                );
            },
        );
        *held = held.saturating_add(got as u64);
        let r = q.inflate.transfer(&wires(batches), &self.acked);
        self.write_actual(*held);
        r.map(|()| got)
    }

    /// Takes up to `n` pages out of the balloon, tells the host, then frees them. Returns how
    /// many were given back (0 when every page left is being migrated right now).
    fn leak(&self, st: &mut State, n: usize) -> Result<usize> {
        let State {
            queues,
            batches,
            held,
            leaving,
            ..
        } = st;
        let q = queues.as_mut().ok_or(ENODEV)?;
        // `leaving` has room for a whole step (reserved at probe), so keeping never fails.
        let room = leaving.capacity().saturating_sub(leaving.len());
        let got = batch_pages(
            batches,
            n.min(room),
            || self.list.dequeue(),
            |page| {
                if let Err(e) = leaving.push_within_capacity(page) {
                    self.list.enqueue(e.0);
                }
            },
            // Pages went in only after their PFN encoded, so this cannot happen; if it did,
            // keep the page in the balloon rather than lose track of it.
            |page, _| self.list.enqueue(page),
        );
        if got == 0 {
            return Ok(0);
        }
        match q.deflate.transfer(&wires(batches), &self.acked) {
            Ok(()) => {
                // Told and acked: the pages are the guest's again.
                leaving.clear();
                *held = held.saturating_sub(got as u64);
                self.write_actual(*held);
                Ok(got)
            }
            Err(e) => {
                // The host was not told: the pages stay in the balloon.
                while let Some(page) = leaving.pop() {
                    self.list.enqueue(page);
                }
                Err(e)
            }
        }
    }

    /// Gives every page back (telling the host), then resets the device.
    fn teardown(&self) {
        let mut st = self.state.lock();
        let max = self.max_step_pages();
        let mut waits = 0u32;
        while st.held > 0 {
            match self.leak(&mut st, max) {
                Ok(0) => {
                    // Pages under migration; they come back to the list shortly.
                    drop(st);
                    fsleep(Delta::from_millis(1));
                    st = self.state.lock();
                    waits = waits.saturating_add(1);
                    if waits > 5000 {
                        dev_err!(
                            self.dev.as_dev(),
                            "{} pages stuck in migration at teardown\n",
                            st.held
                        );
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    dev_err!(
                        self.dev.as_dev(),
                        "could not tell the host about {} pages ({:?}); freeing them after reset\n",
                        st.held,
                        e
                    );
                    break;
                }
            }
        }
        // Reset the device and delete the queues; pages still on the list (only if the host
        // stopped answering) are no longer the host's and are freed when the list drops.
        st.queues = None;
        st.held = 0;
    }
}

impl VBalloon {
    /// Refills the statistics buffer from the kernel's counters and gives it to the host:
    /// at `ready` (the first, already valid buffer) and whenever the host returns it.
    fn refresh_stats(&self) {
        let mut guard = self.stats.lock();
        let Stats {
            queue,
            spare,
            served,
        } = &mut *guard;
        let Some(q) = queue.as_mut() else {
            return;
        };
        let Some(mut buf) = spare.take().or_else(|| q.take_used()) else {
            return;
        };
        buf.fill(&mm::stats_sample(), mm::page_shift());
        match q.post(buf) {
            Ok(()) => *served = served.wrapping_add(1),
            Err((e, buf)) => {
                dev_warn!(
                    self.dev.as_dev(),
                    "could not post the stats buffer ({:?})\n",
                    e
                );
                *spare = Some(buf);
            }
        }
    }
}

impl WorkItem<1> for VBalloon {
    type Pointer = Arc<VBalloon>;

    fn run(this: Arc<VBalloon>) {
        this.refresh_stats();
    }
}

impl WorkItem for VBalloon {
    type Pointer = Arc<VBalloon>;

    fn run(this: Arc<VBalloon>) {
        let mut st = this.state.lock();
        if st.stopping {
            return;
        }
        if let Some(delay) = this.step(&mut st) {
            Self::schedule(this.as_arc_borrow(), delay);
        }
    }
}

impl Migrate for VBalloon {
    fn migrate(&self, new: PageRef<'_>, old: PageRef<'_>) -> Result {
        let mut guard = self.state.try_lock().ok_or(EAGAIN)?;
        let State {
            queues, batches, ..
        } = &mut *guard;
        let q = queues.as_mut().ok_or(EAGAIN)?;
        let batch = batches.first_mut().ok_or(EAGAIN)?;
        batch.clear();
        batch.push_page(new.pfn()).map_err(|_| EAGAIN)?;
        q.inflate.transfer(&[batch.wire()], &self.acked)?;
        batch.clear();
        batch.push_page(old.pfn()).map_err(|_| EAGAIN)?;
        q.deflate.transfer(&[batch.wire()], &self.acked)?;
        Ok(())
    }
}

impl virtio::Driver for VBalloon {
    const ID_TABLE: &'static [DeviceId] = &[DeviceId::new(VIRTIO_ID_BALLOON), DeviceId::END];
    const FEATURES: &'static [u32] = &[F_MUST_TELL_HOST, F_STATS_VQ];

    fn probe(dev: &Device) -> Result<Arc<Self>> {
        let Some(geometry) = PageGeometry::new(mm::page_shift()) else {
            dev_err!(
                dev.as_dev(),
                "page size 2^{} is not usable with 4 KiB balloon PFNs\n",
                mm::page_shift()
            );
            return Err(EINVAL);
        };
        let map = QueueMap::new(|bit| dev.has_feature(bit));
        let mut names = KVec::with_capacity(usize::from(map.count()), GFP_KERNEL)?;
        for q in ALL_QUEUES.into_iter().filter(|q| map.index(*q).is_some()) {
            names.push(queue_name(q), GFP_KERNEL)?;
        }
        let mut vqs = dev.find_vqs::<Self>(&names)?.into_iter();
        // `find_vqs` returns the queues in `map` order: inflate, deflate, then the optional ones.
        let inflate = vqs.next().ok_or(EINVAL)?;
        let deflate = vqs.next().ok_or(EINVAL)?;
        let stats_queue = if map.index(Queue::Stats).is_some() {
            Some(BufferQueue::new(vqs.next().ok_or(EINVAL)?))
        } else {
            None
        };
        let stats_buf = KBox::new(StatsBuf::new(), GFP_KERNEL)?;
        let mut batches = KVec::with_capacity(INFLIGHT, GFP_KERNEL)?;
        for _ in 0..INFLIGHT {
            batches.push(PfnBatch::new(geometry), GFP_KERNEL)?;
        }
        let leaving = KVec::with_capacity(
            INFLIGHT.saturating_mul(geometry.pages_per_buffer()),
            GFP_KERNEL,
        )?;
        let floor_bytes = crate::module_parameters::floor_mib
            .value()
            .saturating_mul(MIB);
        let this = Arc::pin_init(
            try_pin_init!(VBalloon {
                dev: dev.into(),
                geometry,
                floor_bytes,
                queues: map,
                acked <- AckEvent::new(),
                state <- new_mutex!(State {
                    queues: Some(Queues { inflate, deflate }),
                    held: 0,
                    batches,
                    leaving,
                    stopping: false,
                    floor_logged: false,
                    puff_logged: false,
                }, "vballoon::state"),
                // Pages leave the managed count, so MemTotal follows the balloon.
                list <- BalloonList::new(true),
                resize <- new_delayed_work!("vballoon::resize"),
                stats <- new_mutex!(Stats {
                    queue: stats_queue,
                    spare: Some(stats_buf),
                    served: 0,
                }, "vballoon::stats"),
                stats_stop <- new_spinlock_irq!(false, "vballoon::stats_stop"),
                stats_work <- new_work!("vballoon::stats_work"),
            }? Error),
            GFP_KERNEL,
        )?;
        dev_info!(
            dev.as_dev(),
            "vballoon bound: {} KiB pages, {} PFNs per page, floor {} MiB\n",
            geometry.page_bytes() / 1024,
            geometry.pfns_per_page(),
            floor_bytes / MIB
        );
        Ok(this)
    }

    fn ready(this: ArcBorrow<'_, Self>) {
        // The first stats buffer goes out already filled with valid values.
        this.refresh_stats();
        Self::schedule(this, 0);
    }

    fn config_changed(this: ArcBorrow<'_, Self>) {
        // Any context: only queue the work. Config changes are off before remove runs.
        Self::schedule(this, 0);
    }

    fn vq_callback(this: ArcBorrow<'_, Self>, queue: QueueIndex) {
        match this.queues.queue(queue) {
            Some(Queue::Inflate | Queue::Deflate) => this.acked.signal(),
            Some(Queue::Stats) => {
                // The host returned the stats buffer: refresh it in process context.
                let stop = this.stats_stop.lock();
                if !*stop {
                    let _ = workqueue::system_freezable()
                        .enqueue::<Arc<Self>, 1>(Arc::<Self>::from(this));
                }
            }
            _ => {}
        }
    }

    fn remove(_dev: &Device, this: Arc<Self>) {
        *this.stats_stop.lock() = true;
        kext::flush_work(&this.stats_work);
        this.state.lock().stopping = true;
        kext::flush_delayed_work(&this.resize);
        this.teardown();
        let served = {
            let mut stats = this.stats.lock();
            // Resets the device if the host still holds the buffer; then it is freed.
            stats.queue = None;
            stats.served
        };
        dev_info!(
            this.dev.as_dev(),
            "unbound; answered {} stats requests\n",
            served
        );
    }
}

/// The name each queue is created with.
fn queue_name(q: Queue) -> &'static CStr {
    match q {
        Queue::Inflate => c_str!("inflate"),
        Queue::Deflate => c_str!("deflate"),
        Queue::Stats => c_str!("stats"),
        Queue::FreePage => c_str!("free_page_vq"),
        Queue::Reporting => c_str!("reporting_vq"),
    }
}

/// The module: registers the driver for as long as it is loaded.
#[pin_data]
pub(crate) struct VBalloonModule {
    #[pin]
    _reg: virtio::Registration<VBalloon>,
}

impl kernel::InPlaceModule for VBalloonModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _reg <- virtio::Registration::new(c_str!("vballoon"), module),
        })
    }
}
