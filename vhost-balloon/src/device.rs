// SPDX-License-Identifier: GPL-2.0

//! The balloon device as a vhost-user backend: features, config space, the memory table, and
//! the vring handler that takes inflate/deflate/stats/reporting buffers off the rings, runs
//! the protocol checker on them, discards pages, and returns or holds them as the mode says.
//!
//! The handler runs in the crate's vring epoll thread and never sleeps: anything returned
//! later is held in the shared state and returned by the timer thread or a control command.

use std::collections::HashSet;
use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Backend;
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_queue::QueueT;
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::checker::{self, Dir, Role, PAGE_SIZE};
use crate::ev;
use crate::mode::Mode;
use crate::notify::{self, ConfigNotifier};
use crate::state::{
    Held, Hold, Mem, Shared, State, StatsHeld, Vring, CONFIG_SIZE, OUT_OF_ORDER_BATCH,
};

/// inflateq, deflateq, statsq, reporting_vq (the most a negotiation can use).
pub const NUM_QUEUES: usize = 4;
/// QEMU's VIRTQUEUE_MAX_SIZE; vhost-user-device's `vq_size` cannot be larger anyway.
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Most bytes of one inflate/deflate/stats buffer read from guest memory (the checker still
/// sees the full length).
const MAX_READ: u64 = 64 * 1024;
/// Most descriptors looked at in one chain.
const MAX_DESCS: usize = 1024;

/// One descriptor of a chain.
struct Desc {
    addr: u64,
    len: u32,
    write: bool,
}

/// A descriptor chain taken off a ring.
struct Chain {
    head: u16,
    descs: Vec<Desc>,
}

impl Chain {
    fn readable_len(&self) -> u64 {
        self.descs
            .iter()
            .filter(|d| !d.write)
            .map(|d| u64::from(d.len))
            .sum()
    }

    fn writable_len(&self) -> u64 {
        self.descs
            .iter()
            .filter(|d| d.write)
            .map(|d| u64::from(d.len))
            .sum()
    }
}

#[derive(Clone)]
pub struct BalloonBackend {
    shared: Arc<Shared>,
}

impl BalloonBackend {
    pub fn new(shared: Arc<Shared>) -> Self {
        BalloonBackend { shared }
    }

    fn process_queue(&self, idx: usize, vrings: &[Vring]) {
        let mut deferred: Vec<(u16, u16)> = Vec::new();
        let wake_timer = {
            let mut st = self.shared.lock();
            if st.vrings.len() != vrings.len() {
                st.vrings = vrings.to_vec();
            }
            st.check_restart(vrings);
            let Some(mem) = st.mem.clone() else {
                return;
            };
            // Chains are taken off the ring first, then handled: completing one takes the
            // vring's lock again.
            let role = checker::queue_role(st.acked_features, idx);
            let violations_before = st.checker.violations.len();
            let chains = pop_all(&vrings[idx], &mem);
            let queue = idx as u16;
            for chain in chains {
                match role {
                    Some(Role::Inflate) => {
                        if let Some(d) =
                            self.inflate_deflate(&mut st, &mem, queue, Dir::Inflate, &chain)
                        {
                            deferred.push(d);
                        }
                    }
                    Some(Role::Deflate) => {
                        self.inflate_deflate(&mut st, &mem, queue, Dir::Deflate, &chain);
                    }
                    Some(Role::Stats) => stats(&mut st, &mem, queue, &chain),
                    Some(Role::Reporting) => reporting(&mut st, &mem, queue, &chain),
                    None => {
                        let msg = format!(
                            "buffer on queue {idx}, which the negotiated features {:#x} do not have",
                            st.acked_features
                        );
                        st.checker.violation(msg);
                        st.complete(queue, chain.head, 0);
                    }
                }
            }
            st.flush();
            let new: Vec<String> = st.checker.violations[violations_before..].to_vec();
            for v in new {
                ev!(st, "VIOLATION {v}");
            }
            !st.held.is_empty() || st.stats_held.is_some()
        };
        if wake_timer {
            self.shared.wake.notify_all();
        }
        if !deferred.is_empty() {
            // zero-when-inflating: the guest gets the new target before its buffer back.
            self.shared.notify_config();
            let mut st = self.shared.lock();
            for (q, head) in deferred {
                st.complete(q, head, 0);
            }
            st.flush();
        }
    }

    /// Checks and carries out one inflate/deflate buffer, then returns, holds or defers it as
    /// the mode says. Returns `(queue, head)` when it must be returned after a notification.
    fn inflate_deflate(
        &self,
        st: &mut State,
        mem: &Mem,
        queue: u16,
        dir: Dir,
        chain: &Chain,
    ) -> Option<(u16, u16)> {
        let len = chain.readable_len();
        st.checker.check_buffer(dir, len, chain.writable_len());
        let data = read_chain(st, mem, dir.name(), chain);
        let pfns = checker::parse_pfns(&data);
        match dir {
            Dir::Inflate => {
                let fresh = st.checker.inflate(&pfns);
                if st.opts.discard {
                    discard_pfns(st, mem, &fresh);
                }
            }
            Dir::Deflate => st.checker.deflate(&pfns),
        }
        ev!(
            st,
            "{} q{queue} head={} pfns={} ballooned={}",
            dir.name(),
            chain.head,
            pfns.len(),
            st.checker.ballooned()
        );
        let now = Instant::now();
        let held = |why, due| Held {
            queue,
            head: chain.head,
            dir,
            arrived: now,
            due,
            why,
        };
        match st.mode.clone() {
            Mode::NeverAck => st.held.push(held(Hold::NeverAck, None)),
            Mode::Delay(ms) => st
                .held
                .push(held(Hold::Delay, Some(now + Duration::from_millis(ms)))),
            Mode::OutOfOrder => {
                st.held.push(held(Hold::OutOfOrder, None));
                if st.held.iter().filter(|h| h.why == Hold::OutOfOrder).count()
                    >= OUT_OF_ORDER_BATCH
                {
                    st.release_where(|h| h.why == Hold::OutOfOrder, true);
                }
            }
            Mode::ZeroWhenInflating if dir == Dir::Inflate => {
                st.num_pages = 0;
                st.mode = Mode::Normal;
                self.shared.mode_gen.fetch_add(1, Ordering::AcqRel);
                ev!(st, "zero-when-inflating: num_pages=0, mode normal");
                return Some((queue, chain.head));
            }
            _ => {
                let used = st.used_len(len as u32);
                st.complete(queue, chain.head, used);
            }
        }
        None
    }
}

/// Takes every available chain off `vring`.
fn pop_all(vring: &Vring, mem: &Mem) -> Vec<Chain> {
    let guard = mem.memory();
    let mut out = Vec::new();
    let mut vs = vring.get_mut();
    while let Some(chain) = vs.get_queue_mut().pop_descriptor_chain(guard.clone()) {
        let head = chain.head_index();
        let descs = chain
            .take(MAX_DESCS)
            .map(|d| Desc {
                addr: d.addr().0,
                len: d.len(),
                write: d.is_write_only(),
            })
            .collect();
        out.push(Chain { head, descs });
    }
    out
}

/// The device-readable bytes of `chain` (at most MAX_READ).
fn read_chain(st: &mut State, mem: &Mem, what: &str, chain: &Chain) -> Vec<u8> {
    let guard = mem.memory();
    let mut data = Vec::new();
    for d in chain.descs.iter().filter(|d| !d.write) {
        let room = MAX_READ.saturating_sub(data.len() as u64);
        let n = u64::from(d.len).min(room) as usize;
        if n == 0 {
            break;
        }
        let start = data.len();
        data.resize(start + n, 0);
        if let Err(e) = guard.read_slice(&mut data[start..], GuestAddress(d.addr)) {
            st.checker.violation(format!(
                "{what}: descriptor {:#x}+{:#x} not readable: {e}",
                d.addr, d.len
            ));
            data.truncate(start);
        }
    }
    data
}

fn stats(st: &mut State, mem: &Mem, queue: u16, chain: &Chain) {
    let len = chain.readable_len();
    if chain.writable_len() != 0 {
        st.checker.violation(format!(
            "stats: buffer has {} device-writable bytes",
            chain.writable_len()
        ));
    }
    if !len.is_multiple_of(checker::STATS_ENTRY as u64) {
        st.checker.violation(format!(
            "stats: buffer of {len} bytes, not a multiple of {}",
            checker::STATS_ENTRY
        ));
    }
    let data = read_chain(st, mem, "stats", chain);
    for (tag, val) in checker::parse_stats(&data) {
        st.stats.insert(tag, val);
    }
    st.stats_updates += 1;
    if let Some(old) = st.stats_held.take() {
        st.checker
            .violation("stats: a second buffer posted while one is held".to_string());
        st.complete(old.queue, old.head, 0);
    }
    st.stats_held = Some(StatsHeld {
        queue,
        head: chain.head,
        len: len as u32,
        since: Instant::now(),
    });
    if st.mode == Mode::StatsStorm {
        st.request_stats();
    }
}

fn reporting(st: &mut State, mem: &Mem, queue: u16, chain: &Chain) {
    st.checker.reporting_bufs += 1;
    if chain.readable_len() != 0 {
        st.checker.violation(format!(
            "reporting: buffer has {} device-readable bytes",
            chain.readable_len()
        ));
    }
    let mut bytes = 0;
    for d in chain.descs.iter().filter(|d| d.write) {
        let (addr, len) = (d.addr, u64::from(d.len));
        bytes += len;
        if st.checker.report_range(addr, len) && st.opts.discard && st.may_discard_reported() {
            // Whole pages inside the range only.
            let start = addr.div_ceil(PAGE_SIZE) * PAGE_SIZE;
            let end = (addr + len) / PAGE_SIZE * PAGE_SIZE;
            if end > start {
                discard_range(st, mem, start, end - start);
            }
        }
    }
    ev!(st, "report q{queue} head={} bytes={bytes}", chain.head);
    st.complete(queue, chain.head, 0);
}

fn discard_pfns(st: &mut State, mem: &Mem, pfns: &[u32]) {
    for (first, count) in checker::pfn_runs(pfns) {
        discard_range(st, mem, first * PAGE_SIZE, count * PAGE_SIZE);
    }
}

/// Punches a hole for guest-physical `[gpa, gpa + len)` in the guest's RAM file, so the guest
/// reads zeros from it next time (MADV_REMOVE on our mapping if the region has no file).
fn discard_range(st: &mut State, mem: &Mem, gpa: u64, len: u64) {
    let guard = mem.memory();
    let mut at = gpa;
    let end = gpa + len;
    while at < end {
        let Some(region) = guard.find_region(GuestAddress(at)) else {
            st.discard_errors += 1;
            return;
        };
        let off = at - region.start_addr().0;
        let n = (region.len() - off).min(end - at);
        match punch(&guard, region, at, off, n) {
            Ok(()) => st.discarded_pages += n / PAGE_SIZE,
            Err(e) => {
                st.discard_errors += 1;
                if st.discard_errors <= 3 {
                    ev!(st, "discard {at:#x}+{n:#x} failed: {e}");
                }
            }
        }
        at += n;
    }
}

fn punch(
    mem: &GuestMemoryMmap<()>,
    region: &<GuestMemoryMmap<()> as GuestMemoryBackend>::R,
    gpa: u64,
    off: u64,
    len: u64,
) -> io::Result<()> {
    if let Some(fo) = region.file_offset() {
        // SAFETY: fallocate on a file descriptor we hold; it only changes the file's blocks.
        let r = unsafe {
            libc::fallocate(
                fo.file().as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (fo.start() + off) as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
    }
    let host = mem
        .get_host_address(GuestAddress(gpa))
        .map_err(|e| io::Error::other(e.to_string()))?;
    // SAFETY: the range is inside one region of our own mapping of guest RAM; MADV_REMOVE
    // frees its backing store, which is what ballooning asks for.
    let r = unsafe { libc::madvise(host as *mut libc::c_void, len as usize, libc::MADV_REMOVE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl VhostUserBackend for BalloonBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        self.shared.lock().opts.features | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        let mut st = self.shared.lock();
        st.acked_features = features & !VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        st.start_check = true;
        st.started = true;
        ev!(st, "features acked {:#x}", st.acked_features);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // GET_PROTOCOL_FEATURES comes just before SET_BACKEND_REQ_FD: remember which sockets
        // exist now, to tell the backend channel apart afterwards.
        let snapshot: HashSet<u64> = notify::socket_inodes().into_values().collect();
        self.shared.lock().sock_snapshot = Some(snapshot);
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::BACKEND_REQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::RESET_DEVICE
    }

    fn reset_device(&self) {
        let mut st = self.shared.lock();
        st.started = false;
        st.device_reset("RESET_DEVICE");
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut st = self.shared.lock();
        let cfg = st.config_bytes();
        st.last_served = cfg;
        st.config_served = true;
        (offset..offset.saturating_add(size))
            .map(|i| cfg.get(i as usize).copied().unwrap_or(0))
            .collect()
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        let mut st = self.shared.lock();
        // QEMU writes back the whole config it last read, the guest's bytes changed: take
        // `actual`; a change anywhere else is the guest writing a device-owned field.
        let mut new = st.last_served;
        for (i, b) in buf.iter().enumerate() {
            if let Some(slot) = new.get_mut(offset as usize + i) {
                *slot = *b;
            }
        }
        let actual = u32::from_le_bytes([new[4], new[5], new[6], new[7]]);
        let poison = u32::from_le_bytes([new[12], new[13], new[14], new[15]]);
        // `poison_val` is the guest's to write when PAGE_POISON is offered (QEMU's
        // `config_size` may leave it out: then `buf` never reaches it). QEMU writes back its
        // whole copy, which may hold a value from before a reset: a write while the device is
        // stopped (initialisation, before DRIVER_OK: where the spec puts the `poison_val`
        // write) sets it whatever it holds, a write afterwards only if it changes the bytes.
        let poison_written = st.poison_offered()
            && offset as usize + buf.len() > 12
            && offset < 16
            && (!st.started || new[12..16] != st.last_served[12..16]);
        let owned_changed = new[0..4] != st.last_served[0..4]
            || new[8..12] != st.last_served[8..12]
            || (!poison_written && new[12..CONFIG_SIZE] != st.last_served[12..CONFIG_SIZE]);
        // Before the first GET_CONFIG on this connection QEMU's copy may come from an
        // earlier back-end process (crash and restart): nothing to compare with.
        if st.config_served && owned_changed {
            let msg = format!(
                "config: guest wrote a device-owned field (offset {offset}, {} bytes)",
                buf.len()
            );
            ev!(st, "VIOLATION {msg}");
            st.checker.violation(msg);
        }
        if actual != st.actual {
            st.actual = actual;
            ev!(st, "actual={actual} (num_pages={})", st.num_pages);
        }
        st.last_served[4..8].copy_from_slice(&actual.to_le_bytes());
        if poison_written {
            st.set_poison(poison);
        }
        // QEMU's copy holds what it just sent.
        st.last_served[12..16].copy_from_slice(&new[12..16]);
        Ok(())
    }

    fn update_memory(&self, mem: Mem) -> io::Result<()> {
        let regions: Vec<(u64, u64)> = mem
            .memory()
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .collect();
        let mut st = self.shared.lock();
        ev!(st, "memory table {:x?}", regions);
        st.checker.set_regions(regions);
        st.mem = Some(mem);
        Ok(())
    }

    fn set_backend_req_fd(&self, backend: Backend) {
        let mut st = self.shared.lock();
        let before = st.sock_snapshot.take().unwrap_or_default();
        match notify::find_new_channel(&before) {
            Ok(sock) => {
                st.notifier = Some(Arc::new(ConfigNotifier::new(sock)));
                ev!(st, "backend request channel found");
            }
            Err(e) => {
                ev!(st, "backend request channel not found: {e}");
                eprintln!("vballoon-host: backend request channel not found: {e}; no config-change notifications");
            }
        }
        // Our duplicate keeps the socket open; the crate's handle is not needed.
        drop(backend);
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // Needed so the vring thread ends (and the daemon can be dropped) after a disconnect.
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        self.shared.lock().stop_queue(queue_index as u16);
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        let idx = usize::from(device_event);
        if idx < vrings.len() {
            self.process_queue(idx, vrings);
        }
        // Never an error: the crate would end the vring thread.
        Ok(())
    }
}
