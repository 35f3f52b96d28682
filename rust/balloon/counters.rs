// SPDX-License-Identifier: GPL-2.0

//! What the balloon is doing, for operators: live counters the driver bumps as it works (read
//! without locks by sysfs, debugfs and the demo's watch), and the answer to "why is the
//! balloon not at the host's target?" in one word ([`Why::word`]) and one sentence.
//!
//! Pure: the driver takes a [`Snapshot`] (the counters plus the few facts it knows live) and
//! everything shown is computed here.

use core::ffi::CStr;
use core::fmt;
use core::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// What the last resize step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No step has run yet.
    Starting,
    /// The balloon held the target.
    AtTarget,
    /// Moving towards the target.
    Moving,
    /// Holding: the guest's `MemAvailable` is at the floor.
    Floor,
    /// Holding: the allocator refused a page; retrying.
    OutOfMemory,
    /// Gave pages back on OOM; holding until the host sets a new target.
    OomHold,
    /// The device stopped taking buffers: frozen until the driver is bound again.
    HostStopped,
}

impl Phase {
    const ALL: [Phase; 7] = [
        Phase::Starting,
        Phase::AtTarget,
        Phase::Moving,
        Phase::Floor,
        Phase::OutOfMemory,
        Phase::OomHold,
        Phase::HostStopped,
    ];

    fn code(self) -> u8 {
        match self {
            Phase::Starting => 0,
            Phase::AtTarget => 1,
            Phase::Moving => 2,
            Phase::Floor => 3,
            Phase::OutOfMemory => 4,
            Phase::OomHold => 5,
            Phase::HostStopped => 6,
        }
    }

    fn from_code(code: u8) -> Phase {
        Phase::ALL
            .into_iter()
            .find(|p| p.code() == code)
            .unwrap_or(Phase::Starting)
    }
}

/// The balloon's counters since bind. Every field is a relaxed atomic: each figure is exact on
/// its own, and a reader may see one step's updates to two figures at slightly different
/// moments.
pub(crate) struct Counters {
    /// The host's target, in guest pages, as last read.
    target_pages: AtomicU64,
    /// The host's `num_pages` (4 KiB units), as last read.
    num_pages: AtomicU64,
    held_pages: AtomicU64,
    inflated_pages: AtomicU64,
    deflated_pages: AtomicU64,
    inflate_steps: AtomicU64,
    deflate_steps: AtomicU64,
    alloc_failures: AtomicU64,
    floor_episodes: AtomicU64,
    oom_deflated_pages: AtomicU64,
    reported_bytes: AtomicU64,
    hinted_bytes: AtomicU64,
    /// The last error (a negative errno), 0 if none.
    last_error: AtomicI32,
    config_changes: AtomicU64,
    /// Boot-time clock at the last config change, in ms (0: none yet).
    last_config_ms: AtomicU64,
    stats_requests: AtomicU64,
    /// `MemAvailable` at the last floor check, in guest pages.
    available_pages: AtomicU64,
    phase: AtomicU8,
}

impl Counters {
    /// All zero.
    pub(crate) const fn new() -> Self {
        Self {
            target_pages: AtomicU64::new(0),
            num_pages: AtomicU64::new(0),
            held_pages: AtomicU64::new(0),
            inflated_pages: AtomicU64::new(0),
            deflated_pages: AtomicU64::new(0),
            inflate_steps: AtomicU64::new(0),
            deflate_steps: AtomicU64::new(0),
            alloc_failures: AtomicU64::new(0),
            floor_episodes: AtomicU64::new(0),
            oom_deflated_pages: AtomicU64::new(0),
            reported_bytes: AtomicU64::new(0),
            hinted_bytes: AtomicU64::new(0),
            last_error: AtomicI32::new(0),
            config_changes: AtomicU64::new(0),
            last_config_ms: AtomicU64::new(0),
            stats_requests: AtomicU64::new(0),
            available_pages: AtomicU64::new(0),
            phase: AtomicU8::new(0),
        }
    }

    /// The host's target was read: `num_pages` 4 KiB units, `pages` guest pages.
    pub(crate) fn set_target(&self, num_pages: u32, pages: u64) {
        self.num_pages.store(u64::from(num_pages), Relaxed);
        self.target_pages.store(pages, Relaxed);
    }

