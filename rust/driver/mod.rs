// SPDX-License-Identifier: GPL-2.0

//! The virtio-balloon device driver: wires the pure logic of [`crate::balloon`] to the
//! [`crate::virtio`] and [`crate::mm`] layers. Safe code only. One file per capability:
//! - this file: the device's config layout and feature table, the driver's state, probe and
//!   remove;
//! - [`resize`]: inflating and deflating towards the host's target, and teardown;
//! - [`migrate`]: telling the host when compaction moves a balloon page;
//! - [`stats`]: the statistics queue;
//! - [`oom`]: deflate on OOM;
//! - [`report`]: free page reporting;
//! - [`hint`]: free page hinting;
//! - [`pm`]: suspend and resume;
//! - [`observe`]: the counters in sysfs and debugfs.
//!
//! Work runs on the freezable system workqueue, never in the virtqueue callbacks, which only
//! signal [`AckEvent`] or queue work.
//!
//! Lock order (outer first): `incoming` → `state` → a virtqueue's slot lock (inside `virtio`) →
//! mm's balloon list lock → `acked`'s IRQ-safe lock. Pages are allocated holding `incoming`
//! only; with `state` held the driver allocates no pages, but does wait for the host (a
//! transfer) and writes config space (which, on vhost-user, is a message to the host), so the
//! OOM notifier, which runs inside some task's failed allocation, only try-locks `state`,
//! bounded by the host limit. The mm wrappers' registration mutexes are leaves, held only
//! across their own (un)registration. `stats` → the stats queue's slot lock; `stats` is never
//! held together with `state`. `stats_stop` → `awake`, both taken in hard IRQ; `awake` is a
//! leaf but for the PM core's own wakeup-source lock inside it. The migration
//! callback only try-locks `state`, because compaction can be entered from an allocation made
//! while `state` is held. `observe` → `kext::shared_dir`'s lock (the module-wide debugfs
//! directory's mutex, a leaf); the counters' readers (sysfs, debugfs) take no lock at all, so
//! removing their files under either cannot wait on one of ours.

mod hint;
mod migrate;
mod observe;
mod oom;
mod pm;
mod report;
mod resize;
mod stats;

use crate::{
    balloon::{
        block,
        counters::Counters,
        features::{
            Queue, QueueMap, ALL_QUEUES, F_DEFLATE_ON_OOM, F_FREE_PAGE_HINT, F_MUST_TELL_HOST,
            F_PAGE_POISON, F_REPORTING, F_STATS_VQ, F_VERSION_1,
        },
        hint::CmdIdBuf,
        pfn::{PageGeometry, PfnBatch},
        stats::StatsBuf,
        target::buffers_in_flight,
        validate,
        wakeup::{self, Wakeup},
        wire::WireEndian,
    },
    kext::{
        self,
        irqlock::{new_irq_lock, IrqLock},
    },
    mm::{
        self, impl_has_field, BalloonList, BalloonPage, OomNotifier, PageBlock, PageReporting,
        Shrinker,
    },
    virtio::{
        self, config_field, virtio_device_table, AckEvent, BufferQueue, ConfigField, Device,
        DeviceId, Le32, OfferedFeatures, OwnedQueue, QueueIndex, QueueSpec, Virtqueue, VqFactory,
    },
};
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::{
    c_str, new_mutex, new_spinlock,
    prelude::*,
    sync::{aref::ARef, Arc, ArcBorrow, Mutex, SpinLock},
    workqueue::{
        self, impl_has_delayed_work, impl_has_work, new_delayed_work, new_work, DelayedWork, Work,
    },
};

/// Virtio device ID of the balloon.
const VIRTIO_ID_BALLOON: u32 = 5;

virtio_device_table!(BALLOON_IDS, [DeviceId::new(VIRTIO_ID_BALLOON)]);

/// `struct virtio_balloon_config`: the layout the config fields below are checked against.
#[repr(C)]
#[allow(
    dead_code,
    reason = "a layout: read and written through `config_field!`"
)]
struct BalloonConfig {
    /// The host's target, in 4 KiB units.
    num_pages: Le32,
    /// What the balloon holds, in 4 KiB units.
    actual: Le32,
    /// Free page hinting command id (with `FREE_PAGE_HINT`).
    free_page_hint_cmd_id: Le32,
    /// The value freed pages hold (with `PAGE_POISON`).
    poison_val: Le32,
}

