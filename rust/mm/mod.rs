// SPDX-License-Identifier: GPL-2.0

//! Memory-management wrappers:
//! - [`page`]: balloon pages owned by the driver, and pages borrowed during migration;
//! - [`list`]: the balloon page list (movable pages, managed page count, migration callback);
//! - [`oom`]: the OOM notifier;
//! - [`reporting`]: free page reporting;
//! - [`block`]: blocks of free pages for hinting;
//! - [`shrinker`]: giving memory back under pressure;
//! - [`meminfo`]: memory figures for the floor and the statistics queue;
//! - [`field`]: how a callback finds the owner around the C struct it was given.
//!
//! Every `unsafe` block of the module that touches mm is in this directory. Every callback
//! from C (migration, OOM, reporting) enters through a C trampoline with a direct call into
//! Rust, so kernel CFI never checks a Rust function against a C function-pointer type.
//!
//! C headers: `include/linux/balloon.h`, `mm/balloon.c`, `include/linux/oom.h`,
//! `include/linux/page_reporting.h`.

mod block;
mod field;
mod list;
mod meminfo;
mod oom;
mod page;
mod reporting;
mod shrinker;

pub(crate) use block::PageBlock;
pub(crate) use field::{impl_has_field, HasField};
pub(crate) use list::{BalloonList, Migrate};
pub(crate) use meminfo::{
    freed_pages, hint_block_order, mem_available_pages, stats_sample, totalram_pages,
};
pub(crate) use oom::{OomHandler, OomNotifier};
pub(crate) use page::{free_all, max_page_order, page_shift, BalloonPage, PageRef};
pub(crate) use reporting::{PageReporting, Reporter};
pub(crate) use shrinker::{Shrink, Shrinker};