    /// The balloon now holds `pages` guest pages.
    pub(crate) fn set_held(&self, pages: u64) {
        self.held_pages.store(pages, Relaxed);
    }

    /// An inflate step put `pages` into the balloon.
    pub(crate) fn inflated(&self, pages: u64) {
        self.inflated_pages.fetch_add(pages, Relaxed);
        self.inflate_steps.fetch_add(1, Relaxed);
    }

    /// A deflate step gave `pages` back to the guest.
    pub(crate) fn deflated(&self, pages: u64) {
        self.deflated_pages.fetch_add(pages, Relaxed);
        self.deflate_steps.fetch_add(1, Relaxed);
    }

    /// The allocator refused a page while inflating.
    pub(crate) fn alloc_failed(&self) {
        self.alloc_failures.fetch_add(1, Relaxed);
    }

    /// A hold at the floor began.
    pub(crate) fn floor_episode(&self) {
        self.floor_episodes.fetch_add(1, Relaxed);
    }

    /// `pages` went back on OOM (also counted by [`Counters::deflated`]).
    pub(crate) fn oom_deflated(&self, pages: u64) {
        self.oom_deflated_pages.fetch_add(pages, Relaxed);
    }

    pub(crate) fn reported(&self, bytes: u64) {
        self.reported_bytes.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn hinted(&self, bytes: u64) {
        self.hinted_bytes.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn reported_bytes(&self) -> u64 {
        self.reported_bytes.load(Relaxed)
    }

    pub(crate) fn hinted_bytes(&self) -> u64 {
        self.hinted_bytes.load(Relaxed)
    }

    /// An operation failed with `errno` (negative).
    pub(crate) fn error(&self, errno: i32) {
        self.last_error.store(errno, Relaxed);
    }

    /// The host changed the config, at `now_ms` on the boot-time clock.
    pub(crate) fn config_changed(&self, now_ms: u64) {
        self.config_changes.fetch_add(1, Relaxed);
        self.last_config_ms.store(now_ms.max(1), Relaxed);
    }

    /// A stats request was answered; returns how many so far.
    pub(crate) fn stats_answered(&self) -> u64 {
        self.stats_requests.fetch_add(1, Relaxed).saturating_add(1)
    }

    /// What the last step found; `available` is `MemAvailable` in guest pages (for the floor).
    pub(crate) fn set_phase(&self, phase: Phase, available: u64) {
        self.available_pages.store(available, Relaxed);
        self.phase.store(phase.code(), Relaxed);
    }

    pub(crate) fn phase(&self) -> Phase {
        Phase::from_code(self.phase.load(Relaxed))
    }

    /// Every counter at once, with what the driver knows live.
    pub(crate) fn snapshot(&self, live: Live) -> Snapshot {
        Snapshot {
            target_pages: self.target_pages.load(Relaxed),
            num_pages: self.num_pages.load(Relaxed),
            held_pages: self.held_pages.load(Relaxed),
            inflated_pages: self.inflated_pages.load(Relaxed),
            deflated_pages: self.deflated_pages.load(Relaxed),
            inflate_steps: self.inflate_steps.load(Relaxed),
            deflate_steps: self.deflate_steps.load(Relaxed),
            alloc_failures: self.alloc_failures.load(Relaxed),
            floor_episodes: self.floor_episodes.load(Relaxed),
            oom_deflated_pages: self.oom_deflated_pages.load(Relaxed),
            reported_bytes: self.reported_bytes.load(Relaxed),
            hinted_bytes: self.hinted_bytes.load(Relaxed),
            last_error: self.last_error.load(Relaxed),
            config_changes: self.config_changes.load(Relaxed),
            last_config_ms: self.last_config_ms.load(Relaxed),
            stats_requests: self.stats_requests.load(Relaxed),
            available_pages: self.available_pages.load(Relaxed),
            phase: self.phase(),
            live,
        }
    }
}

/// What the driver knows at the moment of reading, besides the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Live {
    /// Guest page size in bytes.
    pub(crate) page_bytes: u64,
    /// A wait for the host is past `host_timeout_ms` right now.
    pub(crate) host_overdue: bool,
    /// Waits for the host that went past `host_timeout_ms` since bind (kept by the queues).
    pub(crate) host_timeouts: u64,
    /// The boot-time clock now, in ms.
    pub(crate) now_ms: u64,
    /// Module parameters in effect for this device.
    pub(crate) floor_mib: u64,
    pub(crate) block_kib: u64,
    pub(crate) host_timeout_ms: u32,
}

/// The counters at one moment (see [`Counters::snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) target_pages: u64,
    pub(crate) num_pages: u64,
    pub(crate) held_pages: u64,
    pub(crate) inflated_pages: u64,
    pub(crate) deflated_pages: u64,
    pub(crate) inflate_steps: u64,
    pub(crate) deflate_steps: u64,
    pub(crate) alloc_failures: u64,
    pub(crate) floor_episodes: u64,
    pub(crate) oom_deflated_pages: u64,
    pub(crate) reported_bytes: u64,
    pub(crate) hinted_bytes: u64,
    pub(crate) last_error: i32,
    pub(crate) config_changes: u64,
    pub(crate) last_config_ms: u64,
    pub(crate) stats_requests: u64,
    pub(crate) available_pages: u64,
    pub(crate) phase: Phase,
    pub(crate) live: Live,
}

