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
/// `virtio_device_table!(TABLE, [DeviceId::new(5)]);`. One per module.
///
/// The one place the kernel versions differ here: 7.3's `module_device_table!` declares the
/// table itself; 7.2's takes a table declared with `IdArray::new_without_index` (pairs of ID and
/// info) and adds the alias as a second static (`vb_kernel_ge_7_3` comes from Kbuild).
#[cfg(vb_kernel_ge_7_3)]
macro_rules! virtio_device_table {
    ($name:ident, [$($id:expr),* $(,)?]) => {
        ::kernel::module_device_table!("virtio", $crate::virtio::DeviceId, $name, @none, [$($id),*]);
    };
}
#[cfg(not(vb_kernel_ge_7_3))]
macro_rules! virtio_device_table {
    ($name:ident, [$($id:expr),* $(,)?]) => {
        static $name: ::kernel::device_id::IdArray<
            $crate::virtio::DeviceId,
            (),
            { <[$crate::virtio::DeviceId]>::len(&[$($id,)*]) },
        > = ::kernel::device_id::IdArray::new_without_index([$(($id, ()),)*]);
        ::kernel::module_device_table!("virtio", __VB_MODULE_DEVICE_TABLE, $name);
    };
}
pub(crate) use virtio_device_table;
