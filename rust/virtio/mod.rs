// SPDX-License-Identifier: GPL-2.0

//! Safe virtio driver abstraction, in the shape of the kernel's bus abstractions
//! (`rust/kernel/pci.rs`, `driver.rs`, `device_id.rs`):
//!
//! - [`id`]: ID tables through `IdArray` + `module_device_table!` (the module alias comes from
//!   the table);
//! - [`adapter`]: the [`Driver`] trait (`#[vtable]`, optional callbacks) and [`Adapter`], which
//!   implements `kernel::driver::RegistrationOps`, so the module is declared with
//!   [`module_virtio_driver!`] over `kernel::module_driver!`;
//! - [`device`]: `Device<Ctx>` with the kernel's device-context typestates;
//! - [`config`]: typed config fields, checked against the driver's config layout at compile
//!   time and against negotiated features at run time;
//! - [`queue`]: queue sets created once per binding and revoked by it; transfers;
//! - [`buffer`]: device-readable buffers that can only be kmalloc'ed owners;
//! - [`segments`]: borrowed device-writable segment lists (free page reports);
//! - [`owned`]: a queue of owned buffers posted without waiting (free page hints);
//! - [`event`]: the wake-up a hard-IRQ queue callback gives a waiting task;
//! - [`attrs`]: read-only sysfs attributes under a bound device.
//!
//! Every `unsafe` block of the module that touches virtio is in this directory. No raw
//! pointer, gfp flag or scatterlist appears in its safe API; the one exception is the
//! `unsafe fn` [`Segments::from_raw`], which the mm layer's reporting trampoline uses to wrap
//! the scatterlist the kernel hands it (its contract is on the function).
//!
//! Where this differs from the 2026 "Add Rust virtio bindings" RFC, and why:
//! - The RFC's `Virtqueues` deletes every queue of the device when dropped and can outlive the
//!   binding; here the binding owns the set and revokes it at unbind/freeze, and handles that
//!   outlive it get `ENODEV`.
//! - The RFC's queue methods take `&self` on a `Sync` type although the ring is not
//!   thread-safe; here each queue has a slot lock, so users take turns.
//! - The RFC adds scatterlists and returns raw tokens with `unsafe` calls; here a transfer
//!   borrows `KBox`ed buffers until the device returns them, so no `unsafe` is left to drivers.
//! - The RFC sets no `feature_table` (drivers cannot negotiate device features), has no
//!   config accessors and no freeze/restore; here all three exist, and a driver without
//!   freeze/restore has suspends refused instead of resuming on dead queues.
//! - The RFC's queue callback does not say it runs in hard IRQ and can panic (`expect`);
//!   here the rule is on the trait and the trampolines cannot panic.
//!
//! C headers: `include/linux/virtio.h`, `include/linux/virtio_config.h`.

mod adapter;
mod attrs;
mod buffer;
mod config;
mod device;
mod event;
mod id;
mod owned;
mod queue;
mod segments;

pub(crate) use adapter::{module_virtio_driver, Adapter, Driver, QueueIndex};
pub(crate) use attrs::{AttrBuf, AttrGroup, Attributes};
pub(crate) use buffer::{BufferQueue, DeviceReadable, OwnsSegments};
pub(crate) use config::{config_field, ConfigField, Le32};
pub(crate) use device::Device;
#[allow(
    unused_imports,
    reason = "for drivers that refuse features in validate"
)]
pub(crate) use device::OfferedFeatures;
pub(crate) use event::AckEvent;
pub(crate) use id::{virtio_device_table, DeviceId, IdTable};
pub(crate) use owned::{OwnedQueue, Returned};
pub(crate) use queue::{QueueSpec, Stream, Virtqueue, VqFactory};
pub(crate) use segments::Segments;