/// Why the balloon is where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// No step has run yet (just bound).
    Starting,
    AtTarget,
    Inflating,
    Deflating,
    /// Held by the floor.
    Floor,
    /// Held: the allocator refused pages.
    OutOfMemory,
    /// Held after deflating on OOM, until the host sets a new target.
    OomHold,
    /// A wait for the host is past the limit right now.
    HostSlow,
    /// The device stopped taking buffers.
    HostStopped,
}

impl Why {
    /// The one-word state (sysfs `state`); stable names.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Why::Starting => "starting",
            Why::AtTarget => "at_target",
            Why::Inflating => "inflating",
            Why::Deflating => "deflating",
            Why::Floor => "floor",
            Why::OutOfMemory => "out_of_memory",
            Why::OomHold => "oom_hold",
            Why::HostSlow => "host_slow",
            Why::HostStopped => "host_stopped",
        }
    }
}

const MIB: u64 = 1 << 20;

impl Snapshot {
    fn mib(&self, pages: u64) -> u64 {
        pages.saturating_mul(self.live.page_bytes) / MIB
    }

    fn bytes_to_pages(&self, bytes: u64) -> u64 {
        bytes.checked_div(self.live.page_bytes).unwrap_or(0)
    }

    /// Why the balloon is where it is. A stopped device or a host past its limit explains
    /// everything else; then a hold (floor, out of memory, OOM) while not at the target; then
    /// the direction of travel.
    pub(crate) fn why(&self) -> Why {
        if self.phase == Phase::HostStopped {
            return Why::HostStopped;
        }
        if self.live.host_overdue {
            return Why::HostSlow;
        }
        if self.phase == Phase::Starting {
            return Why::Starting;
        }
        if self.held_pages == self.target_pages {
            return Why::AtTarget;
        }
        match self.phase {
            Phase::Floor if self.held_pages < self.target_pages => Why::Floor,
            Phase::OutOfMemory if self.held_pages < self.target_pages => Why::OutOfMemory,
            Phase::OomHold => Why::OomHold,
            _ if self.held_pages < self.target_pages => Why::Inflating,
            _ => Why::Deflating,
        }
    }

