// SPDX-License-Identifier: GPL-2.0

//! The host's one shared state (`Shared`: a mutex, a condvar for the timer thread, the mode
//! generation) and what everybody does with it: complete buffers on the vrings, hold and
//! release them, request stats, reset, and answer `query`.
//!
//! Lock order: the state mutex first, then a vring's lock (taken inside `complete`). Nothing
//! that holds the state mutex writes to the backend request channel.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vhost_user_backend::{VringRwLock, VringT};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::checker::{Checker, Dir};
use crate::ev;
use crate::eventlog::EventLog;
use crate::mode::{self, Mode};
use crate::notify::ConfigNotifier;

pub type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;
pub type Vring = VringRwLock<Mem>;

/// `num_pages`, `actual`, `free_page_hint_cmd_id`, `poison_val` (QEMU's `config_size` may be
/// 12, without `poison_val`).
pub const CONFIG_SIZE: usize = 16;
/// `out-of-order` returns its buffers once this many are held...
pub const OUT_OF_ORDER_BATCH: usize = 4;
/// ...or this long after the first arrived.
pub const OUT_OF_ORDER_WAIT: Duration = Duration::from_millis(50);
/// The timer thread wakes at least this often.
const TICK_MAX: Duration = Duration::from_millis(200);

/// Fixed at start from the command line.
pub struct Options {
    /// Device feature bits offered (VERSION_1 and the balloon's), without
    /// VHOST_USER_F_PROTOCOL_FEATURES.
    pub features: u64,
    /// Punch holes for inflated pages and reported ranges.
    pub discard: bool,
    /// Request stats this long after the guest posted its buffer (None: never).
    pub stats_period: Option<Duration>,
}

/// Why a buffer is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    NeverAck,
    Delay,
    OutOfOrder,
}

/// An inflate/deflate buffer taken off the ring and not yet returned.
pub struct Held {
    pub queue: u16,
    pub head: u16,
    pub dir: Dir,
    pub arrived: Instant,
    pub due: Option<Instant>,
    pub why: Hold,
}

/// The stats buffer the guest posted, held until the host wants fresh stats.
pub struct StatsHeld {
    pub queue: u16,
    pub head: u16,
    pub len: u32,
    pub since: Instant,
}

pub struct State {
    pub opts: Options,
    pub num_pages: u32,
    pub actual: u32,
    /// The config last answered to GET_CONFIG: QEMU writes back the whole config it last read
    /// with only the guest's bytes changed.
    pub last_served: [u8; CONFIG_SIZE],
    /// A GET_CONFIG was answered on this connection (before that, QEMU's copy of the config
    /// may come from an earlier back-end process).
    pub config_served: bool,
    /// Negotiated device features (VHOST_USER_F_PROTOCOL_FEATURES masked out).
    pub acked_features: u64,
    pub connected: bool,
    pub connections: u64,
    /// QEMU has started the vhost device (SET_FEATURES seen, no GET_VRING_BASE since):
    /// config-change notifications are only sent then (see `notify_allowed`).
    pub started: bool,
    /// Notifications not sent because the device was not started.
    pub notifications_suppressed: u64,
    pub mem: Option<Mem>,
    /// Clones of the crate's vrings (shared state), for completing buffers from any thread.
    pub vrings: Vec<Vring>,
    /// Queues with used entries not yet signalled.
    pending_signal: u64,
    /// A vring was stopped (GET_VRING_BASE) since the device last started.
    pub was_stopped: bool,
    /// Features were (re)negotiated: look at the vrings at the next event (reset or resume?).
    pub start_check: bool,
    /// Stop/start cycles that were not a reset (e.g. the VM paused).
    pub restarts: u64,
    pub notifier: Option<Arc<ConfigNotifier>>,
    /// Socket inodes at GET_PROTOCOL_FEATURES (to find the backend channel afterwards).
    pub sock_snapshot: Option<HashSet<u64>>,
    pub checker: Checker,
    pub held: Vec<Held>,
    pub stats_held: Option<StatsHeld>,
    pub stats: BTreeMap<u16, u64>,
    pub stats_updates: u64,
    pub stats_requests: u64,
    pub mode: Mode,
    wrong_len_toggle: bool,
    pub discarded_pages: u64,
    pub discard_errors: u64,
    /// The guest's `poison_val` (PAGE_POISON): as QEMU's device, zeroed at a reset, and while
    /// it is non-zero reported pages are not discarded (they must keep the poison).
    pub poison_val: u32,
    /// Writes of `poison_val` by the guest since the host started.
    pub poison_writes: u64,
    /// `poison_val` as it was when the device stopped: a stop is a reset only if the rings
    /// restart at 0, so a resume (VM paused) gets it back unless the guest wrote it since.
    poison_stash: Option<u32>,
    poison_written_since_stop: bool,
    pub log: EventLog,
}

