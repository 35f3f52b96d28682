// SPDX-License-Identifier: GPL-2.0

//! vballoon's trace events (`events/vballoon/` in tracefs, `vballoon:*` for perf), defined
//! with `TRACE_EVENT` in `rust/vballoon_trace.h` and instantiated in `rust/trace.c`; one safe
//! call per event. An event that is off costs a call and a static-key test.
//!
//! Counts are in guest pages; each event names the device (`virtio0`).

use crate::ffi;
use kernel::device::Device;

/// The C `struct device` of `dev`.
fn raw(dev: &Device) -> *const ffi::device {
    // `Device` is a `#[repr(transparent)]` wrapper of the C `struct device` (through
    // `Opaque`), so its address is the C device's.
    core::ptr::from_ref(dev).cast()
}

/// One inflate (or deflate) step moved `pages`, after waiting `wait_ns` for the host; the
/// balloon now holds `held`.
pub(crate) fn step(dev: &Device, inflate: bool, pages: u64, wait_ns: u64, held: u64) {
    let pages = kernel::ffi::c_ulong::try_from(pages).unwrap_or(kernel::ffi::c_ulong::MAX);
    // SAFETY: `dev` is a live device for the call (the event copies its name).
    unsafe { ffi::vballoon_trace_step(raw(dev), inflate, pages, wait_ns, held) };
}

/// The driver read the host's target after a config change.
pub(crate) fn target(dev: &Device, num_pages: u32, target: u64, held: u64) {
    // SAFETY: As in `step`.
    unsafe { ffi::vballoon_trace_target(raw(dev), num_pages, target, held) };
}

/// The balloon holds at the floor.
pub(crate) fn floor(dev: &Device, held: u64, target: u64, available: u64, floor: u64) {
    // SAFETY: As in `step`.
    unsafe { ffi::vballoon_trace_floor(raw(dev), held, target, available, floor) };
}

/// A stats request was answered (`served` so far).
pub(crate) fn stats(dev: &Device, served: u64) {
    // SAFETY: As in `step`.
    unsafe { ffi::vballoon_trace_stats(raw(dev), served) };
}

/// `pages` went back to the guest on OOM.
pub(crate) fn oom(dev: &Device, pages: u64, held: u64) {
    let pages = kernel::ffi::c_ulong::try_from(pages).unwrap_or(kernel::ffi::c_ulong::MAX);
    // SAFETY: As in `step`.
    unsafe { ffi::vballoon_trace_oom(raw(dev), pages, held) };
}
