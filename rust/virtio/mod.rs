// SPDX-License-Identifier: GPL-2.0

//! Safe virtio driver abstraction, shaped like `rust/kernel/pci.rs`.
//!
//! A driver implements [`Driver`] and registers with [`Registration`]. The driver's data lives
//! in an [`Arc`] that the adapter keeps in `virtio_device::priv` from the end of `probe` to the
//! end of `remove`; callbacks borrow it.
//!
//! Every `unsafe` block of the module that touches virtio is in this directory. No raw pointer,
//! gfp flag or scatterlist appears in the public API.
//!
//! C header: `include/linux/virtio.h`, `include/linux/virtio_config.h`.

mod queue;

pub(crate) use queue::{AckEvent, BufferQueue, DeviceReadable, Virtqueue};

use crate::ffi;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    error::{from_result, to_result},
    prelude::*,
    sync::{aref::AlwaysRefCounted, Arc, ArcBorrow},
    types::{ForeignOwnable, Opaque},
    ThisModule,
};

/// A virtio device ID table entry (device type, any vendor).
#[repr(transparent)]
pub(crate) struct DeviceId(ffi::virtio_device_id);

impl DeviceId {
    /// Matches virtio devices of type `device` from any vendor.
    pub(crate) const fn new(device: u32) -> Self {
        Self(ffi::virtio_device_id {
            device,
            vendor: ffi::VIRTIO_DEV_ANY_ID,
        })
    }

    /// The terminating entry every table ends with.
    pub(crate) const END: Self = Self(ffi::virtio_device_id {
        device: 0,
        vendor: 0,
    });
}

/// A little-endian 32-bit field of a device's configuration space, at a byte offset.
#[derive(Clone, Copy)]
pub(crate) struct ConfigLe32(pub(crate) u32);

/// Which queue a callback is for: its index in the order given to [`Device::find_vqs`].
pub(crate) type QueueIndex = u16;

