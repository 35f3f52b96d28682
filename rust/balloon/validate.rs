// SPDX-License-Identifier: GPL-2.0

//! The C driver's `virtballoon_validate` rules, and the values and decisions that follow from
//! the negotiated features: what freed pages hold (`poison_val`), the page reporting capacity.

use super::features::{F_ACCESS_PLATFORM, F_PAGE_POISON, F_REPORTING, F_RING_INDIRECT_DESC};

/// What the guest kernel does to pages it frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FreedPages {
    /// `init_on_free=1`: freed pages are zeroed.
    pub(crate) init_on_free: bool,
    /// `page_poison=1` (with `CONFIG_PAGE_POISONING`): freed pages are filled with the poison
    /// byte.
    pub(crate) poisoning: bool,
}

impl FreedPages {
    /// Freed pages must keep a value the host has to preserve.
    pub(crate) fn keep_value(&self) -> bool {
        self.init_on_free || self.poisoning
    }
}

/// The byte page poisoning fills freed pages with (`PAGE_POISON`).
pub(crate) const PAGE_POISON_BYTE: u8 = 0xaa;

/// Feature bits to refuse in `validate`, exactly as the C driver does, given what the guest
/// does to freed pages and what the device offers:
/// - `PAGE_POISON` when freed pages keep no value (nothing to tell the host);
/// - otherwise `REPORTING` when `PAGE_POISON` is not offered (the host could change the
///   contents of reported pages, which must keep their value);
/// - always `VIRTIO_RING_F_INDIRECT_DESC` (no allocation when adding buffers, which page
///   reporting and the OOM path need) and `VIRTIO_F_ACCESS_PLATFORM` (balloon PFNs are
///   guest-physical; a device that needs it then fails feature negotiation, as with C).
pub(crate) fn refused(freed: FreedPages, offered: impl Fn(u32) -> bool) -> [Option<u32>; 3] {
    let poison_or_reporting = if !freed.keep_value() {
        Some(F_PAGE_POISON)
    } else if !offered(F_PAGE_POISON) {
        Some(F_REPORTING)
    } else {
        None
    };
    [
        poison_or_reporting,
        Some(F_RING_INDIRECT_DESC),
        Some(F_ACCESS_PLATFORM),
    ]
}

/// `poison_val` to write before `DRIVER_OK` when `PAGE_POISON` is negotiated: 0 with
/// `init_on_free` (pages are zeroed), else the poison byte in every byte. The config field is
/// little-endian; the pattern is the same in either byte order.
pub(crate) fn poison_val(freed: FreedPages) -> u32 {
    if freed.init_on_free {
        0
    } else {
        u32::from_ne_bytes([PAGE_POISON_BYTE; 4])
    }
}

/// The most pages one report may carry (`PAGE_REPORTING_CAPACITY`).
pub(crate) const PAGE_REPORTING_CAPACITY: usize = 32;

/// Why free page reporting is off although `REPORTING` was negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoReporting {
    /// The reporting ring has no descriptor.
    EmptyRing,
}

/// The reporting capacity (entries per report) for a reporting ring of `ring_size`
/// descriptors: one report is one buffer of up to `capacity` segments, each a descriptor
/// (indirect descriptors are refused), so it never exceeds the ring; as the C driver, the ring
/// size, capped by the kernel at `PAGE_REPORTING_CAPACITY`.
pub(crate) fn reporting_capacity(ring_size: usize) -> Result<usize, NoReporting> {
    match ring_size.min(PAGE_REPORTING_CAPACITY) {
        0 => Err(NoReporting::EmptyRing),
        n => Ok(n),
    }
}

/// What to do when the kernel refuses the reporting registration with `errno` (negative):
/// always carry on without reporting (the balloon works without it); the log line says why.
pub(crate) fn registration_failure_reason(errno: i32) -> &'static str {
    match errno {
        -16 => "another device already reports free pages (only one may)",
        -12 => "out of memory",
        _ => "the kernel refused the registration",
    }
}
