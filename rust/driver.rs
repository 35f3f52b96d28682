// SPDX-License-Identifier: GPL-2.0

//! The virtio-balloon device driver: wires the pure logic of [`crate::balloon`] to the
//! [`crate::virtio`] and [`crate::mm`] layers. Safe code only.
//!
//! Work runs on the freezable system workqueue (one delayed work item per device), never in
//! the virtqueue callback, which only signals [`AckEvent`].
//!
//! Lock order: `state` → mm's balloon list lock → `acked`'s IRQ-safe lock. The migration
//! callback only try-locks `state`, because compaction can be entered from an allocation made
//! while `state` is held.

use crate::{
    balloon::{
        features::F_MUST_TELL_HOST,
        pfn::{PageGeometry, PfnBatch, PfnError},
        target::{self, Headroom, Step},
    },
    kext,
    mm::{self, impl_has_balloon_list, BalloonList, BalloonPage, Migrate, PageRef},
    virtio::{self, AckEvent, ConfigLe32, Device, DeviceId, QueueIndex, Virtqueue},
};
use kernel::{
    c_str, new_mutex,
    prelude::*,
    sync::{aref::ARef, Arc, ArcBorrow, Mutex},
    time::{delay::fsleep, msecs_to_jiffies, Delta},
    workqueue::{self, impl_has_delayed_work, new_delayed_work, DelayedWork, WorkItem},
    ThisModule,
};

/// Virtio device ID of the balloon.
const VIRTIO_ID_BALLOON: u32 = 5;
/// `struct virtio_balloon_config::num_pages`: the host's target, in 4 KiB units.
const NUM_PAGES: ConfigLe32 = ConfigLe32(0);
/// `struct virtio_balloon_config::actual`: what the balloon holds, in 4 KiB units.
const ACTUAL: ConfigLe32 = ConfigLe32(4);
/// Queue indices (dense, Linux order).
const INFLATE_Q: QueueIndex = 0;
const DEFLATE_Q: QueueIndex = 1;
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

/// One bound balloon device.
#[pin_data]
pub(crate) struct VBalloon {
    dev: ARef<Device>,
    geometry: PageGeometry,
    floor_bytes: u64,
    #[pin]
    acked: AckEvent,
    #[pin]
    state: Mutex<State>,
    #[pin]
    list: BalloonList<VBalloon>,
    #[pin]
    resize: DelayedWork<VBalloon>,
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self> for VBalloon { self.resize }
}
impl_has_balloon_list!(VBalloon, list);

const MIB: u64 = 1 << 20;

impl VBalloon {
    fn max_step_pages(&self) -> usize {
        INFLIGHT * self.geometry.pages_per_buffer()
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
            available_bytes: mm::mem_available_bytes(),
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
        pages * self.geometry.page_bytes() / MIB
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
        let mut got = 0usize;
        'outer: for batch in batches.iter_mut() {
            batch.clear();
            while got < n && !batch.is_full() {
                let Some(page) = BalloonPage::alloc() else {
                    break 'outer;
                };
                match batch.push_page(page.pfn()) {
                    Ok(()) => {}
                    Err(PfnError::TooHigh) => {
                        dev_warn!(self.dev.as_dev(), "page frame {} is above what 32-bit balloon PFNs can say; not ballooning it\n", page.pfn());
                        break 'outer;
                    }
                    Err(PfnError::Full) => break,
                }
                // The page is the host's from here; migration cannot touch it before the ack,
                // because it try-locks `state`, which we hold.
                self.list.enqueue(page);
                got += 1;
            }
        }
        for batch in batches.iter_mut().skip_while(|b| !b.is_empty()).skip(1) {
            batch.clear();
        }
        let mut bufs: [&[u8]; INFLIGHT] = [&[]; INFLIGHT];
        for (buf, batch) in bufs.iter_mut().zip(batches.iter()) {
            *buf = batch.wire();
        }
        *held += got as u64;
        let r = q.inflate.transfer(&bufs, &self.acked);
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
        let mut got = 0usize;
        'outer: for batch in batches.iter_mut() {
            batch.clear();
            while got < n && !batch.is_full() {
                let Some(page) = self.list.dequeue() else {
                    break 'outer;
                };
                // Pages went in only after their PFN encoded, so this cannot fail; if it did,
                // keep the page in the balloon rather than lose track of it.
                if batch.push_page(page.pfn()).is_err() {
                    self.list.enqueue(page);
                    break 'outer;
                }
                if let Err(e) = leaving.push_within_capacity(page) {
                    self.list.enqueue(e.0);
                    break 'outer;
                }
                got += 1;
            }
        }
        if got == 0 {
            return Ok(0);
        }
        let mut bufs: [&[u8]; INFLIGHT] = [&[]; INFLIGHT];
        for (buf, batch) in bufs.iter_mut().zip(batches.iter()) {
            *buf = batch.wire();
        }
        match q.deflate.transfer(&bufs, &self.acked) {
            Ok(()) => {
                // Told and acked: the pages are the guest's again.
                leaving.clear();
                *held -= got as u64;
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
                    waits += 1;
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
    const FEATURES: &'static [u32] = &[F_MUST_TELL_HOST];

    fn probe(dev: &Device) -> Result<Arc<Self>> {
        let Some(geometry) = PageGeometry::new(mm::page_shift()) else {
            dev_err!(
                dev.as_dev(),
                "page size 2^{} is not usable with 4 KiB balloon PFNs\n",
                mm::page_shift()
            );
            return Err(EINVAL);
        };
        let mut vqs = dev.find_vqs::<Self>(&[c_str!("inflate"), c_str!("deflate")])?;
        let deflate = vqs.pop().ok_or(EINVAL)?;
        let inflate = vqs.pop().ok_or(EINVAL)?;
        let mut batches = KVec::with_capacity(INFLIGHT, GFP_KERNEL)?;
        for _ in 0..INFLIGHT {
            batches.push(PfnBatch::new(geometry), GFP_KERNEL)?;
        }
        let leaving = KVec::with_capacity(INFLIGHT * geometry.pages_per_buffer(), GFP_KERNEL)?;
        let floor_bytes = crate::module_parameters::floor_mib
            .value()
            .saturating_mul(MIB);
        let this = Arc::pin_init(
            try_pin_init!(VBalloon {
                dev: dev.into(),
                geometry,
                floor_bytes,
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
        Self::schedule(this, 0);
    }

    fn config_changed(this: ArcBorrow<'_, Self>) {
        // Any context: only queue the work. Config changes are off before remove runs.
        Self::schedule(this, 0);
    }

    fn vq_callback(this: ArcBorrow<'_, Self>, queue: QueueIndex) {
        if queue == INFLATE_Q || queue == DEFLATE_Q {
            this.acked.signal();
        }
    }

    fn remove(_dev: &Device, this: Arc<Self>) {
        this.state.lock().stopping = true;
        kext::flush_delayed_work(&this.resize);
        this.teardown();
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