/// The interface a virtio driver implements.
pub(crate) trait Driver: Send + Sync + Sized + 'static {
    /// Devices the driver binds; must end with [`DeviceId::END`].
    const ID_TABLE: &'static [DeviceId];
    /// Feature bits the driver understands (offered to negotiation).
    const FEATURES: &'static [u32];

    /// Before feature negotiation completes: may clear offered features. Process context.
    fn validate(_dev: &Device) -> Result {
        Ok(())
    }

    /// Binds a device. The device is not yet `DRIVER_OK`; queues may be set up and buffers
    /// added, but the device will not use them before [`Driver::ready`]. Process context.
    fn probe(dev: &Device) -> Result<Arc<Self>>;

    /// The device is `DRIVER_OK` and the driver data is reachable from callbacks.
    fn ready(_this: ArcBorrow<'_, Self>) {}

    /// The device's configuration changed. May run in any context, including hard IRQ: queue
    /// work, never sleep.
    fn config_changed(_this: ArcBorrow<'_, Self>) {}

    /// A virtqueue has used buffers. Runs in hard-IRQ context: never sleep, never take a
    /// sleeping lock, never allocate with a sleeping gfp.
    fn vq_callback(_this: ArcBorrow<'_, Self>, _queue: QueueIndex) {}

    /// Unbinds the device. Should leave the device reset with every queue deleted (drop every
    /// [`Virtqueue`]) before returning; the adapter resets the device again afterwards either
    /// way, so a driver that forgets leaks its queues but cannot cause a use-after-free.
    /// Config-change callbacks are already disabled.
    fn remove(dev: &Device, this: Arc<Self>);
}

/// A virtio device, as seen by a bound driver.
///
/// # Invariants
///
/// The wrapped `virtio_device` is valid; references handed out by this module live no longer
/// than the callback (or the reference count, for [`ARef<Device>`]) that produced them.
#[repr(transparent)]
pub(crate) struct Device(Opaque<ffi::virtio_device>);

// SAFETY: `virtio_device` methods used here may be called from any thread.
unsafe impl Send for Device {}
// SAFETY: `virtio_device` methods used here may be called concurrently from any thread.
unsafe impl Sync for Device {}

// SAFETY: The embedded `struct device` is reference counted by `get_device`/`put_device`, which
// keeps the whole `virtio_device` (its container) alive.
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

impl Device {
    /// # Safety
    ///
    /// `ptr` must be a valid `virtio_device` for the lifetime `'a`.
    unsafe fn from_raw<'a>(ptr: *mut ffi::virtio_device) -> &'a Self {
        // SAFETY: `Device` is a transparent wrapper; the caller guarantees validity.
        unsafe { &*ptr.cast() }
    }

    fn as_raw(&self) -> *mut ffi::virtio_device {
        self.0.get()
    }

    /// The generic device, for `dev_*!` logging.
    pub(crate) fn as_dev(&self) -> &kernel::device::Device {
        // SAFETY: The embedded `struct device` is valid as long as `self` is.
        unsafe { kernel::device::Device::from_raw(&raw mut (*self.as_raw()).dev) }
    }

    /// Whether feature bit `bit` was negotiated (or, in `validate`, is offered).
    pub(crate) fn has_feature(&self, bit: u32) -> bool {
        // SAFETY: The device is valid by the type invariant.
        unsafe { ffi::vballoon_has_feature(self.as_raw(), bit) }
    }

    /// Reads a little-endian 32-bit config field.
    pub(crate) fn read(&self, field: ConfigLe32) -> u32 {
        // SAFETY: The device is valid; the transport checks the offset against config size.
        unsafe { ffi::vballoon_cread_le32(self.as_raw(), field.0) }
    }

    /// Writes a little-endian 32-bit config field in one 4-byte access.
    pub(crate) fn write(&self, field: ConfigLe32, value: u32) {
        // SAFETY: As in `read`.
        unsafe { ffi::vballoon_cwrite_le32(self.as_raw(), field.0, value) }
    }

    /// Resets the device: it stops using every buffer, and in-flight callbacks have finished
    /// when this returns. Idempotent.
    pub(crate) fn reset(&self) {
        // SAFETY: The device is valid by the type invariant.
        unsafe { ffi::virtio_reset_device(self.as_raw()) }
    }

    /// Creates the device's virtqueues, in order, with the given names. Their callbacks reach
    /// `T::vq_callback` with the queue's position in `names`.
    pub(crate) fn find_vqs<T: Driver>(&self, names: &[&'static CStr]) -> Result<KVec<Virtqueue>> {
        let n = names.len();
        let mut info = KVec::<ffi::virtqueue_info>::with_capacity(n, GFP_KERNEL)?;
        let mut raw = KVec::<*mut ffi::virtqueue>::with_capacity(n, GFP_KERNEL)?;
        for name in names {
            info.push(
                ffi::virtqueue_info {
                    name: name.as_char_ptr(),
                    callback: Some(Adapter::<T>::vq_callback),
                    ctx: false,
                },
                GFP_KERNEL,
            )?;
            raw.push(core::ptr::null_mut(), GFP_KERNEL)?;
        }
        let nvqs = u32::try_from(n).map_err(|_| EINVAL)?;
        // SAFETY: `raw` and `info` have `n` valid entries; the device is valid.
        to_result(unsafe {
            ffi::vballoon_find_vqs(self.as_raw(), nvqs, raw.as_mut_ptr(), info.as_mut_ptr())
        })?;
        let owner = Arc::new(queue::VqOwner::new(self.into()), GFP_KERNEL).inspect_err(|_| {
            // SAFETY: The queues were just created and nothing else refers to them.
            unsafe { ffi::vballoon_del_vqs(self.as_raw()) }
        })?;
        let mut out = KVec::with_capacity(n, GFP_KERNEL)?;
        for vq in raw {
            // Cannot fail: capacity is reserved. A null queue would be a transport bug.
            let vq = NonNull::new(vq).ok_or(EINVAL)?;
            // SAFETY: `vq` was just created by `find_vqs` and stays valid until `owner` drops.
            out.push(unsafe { Virtqueue::new(vq, owner.clone()) }, GFP_KERNEL)?;
        }
        Ok(out)
    }
}

/// The C entry points for driver `T`.
struct Adapter<T>(PhantomData<T>);

impl<T: Driver> Adapter<T> {
    /// # Safety
    ///
    /// Called by the virtio core with a valid device whose `priv` is null or was set by
    /// `probe_callback` and not yet taken back by `remove_callback`.
    unsafe fn data<'a>(vdev: *mut ffi::virtio_device) -> Option<ArcBorrow<'a, T>> {
        // SAFETY: `vdev` is valid by the function's safety requirements.
        let p = unsafe { (*vdev).priv_ };
        if p.is_null() {
            return None;
        }
        // SAFETY: `priv` came from `Arc::into_foreign` and is released only in `remove`.
        Some(unsafe { <Arc<T> as ForeignOwnable>::borrow(p) })
    }

    extern "C" fn validate_callback(vdev: *mut ffi::virtio_device) -> kernel::ffi::c_int {
        // SAFETY: The virtio core passes a valid device.
        let dev = unsafe { Device::from_raw(vdev) };
        from_result(|| T::validate(dev).map(|()| 0))
    }

    extern "C" fn probe_callback(vdev: *mut ffi::virtio_device) -> kernel::ffi::c_int {
        // SAFETY: The virtio core passes a valid device.
        let dev = unsafe { Device::from_raw(vdev) };
        from_result(|| {
            let data = T::probe(dev)?;
            let p = data.into_foreign();
            // SAFETY: `vdev` is valid; no callback reads `priv` before DRIVER_OK and config
            // change delivery is still disabled, so this store is not raced.
            unsafe { (*vdev).priv_ = p };
            // SAFETY: The device is valid; the driver's queues are set up.
            unsafe { ffi::vballoon_device_ready(vdev) };
            // SAFETY: `priv` was set just above.
            if let Some(this) = unsafe { Self::data(vdev) } {
                T::ready(this);
            }
            Ok(0)
        })
    }

    extern "C" fn remove_callback(vdev: *mut ffi::virtio_device) {
        // SAFETY: The virtio core passes a valid device.
        let dev = unsafe { Device::from_raw(vdev) };
        // SAFETY: `vdev` is valid.
        let p = unsafe { (*vdev).priv_ };
        if p.is_null() {
            return;
        }
        // SAFETY: `priv` came from `into_foreign` in probe; ownership comes back here once.
        let data = unsafe { <Arc<T> as ForeignOwnable>::from_foreign(p) };
        // Keep a reference of our own: virtqueue callbacks may borrow `priv` until the device
        // is reset, which must not depend on the driver having kept its promise to reset.
        T::remove(dev, data.clone());
        // Idempotent; afterwards the device uses no buffer and no callback is running or can
        // start (`virtio_reset_device` synchronises callbacks).
        dev.reset();
        // SAFETY: `vdev` is valid, and after the reset nothing reads `priv`.
        unsafe { (*vdev).priv_ = core::ptr::null_mut() };
        drop(data);
    }

    extern "C" fn config_changed_callback(vdev: *mut ffi::virtio_device) {
        // SAFETY: Called by the virtio core with a valid device.
        if let Some(this) = unsafe { Self::data(vdev) } {
            T::config_changed(this);
        }
    }

    extern "C" fn vq_callback(vq: *mut ffi::virtqueue) {
        // SAFETY: The virtio core passes a valid queue of a valid device.
        let (vdev, index) = unsafe { ((*vq).vdev, (*vq).index) };
        // SAFETY: `vdev` is the queue's valid device.
        if let Some(this) = unsafe { Self::data(vdev) } {
            // Queue indices are below the count given to `find_vqs`, a `u32` from a `usize`.
            T::vq_callback(this, index as QueueIndex);
        }
    }
}

/// A registered virtio driver; unregistered on drop.
///
/// # Invariants
///
/// `drv` is registered with the virtio bus from `new` until drop, and points at `T::ID_TABLE`
/// and `T::FEATURES`, which are `'static`.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: Driver> {
    #[pin]
    drv: Opaque<ffi::virtio_driver>,
    _t: PhantomData<T>,
}

// SAFETY: Registration has no methods; registering/unregistering is thread-safe in C.
unsafe impl<T: Driver> Send for Registration<T> {}
// SAFETY: As above, nothing is reachable through `&Registration`.
unsafe impl<T: Driver> Sync for Registration<T> {}

impl<T: Driver> Registration<T> {
    /// Registers driver `T` as `name` for `module`.
    pub(crate) fn new(
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            drv <- Opaque::try_ffi_init(|drv: *mut ffi::virtio_driver| {
                let ids = T::ID_TABLE;
                match ids.last() {
                    Some(last) if last.0.device == 0 => {}
                    _ => return Err(EINVAL),
                }
                let nfeat = u32::try_from(T::FEATURES.len()).map_err(|_| EINVAL)?;
                // SAFETY: `drv` points at writable, zeroed-by-us memory for a `virtio_driver`.
                unsafe {
                    drv.write(ffi::virtio_driver::default());
                    (*drv).driver.name = name.as_char_ptr();
                    (*drv).id_table = ids.as_ptr().cast();
                    (*drv).feature_table = T::FEATURES.as_ptr();
                    (*drv).feature_table_size = nfeat;
                    (*drv).validate = Some(Adapter::<T>::validate_callback);
                    (*drv).probe = Some(Adapter::<T>::probe_callback);
                    (*drv).remove = Some(Adapter::<T>::remove_callback);
                    (*drv).config_changed = Some(Adapter::<T>::config_changed_callback);
                }
                // SAFETY: `drv` is fully initialised and pinned; it stays registered until
                // `drop` unregisters it.
                to_result(unsafe { ffi::__register_virtio_driver(drv, module.as_ptr()) })
            }),
            _t: PhantomData,
        })
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant the driver is registered.
        unsafe { ffi::unregister_virtio_driver(self.drv.get()) };
    }
}
