// SPDX-License-Identifier: GPL-2.0

//! Virtio device ID tables (`struct virtio_device_id`), declared with the kernel's
//! [`kernel::module_device_table!`] so modpost derives the module alias from the same table the
//! driver matches with: one source of truth, no hand-written alias.

use crate::ffi;
use kernel::device_id::RawDeviceId;

/// `struct virtio_device_id`, which the generated bindings do not make `Copy`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RawId {
    device: u32,
    vendor: u32,
}

// The C layout, field by field.
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<RawId>() == size_of::<ffi::virtio_device_id>());
    assert!(align_of::<RawId>() == align_of::<ffi::virtio_device_id>());
    assert!(offset_of!(RawId, device) == offset_of!(ffi::virtio_device_id, device));
    assert!(offset_of!(RawId, vendor) == offset_of!(ffi::virtio_device_id, vendor));
};

/// A virtio device ID table entry.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(crate) struct DeviceId(RawId);

impl DeviceId {
    /// Matches virtio devices of type `device` from any vendor.
    pub(crate) const fn new(device: u32) -> Self {
        Self(RawId {
            device,
            vendor: ffi::VIRTIO_DEV_ANY_ID,
        })
    }
}

// SAFETY: `DeviceId` is a `#[repr(transparent)]` wrapper of `RawId`, which has the layout of
// `virtio_device_id` (checked above), and adds no invariant.
unsafe impl RawDeviceId for DeviceId {
    type RawType = RawId;
}

/// A driver's ID table, terminated by the all-zero sentinel that [`kernel::device_id::IdArray`]
/// appends.
pub(crate) type IdTable = &'static dyn kernel::device_id::IdTable<DeviceId, ()>;

/// Declares a virtio ID table `$name` and its module alias, e.g.
/// `virtio_device_table!(TABLE, [DeviceId::new(5)]);`.
macro_rules! virtio_device_table {
    ($name:ident, [$($id:expr),* $(,)?]) => {
        ::kernel::module_device_table!("virtio", $crate::virtio::DeviceId, $name, @none, [$($id),*]);
    };
}
pub(crate) use virtio_device_table;
