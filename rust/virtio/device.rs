// SPDX-License-Identifier: GPL-2.0

//! `struct virtio_device` with the kernel's device-context typestates.
//!
//! - `Device<Core<'_>>`: handed to `probe`, `remove`, `freeze` and `restore` only; it is what
//!   creating queues ([`super::VqFactory`]) and clearing features ([`OfferedFeatures`]) need.
//! - `Device<Bound>`: the device is bound to this driver for the borrow.
//! - `Device` (`Normal`): a counted reference ([`ARef<Device>`]) the driver may keep; it can
//!   read features and config and log, nothing that needs the binding.

use super::config::ConfigField;
use crate::ffi;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    device::{self as kdev, DeviceContext, Normal},
    error::to_result,
    prelude::*,
    sync::aref::AlwaysRefCounted,
    types::Opaque,
};

/// A virtio device.
///
/// # Invariants
///
/// The wrapped `virtio_device` is valid for the lifetime of the reference (or, for
/// `ARef<Device>`, of the reference count it holds); `Ctx` is true of it for that long.
#[repr(transparent)]
pub(crate) struct Device<Ctx: DeviceContext = Normal>(Opaque<ffi::virtio_device>, PhantomData<Ctx>);

// SAFETY: `Device<Ctx>` wraps the same `virtio_device` transparently for every `Ctx`, and a
// stronger context (`Core`, `Bound`) implies every weaker one.
kernel::impl_device_context_deref!(unsafe { Device });
kernel::impl_device_context_into_aref!(Device);

// SAFETY: The virtio functions used through `&Device` may be called from any thread.
unsafe impl Send for Device {}
// SAFETY: As above, and concurrently.
unsafe impl Sync for Device {}

// SAFETY: The embedded `struct device` is reference counted by `get_device`/`put_device`, which
// keeps its container, the `virtio_device`, alive.
unsafe impl AlwaysRefCounted for Device {
    fn inc_ref(&self) {
        // SAFETY: `self.as_raw()` is valid by the type invariant.
        unsafe { kernel::bindings::get_device(&raw mut (*self.as_raw()).dev) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up a reference it owns; the pointer is valid.
        unsafe { kernel::bindings::put_device(&raw mut (*obj.as_ref().as_raw()).dev) };
    }
}

impl<Ctx: DeviceContext> Device<Ctx> {
    /// # Safety
    ///
    /// `ptr` must be a valid `virtio_device` of which `Ctx` is true for `'a`.
    pub(super) unsafe fn from_raw<'a>(ptr: *mut ffi::virtio_device) -> &'a Self {
        // SAFETY: `Device` is a transparent wrapper; the caller guarantees the rest.
        unsafe { &*ptr.cast() }
    }

    pub(super) fn as_raw(&self) -> *mut ffi::virtio_device {
        self.0.get()
    }

    /// The device's index on the virtio bus (its name is `virtio<index>`).
    pub(crate) fn index(&self) -> u32 {
        // SAFETY: `self.as_raw()` is a valid `virtio_device` while `self` is; `index` is set at
        // registration and never changes.
        let index = unsafe { (*self.as_raw()).index };
        u32::try_from(index).unwrap_or(u32::MAX)
    }

    /// The generic device, for `dev_*!` logging.
    pub(crate) fn as_dev(&self) -> &kdev::Device {
        // SAFETY: The embedded `struct device` is valid as long as `self` is.
        unsafe { kdev::Device::from_raw(&raw mut (*self.as_raw()).dev) }
    }

    /// Whether feature bit `bit` was negotiated.
    pub(crate) fn has_feature(&self, bit: u32) -> bool {
        // SAFETY: The device is valid by the type invariant.
        unsafe { ffi::vballoon_has_feature(self.as_raw(), bit) }
    }

    /// Reads a config field. `EINVAL` if the field needs a feature that was not negotiated
    /// (the config space may end before it), `EOPNOTSUPP` if the transport has no config
    /// accessor. May sleep (some transports read config through a mailbox).
    pub(crate) fn read<C>(&self, field: ConfigField<C>) -> Result<u32> {
        self.check(field)?;
        let mut v = 0u32;
        // SAFETY: The device is valid; the offset is inside the driver's config layout and its
        // feature is negotiated (checked above).
        to_result(unsafe { ffi::vballoon_cread_le32(self.as_raw(), field.offset(), &mut v) })?;
        Ok(v)
    }