impl State {
    pub fn new(opts: Options, num_pages: u32, log: EventLog) -> Self {
        State {
            opts,
            num_pages,
            actual: 0,
            last_served: [0; CONFIG_SIZE],
            config_served: false,
            acked_features: 0,
            connected: false,
            connections: 0,
            started: false,
            notifications_suppressed: 0,
            mem: None,
            vrings: Vec::new(),
            pending_signal: 0,
            was_stopped: false,
            start_check: false,
            restarts: 0,
            notifier: None,
            sock_snapshot: None,
            checker: Checker::new(),
            held: Vec::new(),
            stats_held: None,
            stats: BTreeMap::new(),
            stats_updates: 0,
            stats_requests: 0,
            mode: Mode::Normal,
            wrong_len_toggle: false,
            discarded_pages: 0,
            discard_errors: 0,
            poison_val: 0,
            poison_writes: 0,
            poison_stash: None,
            poison_written_since_stop: false,
            log,
        }
    }

    /// The config space, little endian.
    pub fn config_bytes(&self) -> [u8; CONFIG_SIZE] {
        let mut c = [0u8; CONFIG_SIZE];
        c[0..4].copy_from_slice(&self.num_pages.to_le_bytes());
        c[4..8].copy_from_slice(&self.actual.to_le_bytes());
        c[12..16].copy_from_slice(&self.poison_val.to_le_bytes());
        c
    }

    /// Whether PAGE_POISON was offered, so the guest may write `poison_val`.
    pub fn poison_offered(&self) -> bool {
        self.opts.features & (1 << crate::checker::F_PAGE_POISON) != 0
    }

    /// The guest wrote `poison_val`.
    pub fn set_poison(&mut self, val: u32) {
        self.poison_writes += 1;
        self.poison_written_since_stop = true;
        self.poison_stash = None;
        if val != self.poison_val {
            ev!(self, "poison_val={val:#x} (was {:#x})", self.poison_val);
        }
        self.poison_val = val;
    }

    /// Reported pages may be discarded (zeroed): not while the guest poisons free pages with
    /// a non-zero value (QEMU's rule).
    pub fn may_discard_reported(&self) -> bool {
        self.poison_val == 0 || self.acked_features & (1 << crate::checker::F_PAGE_POISON) == 0
    }

    /// Puts `head` on `queue`'s used ring with `len`; the interrupt goes out at `flush`.
    pub fn complete(&mut self, queue: u16, head: u16, len: u32) {
        let Some(vring) = self.vrings.get(usize::from(queue)) else {
            return;
        };
        match vring.add_used(head, len) {
            Ok(()) => self.pending_signal |= 1 << queue,
            Err(e) => ev!(self, "q{queue} add_used head={head} failed: {e}"),
        }
    }