    /// One sentence saying what the balloon is doing and why, with the figures that matter.
    pub(crate) fn explain(&self, f: &mut dyn fmt::Write) -> fmt::Result {
        let held = self.mib(self.held_pages);
        let target = self.mib(self.target_pages);
        match self.why() {
            Why::Starting => write!(f, "just bound; no step has run yet"),
            Why::AtTarget => write!(f, "at the host's target of {target} MiB"),
            Why::Inflating => write!(f, "inflating: {held} MiB of the {target} MiB asked for"),
            Why::Deflating => write!(f, "deflating: {held} MiB, down to {target} MiB"),
            Why::Floor => write!(
                f,
                "holding at {held} MiB of the {target} MiB asked for: guest MemAvailable {} MiB is at the floor (floor_mib={}); retrying every second",
                self.mib(self.available_pages),
                self.live.floor_mib
            ),
            Why::OutOfMemory => write!(
                f,
                "holding at {held} MiB of the {target} MiB asked for: the allocator refused pages ({} times so far); retrying every 200 ms",
                self.alloc_failures
            ),
            Why::OomHold => write!(
                f,
                "holding at {held} MiB after giving {} MiB back on OOM; the host asks for {target} MiB and must set a new target to move the balloon",
                self.mib(self.oom_deflated_pages)
            ),
            Why::HostSlow => write!(
                f,
                "waiting for the host: it has not used a buffer for more than host_timeout_ms={} ms; the balloon holds {held} MiB (target {target} MiB)",
                self.live.host_timeout_ms
            ),
            Why::HostStopped => write!(
                f,
                "stopped: the device stopped taking buffers ({}); frozen at {held} MiB (target {target} MiB) until the driver is bound again",
                Errno(self.last_error)
            ),
        }
    }

    /// The value of sysfs attribute `attr`, one line. (One `writeln!` for every number: each
    /// formatting call is code in the module.)
    pub(crate) fn attribute(&self, attr: Attr, f: &mut dyn fmt::Write) -> fmt::Result {
        let n = match attr {
            Attr::State => return writeln!(f, "{}", self.why().word()),
            Attr::TargetMib => self.mib(self.target_pages),
            Attr::ActualMib => self.mib(self.held_pages),
            Attr::TargetPages => self.target_pages,
            Attr::HeldPages => self.held_pages,
            Attr::InflatedPages => self.inflated_pages,
            Attr::DeflatedPages => self.deflated_pages,
            Attr::InflateSteps => self.inflate_steps,
            Attr::DeflateSteps => self.deflate_steps,
            Attr::AllocFailures => self.alloc_failures,
            Attr::FloorEpisodes => self.floor_episodes,
            Attr::OomDeflatedPages => self.oom_deflated_pages,
            Attr::ReportedPages => self.bytes_to_pages(self.reported_bytes),
            Attr::HintedPages => self.bytes_to_pages(self.hinted_bytes),
            Attr::HostTimeouts => self.live.host_timeouts,
            Attr::LastError => return writeln!(f, "{}", self.last_error),
            Attr::ConfigChanges => self.config_changes,
            Attr::LastConfigChangeMs => self.last_config_ms,
            Attr::StatsRequests => self.stats_requests,
            Attr::FloorMib => self.live.floor_mib,
            Attr::BlockKib => self.live.block_kib,
            Attr::HostTimeoutMs => u64::from(self.live.host_timeout_ms),
        };
        writeln!(f, "{n}")
    }

    /// The debugfs view: the explanation, then every attribute as `name: value`, then what
    /// only this view has.
    pub(crate) fn view(&self, f: &mut dyn fmt::Write) -> fmt::Result {
        write!(f, "{}: ", self.why().word())?;
        self.explain(f)?;
        writeln!(f)?;
        for attr in Attr::ALL.into_iter().filter(|a| *a != Attr::State) {
            write!(f, "{}: ", attr.label())?;
            self.attribute(attr, f)?;
        }
        writeln!(f, "num_pages: {}", self.num_pages)?;
        writeln!(f, "page_bytes: {}", self.live.page_bytes)?;
        writeln!(
            f,
            "available_pages_at_last_floor_check: {}",
            self.available_pages
        )?;
        if self.last_config_ms == 0 {
            writeln!(f, "last_config_change_ago_ms: never")?;
        } else {
            writeln!(
                f,
                "last_config_change_ago_ms: {}",
                self.live.now_ms.saturating_sub(self.last_config_ms)
            )?;
        }
        writeln!(f, "last_error_name: {}", Errno(self.last_error))
    }
}

