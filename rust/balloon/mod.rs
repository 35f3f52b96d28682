// SPDX-License-Identifier: GPL-2.0

//! The balloon's brain: pure logic, no `unsafe`, no bindings, no kernel types.
//!
//! Everything here is plain arithmetic and byte layout, so the same files build inside the
//! kernel module and in the host crate (`cargo test`), where every edge case is unit-tested:
//! 4 KiB and 64 KiB guest pages, targets that are not a multiple of a guest page, PFNs at and
//! above 2^32, targets above guest RAM, empty batches.

pub(crate) mod block;
pub(crate) mod counters;
pub(crate) mod features;
pub(crate) mod hint;
pub(crate) mod pfn;
pub(crate) mod stats;
pub(crate) mod target;
pub(crate) mod validate;
pub(crate) mod wakeup;
pub(crate) mod wire;
