// SPDX-License-Identifier: GPL-2.0

//! Memory-management wrappers:
//! - [`page`]: balloon pages owned by the driver, and pages borrowed during migration;
//! - [`list`]: the balloon page list (movable pages, managed page count, migration callback);
//! - [`meminfo`]: memory figures for the floor and the statistics queue.
//!
//! Every `unsafe` block of the module that touches mm is in this directory.
//!
//! C headers: `include/linux/balloon.h`, `mm/balloon.c`.

mod list;
mod meminfo;
mod page;

pub(crate) use list::{impl_has_balloon_list, BalloonList, HasBalloonList, Migrate};
pub(crate) use meminfo::{mem_available_pages, stats_sample};
pub(crate) use page::{page_shift, BalloonPage, PageRef};
