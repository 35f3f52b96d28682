// SPDX-License-Identifier: GPL-2.0

//! The [`Driver`] trait and [`Adapter`], which implements the kernel's driver registration
//! traits for it (`kernel::driver::{DriverLayout, RegistrationOps}`), so a virtio driver is a
//! module through [`kernel::module_driver!`], like a PCI or platform driver.
//!
//! Per binding the adapter keeps a [`Binding`] in the device's driver data: the driver's data
//! and the binding's queue set. At unbind it calls `T::remove`, then marks the device broken,
//! resets it and deletes the queues itself, so a driver that forgets a queue or a pending
//! transfer cannot make the device use freed memory or wait forever.

use super::{
    device::{Device, OfferedFeatures},
    id::IdTable,
    queue::{VqFactory, VqSet},
};
use crate::ffi;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use kernel::{
    device::{self as kdev, Core, CoreInternal},
    driver,
    error::{from_result, to_result, VTABLE_DEFAULT_ERROR},
    prelude::*,
    sync::{Arc, ArcBorrow},
    types::Opaque,
    ThisModule,
};

/// Which queue a callback is for: its index in the order given to [`VqFactory::create`].
pub(crate) type QueueIndex = u16;

/// A virtio driver.
///
/// Context rules: `validate`, `probe`, `ready`, `remove`, `shutdown`, `freeze` and `restore`
/// run in process context and may sleep. `config_changed` may run in any context, hard IRQ included: queue
/// work, never sleep. `vq_callback` runs in hard-IRQ context: never sleep, never take a
/// sleeping lock, never allocate with a sleeping gfp.
#[vtable]
pub(crate) trait Driver: Send + Sync + Sized + 'static {
    /// Devices the driver binds.
    const ID_TABLE: IdTable;
    /// Feature bits the driver understands (offered to negotiation).
    const FEATURES: &'static [u32];

    /// At module load, before the driver registers (so before any probe): set up what every
    /// binding shares. It must stay sound if called again.
    fn module_init() {}

    /// Before feature negotiation completes: may refuse offered features.
    fn validate(_dev: &Device<Core<'_>>, _features: &mut OfferedFeatures<'_>) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Binds a device. The device is not yet `DRIVER_OK`: queues may be created (once, through
    /// `vqs`) and buffers added, but the device uses them only after [`Driver::ready`].
    fn probe(dev: &Device<Core<'_>>, vqs: VqFactory<'_, Self>) -> Result<Arc<Self>>;

    /// The device is `DRIVER_OK` and the driver's data is reachable from callbacks: after
    /// probe, once the binding is stored (from here on, `remove` runs at unbind; a failure
    /// after `probe` but before this drops the data without `remove`), and after every
    /// `restore`.
    fn ready(_dev: &Device<Core<'_>>, _this: ArcBorrow<'_, Self>) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// The device's configuration changed. Any context, hard IRQ included.
    fn config_changed(_this: ArcBorrow<'_, Self>) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// A virtqueue has used buffers. Hard-IRQ context.
    fn vq_callback(_this: ArcBorrow<'_, Self>, _queue: QueueIndex) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Unbinds the device: stop every work item and give back what the device holds. The
    /// queues still work here; afterwards the adapter breaks, resets and deletes them.
    /// Config-change callbacks are already off.
    fn remove(dev: &Device<Core<'_>>, this: ArcBorrow<'_, Self>);

    /// The system shuts down (reboot, poweroff, kexec): stop every work item and callback
    /// source of the driver's own (notifiers, shrinkers, work) so nothing runs against the
    /// device afterwards; give nothing back (the machine goes down). The queues still work
    /// here; afterwards the adapter breaks and resets the device as the core's generic
    /// shutdown does (`virtio_device_shutdown`). Without it, the core only breaks and resets
    /// the device, with the driver's work still live.
    fn shutdown(_dev: &Device<Core<'_>>, _this: ArcBorrow<'_, Self>) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// The system suspends: stop work and give back what the device holds. On success the
    /// adapter resets the device and deletes the queues; an error aborts the suspend. A driver
    /// without `restore` has the suspend refused for it (the device is reset on resume, and
    /// queues nobody re-created would hang the driver); its `freeze`, if any, is only a veto
    /// that may say why, and must not stop anything.
    fn freeze(_dev: &Device<Core<'_>>, _this: ArcBorrow<'_, Self>) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// The system resumed after a successful `freeze`: the device was reset; create the queues
    /// again through `vqs`. The adapter then sets `DRIVER_OK` and calls [`Driver::ready`].
    fn restore(
        _dev: &Device<Core<'_>>,
        _this: ArcBorrow<'_, Self>,
        _vqs: VqFactory<'_, Self>,
    ) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// The device context whose `drvdata_borrow` a callback may use outside probe and remove:
/// 7.3's `BoundInternal`; 7.2 has only `CoreInternal`, whose `drvdata_borrow` is the same
/// read of the driver data. The one place this layer depends on the kernel version.
#[cfg(vb_kernel_ge_7_3)]
type DrvdataContext<'a> = kdev::BoundInternal;
#[cfg(not(vb_kernel_ge_7_3))]
type DrvdataContext<'a> = CoreInternal<'a>;

/// What the adapter keeps per bound device (its driver data).
pub(crate) struct Binding<T: Driver> {
    data: Arc<T>,
    /// The binding's queue set, revoked at unbind and freeze. Under the device lock (probe,
    /// remove, freeze and restore are serialised by the driver core). An `UnsafeCell`, not an
    /// `Opaque`: a binding dropped with its set still in it (probe failing after the queues were
    /// made) must drop the set, which resets the device and deletes the queues.
    vqs: UnsafeCell<Option<Arc<VqSet>>>,
}

// SAFETY: `data` is `Send`; `vqs` is only touched under the device lock (see the field).
unsafe impl<T: Driver> Send for Binding<T> {}
// SAFETY: As above; callbacks share only `data`, which is `Sync`.
unsafe impl<T: Driver> Sync for Binding<T> {}

impl<T: Driver> Binding<T> {
    /// Takes the queue set out of the binding.
    ///
    /// # Safety
    ///
    /// The caller holds the device lock (a remove, freeze or restore callback).
    unsafe fn take_vqs(&self) -> Option<Arc<VqSet>> {
        // SAFETY: The device lock serialises every access (function requirement).
        unsafe { (*self.vqs.get()).take() }
    }

    /// Gives the binding a (new) queue set.
    ///
    /// # Safety
    ///
    /// As for [`Binding::take_vqs`].
    unsafe fn set_vqs(&self, vqs: Option<Arc<VqSet>>) {
        // SAFETY: The device lock serialises every access (function requirement).
        unsafe { *self.vqs.get() = vqs };
    }
}

/// The C entry points and the registration of driver `T`.
pub(crate) struct Adapter<T: Driver>(PhantomData<T>);

// SAFETY: `virtio_driver` is `repr(C)` and embeds a `struct device_driver` at `driver`; the
// driver data stored by `set_drvdata` is a `Binding<T>`.
unsafe impl<T: Driver> driver::DriverLayout for Adapter<T> {
    type DriverType = ffi::virtio_driver;
    type DriverData<'bound> = Binding<T>;
    const DEVICE_DRIVER_OFFSET: usize = core::mem::offset_of!(ffi::virtio_driver, driver);
}

// SAFETY: `unregister` is only called after `register` succeeded (the kernel's `Registration`).
unsafe impl<T: Driver> driver::RegistrationOps for Adapter<T> {
    unsafe fn register(
        drv: &Opaque<Self::DriverType>,
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> Result {
        let nfeat = u32::try_from(T::FEATURES.len()).map_err(|_| EINVAL)?;
        let d = drv.get();
        // SAFETY: `d` is a valid, default-initialised `virtio_driver` being set up; the tables
        // it points at are `'static`.
        unsafe {
            (*d).driver.name = name.as_char_ptr();
            (*d).id_table = T::ID_TABLE.as_ptr().cast();
            (*d).feature_table = T::FEATURES.as_ptr();
            (*d).feature_table_size = nfeat;
            if T::HAS_VALIDATE {
                (*d).validate = Some(Self::validate_callback);
            }
            (*d).probe = Some(Self::probe_callback);
            (*d).remove = Some(Self::remove_callback);
            if T::HAS_SHUTDOWN {
                (*d).shutdown = Some(Self::shutdown_callback);
            }
            (*d).config_changed = Some(Self::config_changed_callback);
            // Always set: without them the core would resume the driver on stale queues.
            (*d).freeze = Some(Self::freeze_callback);
            (*d).restore = Some(Self::restore_callback);
        }
        // SAFETY: `d` is initialised and pinned until `unregister`.
        to_result(unsafe { ffi::__register_virtio_driver(d, module.as_ptr()) })
    }

    unsafe fn unregister(drv: &Opaque<Self::DriverType>) {
        // SAFETY: Registered by `register` (trait requirement).
        unsafe { ffi::unregister_virtio_driver(drv.get()) };
    }
}

impl<T: Driver> Adapter<T> {
    /// The binding of a bound device, if its driver data is set.
    ///
    /// # Safety
    ///
    /// `vdev` is a valid device bound to this driver (any callback of it), and the caller uses
    /// the result only within the callback.
    unsafe fn binding<'a>(vdev: *mut ffi::virtio_device) -> Option<Pin<&'a Binding<T>>> {
        // SAFETY: `vdev` is valid (function requirement).
        let raw = unsafe { &raw mut (*vdev).dev };
        // SAFETY: `raw` is a valid device.
        if unsafe { kernel::bindings::dev_get_drvdata(raw) }.is_null() {
            return None;
        }
        // SAFETY: The device is bound to this driver for the callback; the reference is used
        // for `drvdata_borrow` only.
        let dev = unsafe { &*raw.cast::<kdev::Device<DrvdataContext<'a>>>() };
        // SAFETY: The non-null driver data was stored by `probe_callback` as a `Binding<T>`
        // and is dropped only after unbind.
        Some(unsafe { dev.drvdata_borrow::<Binding<T>>() })
    }

    extern "C" fn validate_callback(vdev: *mut ffi::virtio_device) -> kernel::ffi::c_int {
        // SAFETY: The virtio core passes a valid device, under its device lock.
        let dev = unsafe { Device::<Core<'_>>::from_raw(vdev) };
        let mut features = OfferedFeatures::new(dev);
        from_result(|| T::validate(dev, &mut features).map(|()| 0))
    }

    extern "C" fn probe_callback(vdev: *mut ffi::virtio_device) -> kernel::ffi::c_int {
        // SAFETY: The virtio core passes a valid device, under its device lock, in probe.
        let dev = unsafe { Device::<CoreInternal<'_>>::from_raw(vdev) };
        from_result(|| {
            let mut vqs = None;
            let data = match T::probe(dev, VqFactory::new(dev, &mut vqs)) {
                Ok(data) => data,
                Err(e) => {
                    // The queues go now, before the probe returns and another driver may bind
                    // the device, whatever handles the failed probe left behind.
                    Self::revoke(dev, vqs.take());
                    return Err(e);
                }
            };
            // Kept beside the binding so a failure to store it revokes the set here too.
            let set = vqs.clone();
            let binding = Binding {
                data,
                vqs: UnsafeCell::new(vqs),
            };
            let kdev: &kdev::Device<CoreInternal<'_>> = dev.as_ref();
            if let Err(e) = kdev.set_drvdata(Ok::<_, Error>(binding)) {
                Self::revoke(dev, set);
                return Err(e);
            }
            drop(set);
            // SAFETY: The device is valid; the driver's queues are set up.
            unsafe { ffi::vballoon_device_ready(vdev) };
            // SAFETY: The driver data was set just above; we are in probe.
            if let Some(b) = unsafe { Self::binding(vdev) } {
                if T::HAS_READY {
                    T::ready(dev, b.data.as_arc_borrow());
                }
            }
            Ok(0)
        })
    }

    extern "C" fn remove_callback(vdev: *mut ffi::virtio_device) {
        // SAFETY: The virtio core passes a valid device, under its device lock, in remove.
        let dev = unsafe { Device::<Core<'_>>::from_raw(vdev) };
        // SAFETY: In remove of a bound device.
        let Some(b) = (unsafe { Self::binding(vdev) }) else {
            return;
        };
        T::remove(dev, b.data.as_arc_borrow());
        // Whatever the driver left waiting on the device ends now; then the device lets go of
        // every buffer and the queues go. The driver core frees the binding after this.
        dev.mark_broken();
        // SAFETY: Under the device lock.
        if let Some(set) = unsafe { b.take_vqs() } {
            set.revoke();
        }
        dev.reset();
    }

    /// Breaks the device and revokes `set` (if any): the device uses no buffer and no queue is
    /// left when this returns.
    fn revoke(dev: &Device<Core<'_>>, set: Option<Arc<VqSet>>) {
        if let Some(set) = set {
            dev.mark_broken();
            set.revoke();
        }
    }

    extern "C" fn shutdown_callback(vdev: *mut ffi::virtio_device) {
        // SAFETY: The virtio core passes a valid device, under its device lock, at shutdown.
        let dev = unsafe { Device::<Core<'_>>::from_raw(vdev) };
        // SAFETY: In shutdown of a bound device.
        if let Some(b) = unsafe { Self::binding(vdev) } {
            T::shutdown(dev, b.data.as_arc_borrow());
        }
        // As the core's own shutdown path: break, wait out callbacks, reset.
        dev.shutdown();
    }

    extern "C" fn config_changed_callback(vdev: *mut ffi::virtio_device) {
        // SAFETY: Called by the virtio core with a valid device bound to this driver.
        if let Some(b) = unsafe { Self::binding(vdev) } {
            if T::HAS_CONFIG_CHANGED {
                T::config_changed(b.data.as_arc_borrow());
            }
        }
    }

    pub(super) extern "C" fn vq_callback(vq: *mut ffi::virtqueue) {
        // SAFETY: The virtio core passes a valid queue of a valid device.
        let (vdev, index) = unsafe { ((*vq).vdev, (*vq).index) };
        // SAFETY: `vdev` is the queue's device; queues exist only while it is bound to us.
        if let Some(b) = unsafe { Self::binding(vdev) } {
            if T::HAS_VQ_CALLBACK {
                // Indices are below the count given to `create`, a `u32` from a `usize`.
                T::vq_callback(b.data.as_arc_borrow(), index as QueueIndex);
            }
        }
    }

    extern "C" fn freeze_callback(vdev: *mut ffi::virtio_device) -> kernel::ffi::c_int {
        // SAFETY: The virtio core passes a valid device, under the device lock, in suspend.
        let dev = unsafe { Device::<Core<'_>>::from_raw(vdev) };
        // SAFETY: In a PM callback of a bound device.
        let Some(b) = (unsafe { Self::binding(vdev) }) else {
            return 0;
        };
        if T::HAS_FREEZE {
            // The driver may veto the suspend with its own reason.
            if let Err(e) = T::freeze(dev, b.data.as_arc_borrow()) {
                return e.to_errno();
            }
        }
        if !(T::HAS_FREEZE && T::HAS_RESTORE) {
            dev_err!(
                dev.as_dev(),
                "driver cannot resume (no freeze/restore); refusing the suspend\n"
            );
            return -(ffi::EOPNOTSUPP as kernel::ffi::c_int);
        }
        // SAFETY: Under the device lock.
        if let Some(set) = unsafe { b.take_vqs() } {
            set.revoke();
        }
        dev.reset();
        0
    }

    extern "C" fn restore_callback(vdev: *mut ffi::virtio_device) -> kernel::ffi::c_int {
        // SAFETY: The virtio core passes a valid device, under the device lock, in resume.
        let dev = unsafe { Device::<Core<'_>>::from_raw(vdev) };
        // SAFETY: In a PM callback of a bound device.
        let Some(b) = (unsafe { Self::binding(vdev) }) else {
            return 0;
        };
        if !(T::HAS_FREEZE && T::HAS_RESTORE) {
            // Unreachable: freeze refused. Nothing to restore.
            return 0;
        }
        from_result(|| {
            let mut vqs = None;
            let r = T::restore(dev, b.data.as_arc_borrow(), VqFactory::new(dev, &mut vqs));
            if let Err(e) = r {
                // No queue is left half-made: the set goes now, as after a failed probe.
                Self::revoke(dev, vqs.take());
                return Err(e);
            }
            // SAFETY: Under the device lock.
            unsafe { b.set_vqs(vqs) };
            // As after probe: the device goes live, then the driver may use it.
            // SAFETY: The device is valid; the driver's queues are set up again.
            unsafe { ffi::vballoon_device_ready(vdev) };
            if T::HAS_READY {
                T::ready(dev, b.data.as_arc_borrow());
            }
            Ok(0)
        })
    }
}

/// Declares a kernel module whose one job is registering virtio driver `type`, with the
/// `module!` fields that follow it. [`Driver::module_init`] runs first.
macro_rules! module_virtio_driver {
    (type: $type:ty, $($f:tt)*) => {
        #[::kernel::prelude::pin_data]
        struct DriverModule {
            #[pin]
            _driver: ::kernel::driver::Registration<$crate::virtio::Adapter<$type>>,
        }

        impl ::kernel::InPlaceModule for DriverModule {
            fn init(
                module: &'static ::kernel::ThisModule,
            ) -> impl ::pin_init::PinInit<Self, ::kernel::error::Error> {
                <$type as $crate::virtio::Driver>::module_init();
                ::kernel::try_pin_init!(Self {
                    _driver <- ::kernel::driver::Registration::new(
                        <Self as ::kernel::ModuleMetadata>::NAME,
                        module,
                    ),
                })
            }
        }

        ::kernel::prelude::module! {
            type: DriverModule,
            $($f)*
        }
    };
}
pub(crate) use module_virtio_driver;
