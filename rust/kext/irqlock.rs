// SPDX-License-Identifier: GPL-2.0

//! A spinlock taken with local interrupts off, for state a hard-IRQ callback shares with process
//! context: 7.3's `SpinLockIrq`, or, on 7.2 (whose kernel crate has none), the same lock class
//! built on `spin_lock_irqsave`. The one place the driver's locks depend on the kernel version
//! (`vb_kernel_ge_7_3` comes from Kbuild).

#[cfg(vb_kernel_ge_7_3)]
pub(crate) use kernel::{new_spinlock_irq as new_irq_lock, sync::SpinLockIrq as IrqLock};

#[cfg(not(vb_kernel_ge_7_3))]
pub(crate) use v7_2::{new_irq_lock, IrqLock};

#[cfg(not(vb_kernel_ge_7_3))]
mod v7_2 {
    use crate::ffi;
    use kernel::sync::lock::{spinlock::SpinLockBackend, Backend, Lock};

    /// `spin_lock_irqsave` on a `spinlock_t`; the guard carries the saved interrupt flags.
    pub(crate) struct IrqSaveBackend;

    /// A spinlock whose guard holds local interrupts off (7.3's `SpinLockIrq`).
    pub(crate) type IrqLock<T> = Lock<T, IrqSaveBackend>;

    // SAFETY: The state is a `spinlock_t` initialised by the plain spinlock backend's `init`
    // (same lock, same lockdep class); `lock` and `try_lock` acquire it with interrupts saved
    // and disabled and return the flags, which `unlock` restores as it releases that same
    // acquisition, so the lock is held exactly between a successful lock and its unlock.
    unsafe impl Backend for IrqSaveBackend {
        type State = kernel::bindings::spinlock_t;
        type GuardState = kernel::ffi::c_ulong;

        unsafe fn init(
            ptr: *mut Self::State,
            name: *const kernel::ffi::c_char,
            key: *mut kernel::bindings::lock_class_key,
        ) {
            // SAFETY: The caller's contract is `Backend::init`'s, which the plain backend's
            // `init` has too.
            unsafe { <SpinLockBackend as Backend>::init(ptr, name, key) }
        }

        unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
            // SAFETY: `ptr` is an initialised spinlock (caller's contract).
            unsafe { ffi::vballoon_spin_lock_irqsave(ptr) }
        }

        unsafe fn try_lock(ptr: *mut Self::State) -> Option<Self::GuardState> {
            let mut flags = 0;
            // SAFETY: `ptr` is an initialised spinlock (caller's contract); `flags` is a local.
            (unsafe { ffi::vballoon_spin_trylock_irqsave(ptr, &mut flags) } != 0).then_some(flags)
        }

        unsafe fn unlock(ptr: *mut Self::State, flags: &Self::GuardState) {
            // SAFETY: The caller holds the lock, taken by `lock`/`try_lock`, which returned
            // `flags`.
            unsafe { ffi::vballoon_spin_unlock_irqrestore(ptr, *flags) }
        }

        unsafe fn assert_is_held(ptr: *mut Self::State) {
            // SAFETY: Same state as the plain backend's, same contract.
            unsafe { <SpinLockBackend as Backend>::assert_is_held(ptr) }
        }
    }

    /// `new_spinlock_irq!` for [`IrqLock`].
    macro_rules! new_irq_lock {
        ($inner:expr $(, $name:literal)? $(,)?) => {
            $crate::kext::irqlock::IrqLock::new(
                $inner,
                ::kernel::optional_name!($($name)?),
                ::kernel::static_lock_class!(),
            )
        };
    }
    pub(crate) use new_irq_lock;
}