const NUM_PAGES: ConfigField<BalloonConfig> = config_field!(BalloonConfig, num_pages);
const ACTUAL: ConfigField<BalloonConfig> = config_field!(BalloonConfig, actual);
const HINT_CMD_ID: ConfigField<BalloonConfig> = config_field!(
    BalloonConfig,
    free_page_hint_cmd_id,
    feature = F_FREE_PAGE_HINT
);
const POISON_VAL: ConfigField<BalloonConfig> =
    config_field!(BalloonConfig, poison_val, feature = F_PAGE_POISON);

const MIB: u64 = 1 << 20;

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
/// between steps, with room for a whole step. Once `stopping` is set, no
/// resize work is pending or queued again.
struct State {
    /// `None` once the device has been reset (teardown gave up on it).
    queues: Option<Queues>,
    /// Guest pages in the balloon (on the list or being migrated).
    held: u64,
    /// One PFN array per buffer in flight, allocated at probe so inflating never allocates
    /// for them.
    batches: KVec<KBox<PfnBatch>>,
    /// Pages taken off the list, waiting for the host's deflate ack: one vector per buffer in
    /// flight, each with room for a buffer's pages.
    leaving: KVec<KVec<BalloonPage>>,
    /// Set by remove: the work items must not run or queue themselves again.
    stopping: bool,
    /// One log line per episode of holding at the floor / running out of memory.
    floor_logged: bool,
    puff_logged: bool,
    /// Pages refused because their PFN does not fit in 32 bits (logged once).
    high_pages: u64,
    /// The host's `num_pages` when the OOM path last deflated: the balloon stays where it is
    /// until the host sets a new target.
    oom_hold: Option<u32>,
    /// Guest pages given back on OOM since bind.
    oom_deflated: u64,
}

/// One bound balloon device.
///
/// # Invariants
///
/// The mm registrations (`list`, `oom`, `reporting`, `shrinker`) are fields of this `VBalloon`,
/// initialised in place, and its drop unregisters them and empties `list` (waiting out pages
/// compaction holds) before any field goes: nothing mm calls back into is dropped while mm can
/// still call. Field order does not matter for it.
#[pin_data(PinnedDrop)]
pub(crate) struct VBalloon {
    dev: ARef<Device>,
    geometry: PageGeometry,
    floor_bytes: u64,
    /// Inflating takes blocks of `2^block_order` pages where it can (module parameter
    /// `block_kib`; 0: single pages only).
    block_order: u32,
    queues: QueueMap,
    /// Buffers posted per step: 8, or the ring size if smaller (`buffers_in_flight`).
    inflight: usize,
    /// `DEFLATE_ON_OOM` was negotiated.
    deflate_on_oom: bool,
    /// Byte order of ring data (PFN arrays, stats): LE, or the guest's on a legacy device.
    endian: WireEndian,
    /// The reporting queue and the pages per report, with `REPORTING` (replaced on resume).
    #[pin]
    report_vq: Mutex<Option<(Virtqueue, usize)>>,
    /// Config changes and stats requests being handled: the device's wakeup source is held
    /// while any is (as the C driver's mask does) so the system does not suspend half-way.
    #[pin]
    awake: IrqLock<Wakeup>,
    /// What the balloon has done since bind, for operators (see [`observe`]).
    counters: Counters,
    /// Module parameter `block_kib` as this binding took it.
    block_kib: u32,
    /// The sysfs and debugfs files, from the first `ready` until remove.
    #[pin]
    observe: Mutex<Option<observe::Observe>>,
    /// Order of the hinted blocks (`MAX_PAGE_ORDER`).
    hint_order: u32,
    /// Set at teardown and suspend: no hint work runs or is queued.
    hint_stop: AtomicBool,
    /// A config change since the hint work last read the command id.
    hint_cmd_changed: AtomicBool,
    /// The hinting work's own freezable queue, with `FREE_PAGE_HINT`.
    hint_wq: Option<kext::FreezableQueue>,
    #[pin]
    hint: Mutex<hint::Hint>,
    /// Blocks hinted in the open cycle, held until the host is done (or the shrinker asks);
    /// room for all of guest memory reserved at probe.
    #[pin]
    hinted: SpinLock<KVec<KBox<PageBlock>>>,
    #[pin]
    hint_work: Work<VBalloon, 3>,
    #[pin]
    shrinker: Shrinker<VBalloon>,
    /// Set by a config change, cleared by the next resize step (ends an OOM hold).
    target_changed: AtomicBool,
    /// Pages allocated for an inflate, waiting for the host's ack before joining the list: one
    /// vector per buffer in flight, each with room for a buffer's pages. Allocation happens
    /// holding this lock only.
    #[pin]
    incoming: Mutex<KVec<KVec<BalloonPage>>>,
    #[pin]
    acked: AckEvent,
    #[pin]
    state: Mutex<State>,
    #[pin]
    list: BalloonList<VBalloon>,
    #[pin]
    oom: OomNotifier<VBalloon>,
    #[pin]
    reporting: PageReporting<VBalloon>,
    /// One step towards the target; queued at once on a config change.
    #[pin]
    resize: Work<VBalloon, 0>,
    /// Queues `resize` after a back-off (floor, allocation failure, pages under migration).
    #[pin]
    retry: DelayedWork<VBalloon, 2>,
    #[pin]
    stats: Mutex<stats::Stats>,
    /// Set by remove (under this IRQ-safe lock, which the stats callback takes to queue work),
    /// so no stats work is queued once remove has flushed it.
    #[pin]
    stats_stop: IrqLock<bool>,
    #[pin]
    stats_work: Work<VBalloon, 1>,
}