    /// Signals every queue that got used entries since the last flush.
    pub fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending_signal);
        for (q, vring) in self.vrings.iter().enumerate() {
            if pending & (1 << q) != 0 {
                let _ = vring.signal_used_queue();
            }
        }
    }

    /// The used length for an inflate/deflate/stats buffer returned now (0 unless `wrong-len`).
    pub fn used_len(&mut self, len: u32) -> u32 {
        if self.mode == Mode::WrongLen {
            self.wrong_len_toggle = !self.wrong_len_toggle;
            mode::wrong_len(self.wrong_len_toggle, len)
        } else {
            0
        }
    }

    pub fn held_count(&self, dir: Dir) -> usize {
        self.held.iter().filter(|h| h.dir == dir).count()
    }

    /// Returns the held buffers matching `pick` (in arrival order, or reversed).
    pub fn release_where(&mut self, pick: impl Fn(&Held) -> bool, reverse: bool) -> usize {
        let (mut go, keep): (Vec<Held>, Vec<Held>) =
            std::mem::take(&mut self.held).into_iter().partition(pick);
        self.held = keep;
        if reverse {
            go.reverse();
        }
        for h in &go {
            self.complete(h.queue, h.head, 0);
        }
        if !go.is_empty() {
            ev!(
                self,
                "released {} held buffer(s){}",
                go.len(),
                if reverse { " in reverse" } else { "" }
            );
        }
        go.len()
    }

    /// Returns every held inflate/deflate buffer.
    pub fn release_all(&mut self) -> usize {
        self.release_where(|_| true, false)
    }

    /// Returns the held stats buffer (asking the guest for fresh stats); false if none held.
    pub fn request_stats(&mut self) -> bool {
        let Some(s) = self.stats_held.take() else {
            return false;
        };
        let len = self.used_len(s.len);
        self.complete(s.queue, s.head, len);
        self.stats_requests += 1;
        true
    }

    /// Timer work due at `now`: delayed buffers, the out-of-order timeout, periodic stats.
    /// Returns when it next has something to do.
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        self.release_where(|h| h.due.is_some_and(|d| d <= now), false);
        let mut next = self.held.iter().filter_map(|h| h.due).min();
        let oldest_ooo = self
            .held
            .iter()
            .filter(|h| h.why == Hold::OutOfOrder)
            .map(|h| h.arrived)
            .min();
        if let Some(first) = oldest_ooo {
            if first + OUT_OF_ORDER_WAIT <= now {
                self.release_where(|h| h.why == Hold::OutOfOrder, true);
            } else {
                next = earliest(next, first + OUT_OF_ORDER_WAIT);
            }
        }
        if let (Some(period), Some(since)) = (
            self.opts.stats_period,
            self.stats_held.as_ref().map(|s| s.since),
        ) {
            if since + period <= now {
                self.request_stats();
            } else {
                next = earliest(next, since + period);
            }
        }
        next
    }

    /// Completes everything held on `queue`: QEMU is stopping it (GET_VRING_BASE), and what
    /// the backend took off the ring must be back on the used ring before it answers.
    pub fn stop_queue(&mut self, queue: u16) {
        let n = self.release_where(|h| h.queue == queue, false);
        if self.stats_held.as_ref().is_some_and(|s| s.queue == queue) {
            let s = self.stats_held.take().expect("checked");
            self.complete(s.queue, s.head, 0);
        }
        self.flush();
        self.was_stopped = true;
        self.started = false;
        // QEMU's device zeroes `poison_val` at a reset; a stop may be one (see `check_restart`).
        if self.poison_val != 0 {
            self.poison_stash = Some(self.poison_val);
            self.poison_val = 0;
        }
        self.poison_written_since_stop = false;
        ev!(
            self,
            "q{queue} stopped (GET_VRING_BASE), {n} held buffer(s) completed"
        );
    }

    /// A device reset: the guest owns all its memory again; held buffers are forgotten.
    pub fn device_reset(&mut self, why: &str) {
        self.checker.reset();
        self.poison_stash = None;
        if !self.poison_written_since_stop {
            self.poison_val = 0;
        }
        self.held.clear();
        self.stats_held = None;
        ev!(
            self,
            "reset ({why}): inflated set cleared, resets={}",
            self.checker.resets
        );
    }

    /// At the first event after features were negotiated again following a stop: a guest
    /// reset restarts every ring at index 0 (QEMU's virtio_reset zeroes last_avail_idx), a
    /// resume (VM stop/cont) restarts them where they were.
    pub fn check_restart(&mut self, vrings: &[Vring]) {
        if !std::mem::take(&mut self.start_check) || !std::mem::take(&mut self.was_stopped) {
            return;
        }
        use virtio_queue::QueueT;
        let bases: Vec<u16> = vrings
            .iter()
            .filter(|v| v.get_ref().get_queue().ready())
            .map(|v| v.queue_next_avail())
            .collect();
        if bases.iter().all(|&b| b == 0) {
            self.device_reset("restarted with every ring at 0");
        } else {
            self.restarts_as_resume();
            ev!(self, "resumed, ring bases {bases:?}: not a reset");
        }
    }

    /// The device started again where its rings were (the VM paused): not a reset.
    fn restarts_as_resume(&mut self) {
        self.restarts += 1;
        if let Some(v) = self.poison_stash.take() {
            if !self.poison_written_since_stop {
                self.poison_val = v;
            }
        }
    }

    /// A new QEMU connection (the previous daemon and its vring thread are gone by now, so
    /// nothing it left behind can touch the new rings).
    pub fn on_connect(&mut self) {
        self.held.clear();
        self.stats_held = None;
        self.vrings.clear();
        self.pending_signal = 0;
        self.config_served = false;
        self.connected = true;
        self.connections += 1;
        self.was_stopped = false;
        self.start_check = false;
        self.started = false;
        ev!(self, "connected (connection {})", self.connections);
    }

    /// QEMU went away: what the rings held is gone with the connection (QEMU resets its
    /// last_avail_idx to the used index, so a reconnected backend sees those buffers again).
    pub fn on_disconnect(&mut self) {
        let dropped = self.held.len() + usize::from(self.stats_held.is_some());
        self.held.clear();
        self.stats_held = None;
        self.vrings.clear();
        self.pending_signal = 0;
        self.notifier = None;
        self.mem = None;
        self.connected = false;
        self.started = false;
        ev!(self, "disconnected ({dropped} held buffer(s) dropped)");
    }

    /// Whether a config-change notification may go to QEMU now. QEMU 10.0's vhost-user-base
    /// passes it to `virtio_notify_config(hdev->vdev)`, and `hdev->vdev` is NULL before the
    /// vhost device is first started and after every stop (guest reset, driver unloaded):
    /// QEMU then dies of a SIGSEGV. So: only while started, and while the inflate vring is
    /// enabled (QEMU disables the rings first when it stops the device).
    pub fn notify_allowed(&self) -> bool {
        self.started && self.vrings.first().is_none_or(|v| v.get_ref().is_enabled())
    }

    pub fn query(&self, notifications: u64) -> Value {
        let c = &self.checker;
        let stats: BTreeMap<String, u64> = self
            .stats
            .iter()
            .map(|(t, v)| (t.to_string(), *v))
            .collect();
        json!({
            "ok": true,
            "num_pages": self.num_pages,
            "actual": self.actual,
            "ballooned": c.ballooned(),
            "inflate_bufs": c.inflate_bufs,
            "deflate_bufs": c.deflate_bufs,
            "inflated_pfns": c.inflated_pfns,
            "deflated_pfns": c.deflated_pfns,
            "deflate_unknown": c.deflate_unknown,
            "max_pfns_in_buffer": c.max_pfns_in_buffer,
            "held": {
                "inflate": self.held_count(Dir::Inflate),
                "deflate": self.held_count(Dir::Deflate),
            },
            "stats_held": self.stats_held.is_some(),
            "stats_updates": self.stats_updates,
            "stats_requests": self.stats_requests,
            "stats": stats,
            "reported_bytes": c.reported_bytes,
            "reporting_bufs": c.reporting_bufs,
            "features": self.acked_features,
            "offered_features": self.opts.features,
            "resets": c.resets,
            "restarts": self.restarts,
            "violations": c.violations,
            "violations_total": c.violations_total,
            "mode": self.mode.to_string(),
            "connected": self.connected,
            "started": self.started,
            "notifications_suppressed": self.notifications_suppressed,
            "connections": self.connections,
            "config_notifications": notifications,
            "discarded_pages": self.discarded_pages,
            "discard_errors": self.discard_errors,
            "poison_val": self.poison_val,
            "poison_writes": self.poison_writes,
            "regions": c.regions().iter().map(|&(s, l)| json!([s, l])).collect::<Vec<_>>(),
        })
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Everything the threads share.
pub struct Shared {
    state: Mutex<State>,
    /// Wakes the timer thread (new deadlines, mode changes).
    pub wake: Condvar,
    /// Moves on at every mode change; mode threads stop when it moves past theirs.
    pub mode_gen: AtomicU64,
    /// Config-change notifications sent.
    pub notifications: AtomicU64,
}

impl Shared {
    pub fn new(state: State) -> Self {
        Shared {
            state: Mutex::new(state),
            wake: Condvar::new(),
            mode_gen: AtomicU64::new(0),
            notifications: AtomicU64::new(0),
        }
    }

    /// The state; a thread that panicked holding it does not take the host down.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a config-change notification (call without the state lock held). Returns whether
    /// it went out (false: no QEMU connected, or the channel failed).
    pub fn notify_config(&self) -> bool {
        let Some(n) = self.notifier_if_allowed() else {
            return false;
        };
        match n.notify() {
            Ok(()) => {
                self.notifications.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                ev!(self.lock(), "config-change notification failed: {e}");
                false
            }
        }
    }

    /// The notifier, if a notification may be sent now (counts the ones that may not).
    pub fn notifier_if_allowed(&self) -> Option<Arc<ConfigNotifier>> {
        let mut st = self.lock();
        if st.notify_allowed() {
            st.notifier.clone()
        } else {
            st.notifications_suppressed += 1;
            None
        }
    }

    /// Switches the misbehaviour; returns how many held buffers were released. Leaving `flip`
    /// leaves num_pages at its B (with a notification); entering `stats-storm` returns the
    /// held stats buffer at once.
    pub fn set_mode(self: &Arc<Self>, mode: Mode) -> usize {
        let (released, notify, gen) = {
            let mut st = self.lock();
            let gen = self.mode_gen.fetch_add(1, Ordering::AcqRel) + 1;
            let old = std::mem::replace(&mut st.mode, mode.clone());
            let mut notify = false;
            if let Mode::Flip(_, b) = old {
                st.num_pages = b;
                notify = true;
            }
            let released = st.release_all();
            if mode == Mode::StatsStorm {
                st.request_stats();
            }
            st.flush();
            ev!(st, "mode {mode} (was {old}), released {released}");
            (released, notify, gen)
        };
        self.wake.notify_all();
        if notify {
            self.notify_config();
        }
        mode::spawn_mode_thread(self, &mode, gen);
        released
    }

    /// The timer thread: delayed returns, the out-of-order timeout, periodic stats requests.
    pub fn timer_loop(&self) {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            let next = st.tick(now);
            st.flush();
            let wait = next
                .map_or(TICK_MAX, |t| t.saturating_duration_since(now))
                .clamp(Duration::from_micros(200), TICK_MAX);
            st = match self.wake.wait_timeout(st, wait) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let opts = Options {
            features: 1 << 32,
            discard: false,
            stats_period: Some(Duration::from_millis(1000)),
        };
        State::new(opts, 7, EventLog::open(None).unwrap())
    }

    fn held(queue: u16, head: u16, arrived: Instant, due: Option<Instant>, why: Hold) -> Held {
        Held {
            queue,
            head,
            dir: if queue == 0 {
                Dir::Inflate
            } else {
                Dir::Deflate
            },
            arrived,
            due,
            why,
        }
    }

    #[test]
    fn config_space_layout() {
        let mut st = state();
        st.num_pages = 0x0102_0304;
        st.actual = 0x0a0b_0c0d;
        st.poison_val = 0xaaaa_aaab;
        assert_eq!(
            st.config_bytes(),
            [4, 3, 2, 1, 0xd, 0xc, 0xb, 0xa, 0, 0, 0, 0, 0xab, 0xaa, 0xaa, 0xaa]
        );
    }

    #[test]
    fn poison_val_survives_a_pause_but_not_a_reset() {
        let mut st = state();
        st.set_poison(0xaaaa_aaaa);
        // Stopped, then resumed where the rings were: not a reset, the value comes back.
        st.stop_queue(0);
        assert_eq!(st.poison_val, 0);
        st.restarts_as_resume();
        assert_eq!(st.poison_val, 0xaaaa_aaaa);
        // Stopped, then a reset: zero, as QEMU's device...
        st.stop_queue(0);
        st.device_reset("test");
        assert_eq!(st.poison_val, 0);
        // ...unless the guest wrote it again while the device was stopped.
        st.stop_queue(0);
        st.set_poison(0xaaaa_aaaa);
        st.device_reset("test");
        assert_eq!(st.poison_val, 0xaaaa_aaaa);
        assert_eq!(st.poison_writes, 2);
    }

    #[test]
    fn query_has_every_field() {
        let st = state();
        let q = st.query(3);
        for key in [
            "ok",
            "num_pages",
            "actual",
            "ballooned",
            "inflate_bufs",
            "deflate_bufs",
            "inflated_pfns",
            "deflated_pfns",
            "deflate_unknown",
            "max_pfns_in_buffer",
            "held",
            "stats_updates",
            "stats",
            "reported_bytes",
            "features",
            "resets",
            "violations",
            "mode",
            "connected",
        ] {
            assert!(q.get(key).is_some(), "query lacks {key}: {q}");
        }
        assert_eq!(q["ok"], true);
        assert_eq!(q["num_pages"], 7);
        assert_eq!(q["held"]["inflate"], 0);
        assert_eq!(q["held"]["deflate"], 0);
        assert_eq!(q["mode"], "normal");
        assert_eq!(q["config_notifications"], 3);
        assert!(q["violations"].as_array().unwrap().is_empty());
        assert!(q["stats"].as_object().unwrap().is_empty());
    }

    #[test]
    fn stats_are_reported_by_tag_number() {
        let mut st = state();
        st.stats.insert(4, 1000);
        st.stats.insert(11, 5);
        let q = st.query(0);
        assert_eq!(q["stats"]["4"], 1000);
        assert_eq!(q["stats"]["11"], 5);
    }

    #[test]
    fn wrong_len_only_in_its_mode() {
        let mut st = state();
        assert_eq!(st.used_len(1024), 0);
        st.mode = Mode::WrongLen;
        let a = st.used_len(1024);
        let b = st.used_len(1024);
        assert_ne!(a, b);
        assert!([a, b].contains(&0xffff_fff0));
        assert!([a, b].contains(&(1024 + 4096)));
    }

    #[test]
    fn delayed_buffers_go_when_due() {
        let mut st = state();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        st.held.push(held(0, 1, t0, Some(t0 + ms(10)), Hold::Delay));
        st.held.push(held(1, 2, t0, Some(t0 + ms(30)), Hold::Delay));
        st.held.push(held(0, 3, t0, None, Hold::NeverAck));
        assert_eq!(st.tick(t0), Some(t0 + ms(10)));
        assert_eq!(st.held.len(), 3);
        assert_eq!(st.tick(t0 + ms(10)), Some(t0 + ms(30)));
        assert_eq!(st.held.len(), 2);
        assert_eq!(st.tick(t0 + ms(31)), None);
        // never-ack stays until released.
        assert_eq!(st.held.len(), 1);
        assert_eq!(st.held_count(Dir::Inflate), 1);
        assert_eq!(st.release_all(), 1);
        assert!(st.held.is_empty());
    }

    #[test]
    fn out_of_order_times_out_after_50ms() {
        let mut st = state();
        st.mode = Mode::OutOfOrder;
        let t0 = Instant::now();
        st.held.push(held(0, 1, t0, None, Hold::OutOfOrder));
        st.held.push(held(
            0,
            2,
            t0 + Duration::from_millis(5),
            None,
            Hold::OutOfOrder,
        ));
        assert_eq!(st.tick(t0), Some(t0 + OUT_OF_ORDER_WAIT));
        assert_eq!(st.held.len(), 2);
        st.tick(t0 + OUT_OF_ORDER_WAIT);
        assert!(st.held.is_empty());
    }

    #[test]
    fn stats_are_requested_after_the_period() {
        let mut st = state();
        let t0 = Instant::now();
        st.stats_held = Some(StatsHeld {
            queue: 2,
            head: 0,
            len: 160,
            since: t0,
        });
        assert_eq!(st.tick(t0), Some(t0 + Duration::from_millis(1000)));
        assert!(st.stats_held.is_some());
        st.tick(t0 + Duration::from_millis(1000));
        assert!(st.stats_held.is_none());
        assert_eq!(st.stats_requests, 1);
        assert!(!st.request_stats());
    }

    #[test]
    fn stopping_a_queue_completes_what_it_held() {
        let mut st = state();
        let t0 = Instant::now();
        st.started = true;
        st.held.push(held(0, 1, t0, None, Hold::NeverAck));
        st.held.push(held(1, 2, t0, None, Hold::NeverAck));
        st.stats_held = Some(StatsHeld {
            queue: 2,
            head: 0,
            len: 160,
            since: t0,
        });
        st.stop_queue(0);
        assert_eq!(st.held.len(), 1);
        assert!(st.was_stopped && !st.started);
        st.stop_queue(2);
        assert!(st.stats_held.is_none());
    }

    #[test]
    fn notifications_only_while_started() {
        let mut st = state();
        assert!(!st.notify_allowed());
        st.started = true;
        assert!(st.notify_allowed());
        st.stop_queue(0);
        assert!(!st.notify_allowed());
    }

    #[test]
    fn reset_forgets_the_balloon_and_held_buffers() {
        let mut st = state();
        st.checker.inflate(&[1, 2, 3]);
        st.held
            .push(held(0, 1, Instant::now(), None, Hold::NeverAck));
        st.device_reset("test");
        assert_eq!(st.checker.ballooned(), 0);
        assert_eq!(st.checker.resets, 1);
        assert!(st.held.is_empty());
    }
}
