// SPDX-License-Identifier: GPL-2.0

//! When the driver holds the device's wakeup source, as the C driver decides it: each reason
//! (a config change, a stats request) sets its bit when it arrives; the work that handles it
//! clears its bit when it starts, and lets go of the source when it is done only if no reason
//! came in meanwhile. So finishing one never drops a hold another reason has just taken.

/// A config change: the resize work has a new target to follow.
pub(crate) const ADJUST: u32 = 1 << 0;
/// A stats request: the stats work has a buffer to refill.
pub(crate) const STATS: u32 = 1 << 1;

/// The reasons pending and whether the source is held.
///
/// # Invariants
///
/// `held` is true whenever `pending` is non-zero.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wakeup {
    pending: u32,
    held: bool,
}

impl Wakeup {
    /// An event for `reason` arrived. Returns true if the caller must take the source now.
    pub(crate) fn start(&mut self, reason: u32) -> bool {
        self.pending |= reason;
        !core::mem::replace(&mut self.held, true)
    }

    /// The work for `reason` starts handling it.
    pub(crate) fn process(&mut self, reason: u32) {
        self.pending &= !reason;
    }

    /// A work is done. Returns true if the caller must let go of the source now (nothing is
    /// pending).
    pub(crate) fn finish(&mut self) -> bool {
        if self.pending == 0 && self.held {
            self.held = false;
            return true;
        }
        false
    }

    /// Teardown or suspend: nothing is pending any more. Returns true if the caller must let go
    /// of the source now.
    pub(crate) fn clear(&mut self) -> bool {
        self.pending = 0;
        core::mem::replace(&mut self.held, false)
    }
}