impl_has_work! {
    impl HasWork<Self, 0> for VBalloon { self.resize }
    impl HasWork<Self, 1> for VBalloon { self.stats_work }
    impl HasWork<Self, 3> for VBalloon { self.hint_work }
}
impl_has_delayed_work! {
    impl HasDelayedWork<Self, 2> for VBalloon { self.retry }
}
impl_has_field!(VBalloon, list: BalloonList<VBalloon>);
impl_has_field!(VBalloon, oom: OomNotifier<VBalloon>);
impl_has_field!(VBalloon, reporting: PageReporting<VBalloon>);
impl_has_field!(VBalloon, shrinker: Shrinker<VBalloon>);

impl VBalloon {
    fn held_mib(&self, pages: u64) -> u64 {
        self.geometry.pages_to_bytes(pages) / MIB
    }
}

#[vtable]
impl virtio::Driver for VBalloon {
    const ID_TABLE: virtio::IdTable = &BALLOON_IDS;
    const FEATURES: &'static [u32] = &[
        F_MUST_TELL_HOST,
        F_STATS_VQ,
        F_DEFLATE_ON_OOM,
        F_FREE_PAGE_HINT,
        F_PAGE_POISON,
        F_REPORTING,
    ];

    fn module_init() {
        kext::shared_dir::init();
    }

    fn validate(_dev: &Device<Core<'_>>, features: &mut OfferedFeatures<'_>) -> Result {
        let refused = validate::refused(mm::freed_pages(), |bit| features.has(bit));
        for bit in refused.into_iter().flatten() {
            features.clear(bit);
        }
        Ok(())
    }

    fn probe(dev: &Device<Core<'_>>, vqs: VqFactory<'_, Self>) -> Result<Arc<Self>> {
        if !dev.can_read_config() {
            // As the C driver: without config reads there is no target to follow.
            dev_err!(dev.as_dev(), "the transport cannot read config space\n");
            return Err(EINVAL);
        }
        let Some(geometry) = PageGeometry::new(mm::page_shift()) else {
            dev_err!(
                dev.as_dev(),
                "page size 2^{} is not usable with 4 KiB balloon PFNs\n",
                mm::page_shift()
            );
            return Err(EINVAL);
        };
        let map = QueueMap::new(|bit| dev.has_feature(bit));
        let mut vqs = vqs.create(&queue_names(&map)?)?.into_iter();
        // `create` returns the queues in `map` order: inflate, deflate, then the optional ones.
        let inflate = vqs.next().ok_or(EINVAL)?;
        let deflate = vqs.next().ok_or(EINVAL)?;
        let stats_queue = if map.index(Queue::Stats).is_some() {
            Some(BufferQueue::new(vqs.next().ok_or(EINVAL)?)?)
        } else {
            None
        };
        let hint_queue = hint_queue(dev, &map, &mut vqs)?;
        let report_vq = reporting_queue(dev, &map, &mut vqs)?;
        let hint_wq = match hint_queue {
            Some(_) => Some(kext::FreezableQueue::new(c_str!("vballoon-hint"))?),
            None => None,
        };
        let hint_order = mm::hint_block_order();
        // One slot per block of guest memory, so holding hinted blocks never allocates.
        let max_blocks = mm::totalram_pages()
            .checked_shr(hint_order)
            .unwrap_or(0)
            .saturating_add(1);
        let hinted = if hint_queue.is_some() {
            KVec::with_capacity(usize::try_from(max_blocks).unwrap_or(0), GFP_KERNEL)?
        } else {
            KVec::new()
        };
        let deflate_on_oom = dev.has_feature(F_DEFLATE_ON_OOM);
        let adjust_managed = !deflate_on_oom;
        if dev.has_feature(F_PAGE_POISON) {
            // Before DRIVER_OK, as the spec wants; never changed afterwards.
            dev.write(POISON_VAL, validate::poison_val(mm::freed_pages()))?;
        }
        // One descriptor per buffer: never post more buffers than the ring has descriptors,
        // or the ring would refuse some of a step's pages.
        let ring = inflate.ring_size()?.min(deflate.ring_size()?);
        let Some(inflight) = buffers_in_flight(ring) else {
            dev_err!(dev.as_dev(), "inflate/deflate ring has no descriptors\n");
            return Err(EINVAL);
        };
        let endian = WireEndian::for_this_guest(dev.has_feature(F_VERSION_1));
        let stats_buf = KBox::new(StatsBuf::with_endian(endian), GFP_KERNEL)?;
        let mut batches = KVec::with_capacity(inflight, GFP_KERNEL)?;
        for _ in 0..inflight {
            kext::push(
                &mut batches,
                KBox::new(PfnBatch::with_endian(geometry, endian), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        let incoming = page_vectors(inflight, geometry.pages_per_buffer())?;
        let leaving = page_vectors(inflight, geometry.pages_per_buffer())?;
        let block_kib = kext::param::block_kib();
        let block_order = match block::block_order(
            block_kib,
            mm::page_shift(),
            mm::max_page_order(),
        ) {
            Ok(order) => order,
            Err(why) => {
                dev_err!(
                    dev.as_dev(),
                    "block_kib={} is not usable ({:?}): use 0 (single pages) or a power of two up to {} KiB\n",
                    block_kib,
                    why,
                    geometry.page_bytes().saturating_mul(1u64.checked_shl(mm::max_page_order()).unwrap_or(0)) / 1024
                );
                return Err(EINVAL);
            }
        };
        let floor_bytes = kext::param::floor_mib().saturating_mul(MIB);
        let this = Arc::pin_init(
            try_pin_init!(VBalloon {
                dev: dev.into(),
                geometry,
                floor_bytes,
                block_order,
                queues: map,
                inflight,
                deflate_on_oom,
                endian,
                report_vq <- new_mutex!(report_vq, "vballoon::report_vq"),
                awake <- new_irq_lock!(Wakeup::default(), "vballoon::awake"),
                counters: Counters::new(),
                block_kib,
                observe <- new_mutex!(None, "vballoon::observe"),
                hint_order,
                hint_stop: AtomicBool::new(false),
                hint_cmd_changed: AtomicBool::new(false),
                hint_wq,
                hint <- new_mutex!(hint::Hint::new(hint_queue), "vballoon::hint"),
                hinted <- new_spinlock!(hinted, "vballoon::hinted"),
                hint_work <- new_work!("vballoon::hint_work"),
                // SAFETY: A field of this `VBalloon`, whose drop unregisters it first.
                shrinker <- unsafe { Shrinker::new() },
                target_changed: AtomicBool::new(false),
                incoming <- new_mutex!(incoming, "vballoon::incoming"),
                acked <- AckEvent::new(kext::param::host_timeout_ms()),
                state <- new_mutex!(State {
                    queues: Some(Queues { inflate, deflate }),
                    held: 0,
                    batches,
                    leaving,
                    stopping: false,
                    floor_logged: false,
                    puff_logged: false,
                    high_pages: 0,
                    oom_hold: None,
                    oom_deflated: 0,
                }, "vballoon::state"),
                // Pages leave the managed count, so MemTotal follows the balloon; with
                // deflate-on-OOM they stay counted (the guest may take them back), as in C.
                // SAFETY: A field of this `VBalloon`, whose drop empties it (`release_all`)
                // before any other field goes.
                list <- unsafe { BalloonList::new(adjust_managed) },
                // SAFETY: A field of this `VBalloon`, whose drop unregisters it first.
                oom <- unsafe { OomNotifier::new() },
                // SAFETY: A field of this `VBalloon`, whose drop unregisters it first.
                reporting <- unsafe { PageReporting::new() },
                resize <- new_work!("vballoon::resize"),
                retry <- new_delayed_work!("vballoon::retry"),
                stats <- new_mutex!(stats::Stats::new(stats_queue, stats_buf), "vballoon::stats"),
                stats_stop <- new_irq_lock!(false, "vballoon::stats_stop"),
                stats_work <- new_work!("vballoon::stats_work"),
            }? Error),
            GFP_KERNEL,
        )?;
        if deflate_on_oom {
            this.oom.register()?;
        }
        if this.hint_wq.is_some() {
            // Hinted blocks go back under memory pressure.
            this.shrinker.register(c_str!("vballoon-hint"))?;
        }
        // The balloon holds a wakeup source while it works on a new target, as the C driver.
        dev.set_wakeup_capable();
        dev_info!(
            dev.as_dev(),
            "vballoon bound: {} KiB pages, {} PFNs per page, {} buffers in flight (ring {}), {} KiB inflate blocks, floor {} MiB{}{}{}\n",
            geometry.page_bytes() / 1024,
            geometry.pfns_per_page(),
            inflight,
            ring,
            geometry.page_bytes().saturating_mul(1u64.checked_shl(block_order).unwrap_or(0)) / 1024,
            floor_bytes / MIB,
            if deflate_on_oom { ", deflate on OOM" } else { "" },
            if this.report_vq.lock().is_some() { ", free page reporting" } else { "" },
            if this.hint_wq.is_some() { ", free page hinting" } else { "" }
        );
        Ok(this)
    }

    fn ready(dev: &Device<Core<'_>>, this: ArcBorrow<'_, Self>) {
        // The counters' files hold the binding, so they are added only now that `remove`
        // is sure to run (and only once: `ready` follows every resume too).
        Self::start_observing(this, dev);
        // The first stats buffer goes out already filled with valid values.
        this.refresh_stats();
        // Reports go out only once the device is live.
        this.start_reporting();
        Self::kick(this);
    }

    fn config_changed(this: ArcBorrow<'_, Self>) {
        // Any context: only queue the work, at once (a pending back-off does not delay it).
        // Config changes are off before remove runs.
        this.target_changed.store(true, Ordering::Release);
        this.counters.config_changed(kext::boottime_ms());
        this.stay_awake(wakeup::ADJUST);
        Self::hint_requested(this);
        Self::kick(this);
    }

    fn vq_callback(this: ArcBorrow<'_, Self>, queue: QueueIndex) {
        match this.queues.queue(queue) {
            Some(Queue::Inflate | Queue::Deflate | Queue::Reporting) => this.acked.signal(),
            // Created without a callback (`queue_names`).
            Some(Queue::FreePage) => {}
            Some(Queue::Stats) => Self::stats_requested(this),
            _ => {}
        }
    }

    fn remove(_dev: &Device<Core<'_>>, this: ArcBorrow<'_, Self>) {
        // The files hold the binding: they go first.
        this.stop_observing();
        this.quiesce();
        // On error the pages stay in the balloon until the adapter has reset the device; the
        // binding's drop frees them then (`release_all`).
        let _ = this.teardown();
        this.relax();
        let served = this.drop_stats_queue();
        let oom = this.held_mib(this.state.lock().oom_deflated);
        dev_info!(
            this.dev.as_dev(),
            "unbound; answered {} stats requests, reported {} MiB and hinted {} MiB of free pages, gave back {} MiB on OOM\n",
            served,
            this.counters.reported_bytes() / MIB,
            this.counters.hinted_bytes() / MIB,
            oom
        );
    }

    fn shutdown(dev: &Device<Core<'_>>, this: ArcBorrow<'_, Self>) {
        // As the C driver: nothing of ours runs against the device once the adapter breaks
        // and resets it. Nothing is given back: the machine goes down.
        this.quiesce();
        dev_info!(
            dev.as_dev(),
            "shutdown: stopped with {} MiB in the balloon\n",
            this.held_mib(this.state.lock().held)
        );
    }

    fn freeze(dev: &Device<Core<'_>>, this: ArcBorrow<'_, Self>) -> Result {
        this.freeze(dev)
    }

    fn restore(
        dev: &Device<Core<'_>>,
        this: ArcBorrow<'_, Self>,
        vqs: VqFactory<'_, Self>,
    ) -> Result {
        this.restore(dev, vqs)
    }
}

use kernel::device::Core;

impl VBalloon {
    /// Stops every source of work against the device, in order, for remove and shutdown: from
    /// here, waits on the host end within `host_timeout_ms`; no report, OOM call, shrinker call,
    /// hint, stats or resize work runs or is queued when this returns. The queues still work.
    fn quiesce(&self) {
        // Every wait on the host ends within `host_timeout_ms` from here: one the host does
        // not answer resets the device (which then uses no buffer), so nothing below waits
        // for ever on a host that stopped answering.
        self.acked.abandon();
        // No report and no OOM or shrinker call runs after these return.
        self.reporting.unregister();
        self.oom.unregister();
        self.shrinker.unregister();
        self.stop_hinting(true);
        self.stop_stats();
        self.state.lock().stopping = true;
        // `retry` only queues `resize` while not stopping, so after both flushes nothing of
        // either is pending or running.
        kext::flush_delayed_work(&self.retry);
        kext::flush_work(&self.resize);
        self.relax();
    }
}

#[pinned_drop]
impl PinnedDrop for VBalloon {
    fn drop(self: Pin<&mut Self>) {
        // The last reference goes after remove and the device's reset (or after a failed
        // probe). In order, before any field is dropped:
        // 1. mm calls none of our callbacks after these (remove did them already; idempotent);
        self.reporting.unregister();
        self.oom.unregister();
        self.shrinker.unregister();
        // 2. what teardown could not give back (the host stopped answering and the device was
        //    reset) is freed, each page compaction holds isolated waited for: after this, mm
        //    holds no page of the list and runs no migration into us;
        let left = self.list.release_all();
        if left > 0 {
            dev_warn!(
                self.dev.as_dev(),
                "freed {} MiB left in the balloon at teardown, after the device reset\n",
                self.held_mib(left as u64)
            );
        }
        // 3. the fields drop (queues, works, locks): nothing calls into them any more.
    }
}

/// `n` empty page vectors with room for `each` pages apiece, so a step never allocates for them.
fn page_vectors(n: usize, each: usize) -> Result<KVec<KVec<BalloonPage>>> {
    let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        kext::push(&mut v, KVec::with_capacity(each, GFP_KERNEL)?, GFP_KERNEL)?;
    }
    Ok(v)
}

/// The queues the device has, in creation order. The free page queue has no callback, as in
/// the C driver: the hint work takes its buffers back itself, so its interrupts would be wasted.
fn queue_names(map: &QueueMap) -> Result<KVec<QueueSpec>> {
    let mut specs = KVec::with_capacity(usize::from(map.count()), GFP_KERNEL)?;
    for q in ALL_QUEUES.into_iter().filter(|q| map.index(*q).is_some()) {
        let spec = match q {
            Queue::FreePage => QueueSpec::polled(queue_name(q)),
            _ => QueueSpec::new(queue_name(q)),
        };
        kext::push(&mut specs, spec, GFP_KERNEL)?;
    }
    Ok(specs)
}

/// The free page hinting queue (the next of `vqs`, when the device has one).
fn hint_queue(
    dev: &Device<Core<'_>>,
    map: &QueueMap,
    vqs: &mut impl Iterator<Item = Virtqueue>,
) -> Result<Option<OwnedQueue<CmdIdBuf, PageBlock>>> {
    if map.index(Queue::FreePage).is_none() {
        return Ok(None);
    }
    let vq = vqs.next().ok_or(EINVAL)?;
    let ring = vq.ring_size()?;
    if !crate::balloon::hint::hint_ring_usable(ring) {
        dev_warn!(
            dev.as_dev(),
            "free page hinting off: the free page queue has {} descriptors, at least 3 needed\n",
            ring
        );
        return Ok(None);
    }
    Ok(Some(OwnedQueue::new(vq)?))
}

/// The reporting queue (the next of `vqs`, when the device has one) and its capacity.
fn reporting_queue(
    dev: &Device<Core<'_>>,
    map: &QueueMap,
    vqs: &mut impl Iterator<Item = Virtqueue>,
) -> Result<Option<(Virtqueue, usize)>> {
    if map.index(Queue::Reporting).is_none() {
        return Ok(None);
    }
    let vq = vqs.next().ok_or(EINVAL)?;
    match validate::reporting_capacity(vq.ring_size()?) {
        Ok(capacity) => Ok(Some((vq, capacity))),
        Err(why) => {
            dev_warn!(dev.as_dev(), "free page reporting off: {:?}\n", why);
            Ok(None)
        }
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

/// Queues the resize work now. Already queued is fine: the queued run reads the newest target.
fn enqueue_resize(this: ArcBorrow<'_, VBalloon>) {
    let _ = workqueue::system_freezable().enqueue::<Arc<VBalloon>, 0>(Arc::<VBalloon>::from(this));
}