    /// Writes a config field in one 4-byte access; the same rules as [`Device::read`].
    pub(crate) fn write<C>(&self, field: ConfigField<C>, value: u32) -> Result {
        self.check(field)?;
        // SAFETY: As in `read`.
        to_result(unsafe { ffi::vballoon_cwrite_le32(self.as_raw(), field.offset(), value) })
    }

    fn check<C>(&self, field: ConfigField<C>) -> Result {
        match field.feature() {
            Some(bit) if !self.has_feature(bit) => Err(EINVAL),
            _ => Ok(()),
        }
    }

    /// Holds the device's wakeup source (`pm_stay_awake`): a suspend waits until
    /// [`Device::relax`]. Any context.
    pub(crate) fn stay_awake(&self) {
        // SAFETY: The embedded `struct device` is valid; `pm_stay_awake` is IRQ-safe.
        unsafe { ffi::vballoon_stay_awake(self.as_raw()) }
    }

    /// Lets go of the wakeup source (`pm_relax`). Any context.
    pub(crate) fn relax(&self) {
        // SAFETY: As in `stay_awake`.
        unsafe { ffi::vballoon_relax(self.as_raw()) }
    }

    /// Resets the device: it stops using every buffer, and callbacks in flight have finished
    /// when this returns (the reset is followed by `virtio_synchronize_cbs`, which virtio-mmio's
    /// reset does not do itself). Idempotent. Only the adapter and the queue set reset a device.
    /// Sleeps (waits for the queues' interrupts).
    pub(super) fn reset(&self) {
        // SAFETY: The device is valid by the type invariant.
        unsafe { ffi::vballoon_reset_device(self.as_raw()) }
    }

    /// Whether the transport can read the config space (`config->get`); the C driver refuses
    /// a device without.
    pub(crate) fn can_read_config(&self) -> bool {
        // SAFETY: The device is valid by the type invariant.
        unsafe { ffi::vballoon_has_config_get(self.as_raw()) }
    }

    /// Stops the device for shutdown as the core's generic path does: breaks every queue,
    /// waits out callbacks in flight and resets it (`virtio_device_shutdown`).
    pub(super) fn shutdown(&self) {
        // SAFETY: The device is valid by the type invariant.
        unsafe { ffi::virtio_device_shutdown(self.as_raw()) }
    }

    /// Marks every queue broken: waits on the device end with an error instead of forever.
    pub(super) fn mark_broken(&self) {
        // SAFETY: The device is valid by the type invariant.
        unsafe { ffi::virtio_break_device(self.as_raw()) }
    }
}

impl<Ctx: DeviceContext> AsRef<kdev::Device<Ctx>> for Device<Ctx> {
    fn as_ref(&self) -> &kdev::Device<Ctx> {
        // SAFETY: The embedded `struct device` is valid as long as `self` is, and the context
        // of the virtio device is the context of its `struct device`.
        unsafe { &*(&raw mut (*self.as_raw()).dev).cast() }
    }
}

impl Device<kdev::Core<'_>> {
    /// Lets the device hold a wakeup source ([`Device::stay_awake`]).
    pub(crate) fn set_wakeup_capable(&self) {
        // SAFETY: The embedded `struct device` is valid; in probe.
        unsafe { ffi::vballoon_set_wakeup_capable(self.as_raw()) }
    }
}

/// The features the device offers, while the driver may still refuse some: only in
/// [`super::Driver::validate`], before `FEATURES_OK`.
pub(crate) struct OfferedFeatures<'a> {
    dev: &'a Device<kdev::Core<'a>>,
}

impl<'a> OfferedFeatures<'a> {
    pub(super) fn new(dev: &'a Device<kdev::Core<'a>>) -> Self {
        Self { dev }
    }

    /// Whether the device offers `bit` (and the driver's table lists it).
    #[allow(dead_code, reason = "used by drivers that refuse features")]
    pub(crate) fn has(&self, bit: u32) -> bool {
        self.dev.has_feature(bit)
    }

    /// Refuses feature `bit`: it will not be negotiated.
    #[allow(dead_code, reason = "used by drivers that refuse features")]
    pub(crate) fn clear(&mut self, bit: u32) {
        // SAFETY: The device is valid and in `validate`, before features are finalised.
        unsafe { ffi::vballoon_clear_feature(self.dev.as_raw(), bit) }
    }
}
