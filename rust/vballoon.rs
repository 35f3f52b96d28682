// SPDX-License-Identifier: GPL-2.0

//! vballoon: a virtio-balloon driver in Rust.
//!
//! The crate root is only the module declaration and the list of layers:
//! - [`virtio`]: safe virtio driver abstraction (registration, device, config, virtqueues);
//! - [`mm`]: balloon pages, the balloon page list and memory figures;
//! - [`balloon`]: the pure logic (no `unsafe`, no bindings), unit-tested on the host;
//! - [`driver`]: the device driver, wiring the three together (safe code only).
//!
//! Lock order (outer first): `VBalloon::incoming` (mutex; pages are allocated holding only
//! this) → `VBalloon::state` (mutex; nothing allocates under it, so the OOM notifier may take
//! it) → a virtqueue's slot lock (mutex, in `virtio`) → the mm balloon list's spinlock (taken
//! inside `mm`) → `AckEvent`'s spinlock (IRQ-safe, in `virtio`). `VBalloon::stats` → the stats
//! queue's slot lock. The migration callback only ever try-locks `state`.

mod balloon;
mod driver;
mod ffi;
mod kext;
mod mm;
mod virtio;

virtio::module_virtio_driver! {
    type: driver::VBalloon,
    name: "vballoon",
    authors: ["vballoon developers"],
    description: "virtio balloon driver in Rust",
    license: "GPL",
}
// The module parameters (floor_mib, block_kib, host_timeout_ms) are declared in rust/helpers.c
// with module_param(..., 0444), so /sys/module/vballoon/parameters shows what modprobe.d or the
// command line set (the kernel crate's `module!` params never appear in sysfs); `kext::param`
// reads them.