/// The sysfs attributes (files under the device's `vballoon/`). Stable names (see README,
/// "Reading the counters"); `state` is the one-word [`Why`], the rest are numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attr {
    State,
    TargetMib,
    ActualMib,
    TargetPages,
    HeldPages,
    InflatedPages,
    DeflatedPages,
    InflateSteps,
    DeflateSteps,
    AllocFailures,
    FloorEpisodes,
    OomDeflatedPages,
    ReportedPages,
    HintedPages,
    HostTimeouts,
    LastError,
    ConfigChanges,
    LastConfigChangeMs,
    StatsRequests,
    FloorMib,
    BlockKib,
    HostTimeoutMs,
}

impl Attr {
    /// Every attribute, in file order.
    pub(crate) const ALL: [Attr; 22] = [
        Attr::State,
        Attr::TargetMib,
        Attr::ActualMib,
        Attr::TargetPages,
        Attr::HeldPages,
        Attr::InflatedPages,
        Attr::DeflatedPages,
        Attr::InflateSteps,
        Attr::DeflateSteps,
        Attr::AllocFailures,
        Attr::FloorEpisodes,
        Attr::OomDeflatedPages,
        Attr::ReportedPages,
        Attr::HintedPages,
        Attr::HostTimeouts,
        Attr::LastError,
        Attr::ConfigChanges,
        Attr::LastConfigChangeMs,
        Attr::StatsRequests,
        Attr::FloorMib,
        Attr::BlockKib,
        Attr::HostTimeoutMs,
    ];

    /// The file name.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Attr::State => "state",
            Attr::TargetMib => "target_mib",
            Attr::ActualMib => "actual_mib",
            Attr::TargetPages => "target_pages",
            Attr::HeldPages => "held_pages",
            Attr::InflatedPages => "inflated_pages",
            Attr::DeflatedPages => "deflated_pages",
            Attr::InflateSteps => "inflate_steps",
            Attr::DeflateSteps => "deflate_steps",
            Attr::AllocFailures => "alloc_failures",
            Attr::FloorEpisodes => "floor_episodes",
            Attr::OomDeflatedPages => "oom_deflated_pages",
            Attr::ReportedPages => "reported_pages",
            Attr::HintedPages => "hinted_pages",
            Attr::HostTimeouts => "host_timeouts",
            Attr::LastError => "last_error",
            Attr::ConfigChanges => "config_changes",
            Attr::LastConfigChangeMs => "last_config_change_ms",
            Attr::StatsRequests => "stats_requests",
            Attr::FloorMib => "floor_mib",
            Attr::BlockKib => "block_kib",
            Attr::HostTimeoutMs => "host_timeout_ms",
        }
    }

    /// The file name as a C string (for sysfs); the same as [`Attr::label`].
    pub(crate) fn c_name(self) -> &'static CStr {
        match self {
            Attr::State => c"state",
            Attr::TargetMib => c"target_mib",
            Attr::ActualMib => c"actual_mib",
            Attr::TargetPages => c"target_pages",
            Attr::HeldPages => c"held_pages",
            Attr::InflatedPages => c"inflated_pages",
            Attr::DeflatedPages => c"deflated_pages",
            Attr::InflateSteps => c"inflate_steps",
            Attr::DeflateSteps => c"deflate_steps",
            Attr::AllocFailures => c"alloc_failures",
            Attr::FloorEpisodes => c"floor_episodes",
            Attr::OomDeflatedPages => c"oom_deflated_pages",
            Attr::ReportedPages => c"reported_pages",
            Attr::HintedPages => c"hinted_pages",
            Attr::HostTimeouts => c"host_timeouts",
            Attr::LastError => c"last_error",
            Attr::ConfigChanges => c"config_changes",
            Attr::LastConfigChangeMs => c"last_config_change_ms",
            Attr::StatsRequests => c"stats_requests",
            Attr::FloorMib => c"floor_mib",
            Attr::BlockKib => c"block_kib",
            Attr::HostTimeoutMs => c"host_timeout_ms",
        }
    }
}

/// A negative errno, by name where the driver can produce it.
struct Errno(i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => return write!(f, "none"),
            -5 => "EIO",
            -12 => "ENOMEM",
            -19 => "ENODEV",
            -22 => "EINVAL",
            -28 => "ENOSPC",
            -95 => "EOPNOTSUPP",
            -110 => "ETIMEDOUT",
            n => return write!(f, "error {n}"),
        };
        write!(f, "{name}")
    }
}
