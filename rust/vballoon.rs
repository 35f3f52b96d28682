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
    params: {
        floor_mib: u64 {
            default: 64,
            description: "Never inflate while the guest's MemAvailable is below this many MiB (default 64)",
        },
        block_kib: u32 {
            default: 2048,
            description: "Inflate in blocks of this many KiB (a power of two) where the allocator has them free, falling back to single pages; 0 = single pages only (default 2048)",
        },
        host_timeout_ms: u32 {
            default: 5000,
            description: "How long the host may take to use a buffer before the balloon stops and says so; unbind waits at most this long before resetting the device (default 5000)",
        },
    },
}
