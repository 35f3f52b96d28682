// SPDX-License-Identifier: GPL-2.0

//! Read-only sysfs attributes of a bound virtio device: a named directory of files under the
//! device (`/sys/bus/virtio/devices/virtioN/<group>/`), each read through the owner's
//! [`Attributes::show`]. The group exists exactly as long as its [`AttrGroup`]; dropping it
//! removes the files and waits out reads in progress.

use super::device::Device;
use crate::ffi;
use core::{ffi::c_void, fmt, ptr::NonNull};
use kernel::{device::Core, error::to_result, prelude::*, sync::Arc};

/// What the files of a group show.
pub(crate) trait Attributes: Send + Sync + 'static {
    /// How many files.
    const COUNT: usize;

    /// The name of file `idx` (`0..COUNT`).
    fn name(idx: usize) -> Option<&'static CStr>;

    /// Writes file `idx`'s contents (by sysfs convention, one value and a newline).
    /// Runs in process context, for any reader, while the group exists.
    fn show(&self, idx: usize, out: &mut AttrBuf<'_>) -> fmt::Result;
}

/// The buffer a sysfs read fills (a page); what does not fit is cut off.
pub(crate) struct AttrBuf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for AttrBuf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len().saturating_sub(self.len);
        let n = s.len().min(room);
        if let Some(dst) = self.buf.get_mut(self.len..) {
            // A zip, not copy_from_slice: nothing to prove about the two lengths.
            for (d, c) in dst.iter_mut().zip(s.as_bytes().iter().take(n)) {
                *d = *c;
            }
            self.len = self.len.saturating_add(n);
        }
        Ok(())
    }
}

/// What each file of a group passes back to Rust: the owner's entry, then its data.
///
/// `show` is the first field of a `#[repr(C)]` struct, so the C-called entry finds it at the
/// hook's address whatever `T` is.
#[repr(C)]
struct Hook<T> {
    show: unsafe fn(*const c_void, usize, &mut AttrBuf<'_>),
    data: Arc<T>,
}

impl<T: Attributes> Hook<T> {
    /// # Safety
    ///
    /// `hook` is the address of a live `Hook<T>`.
    unsafe fn show(hook: *const c_void, idx: usize, out: &mut AttrBuf<'_>) {
        // SAFETY: Function requirement.
        let hook = unsafe { &*hook.cast::<Hook<T>>() };
        if idx < T::COUNT {
            // A formatting error only shortens what the reader gets.
            let _ = hook.data.show(idx, out);
        }
    }
}

/// A directory of read-only files under a virtio device, showing `T`.
///
/// # Invariants
///
/// `raw` is a group added under the device by `vballoon_attrs_add`, which holds a reference
/// to the device; every file's read reaches `_hook`, which is boxed (its address is stable)
/// and lives until after the group is removed in `drop` (fields drop after `Drop::drop`).
pub(crate) struct AttrGroup<T: Attributes> {
    raw: NonNull<ffi::vballoon_attrs>,
    /// Only C reads it, through the address handed over in `add`; Rust only keeps it alive.
    _hook: KBox<Hook<T>>,
}

// SAFETY: The group is only added and removed (from any thread); `T` is `Send + Sync`.
unsafe impl<T: Attributes> Send for AttrGroup<T> {}
// SAFETY: `&AttrGroup` offers nothing.
unsafe impl<T: Attributes> Sync for AttrGroup<T> {}

impl<T: Attributes> AttrGroup<T> {
    /// Adds the directory `name` with one read-only file per [`Attributes::name`], showing
    /// `data`.
    /// Only a driver's probe can call this (it takes the device in its `Core` context).
    pub(crate) fn add(dev: &Device<Core<'_>>, name: &'static CStr, data: Arc<T>) -> Result<Self> {
        let hook = KBox::new(
            Hook {
                show: Hook::<T>::show,
                data,
            },
            GFP_KERNEL,
        )?;
        let mut names = KVec::with_capacity(T::COUNT, GFP_KERNEL)?;
        for idx in 0..T::COUNT {
            crate::kext::push(
                &mut names,
                T::name(idx).ok_or(EINVAL)?.as_char_ptr(),
                GFP_KERNEL,
            )?;
        }
        let n = u32::try_from(names.len()).map_err(|_| EINVAL)?;
        let mut raw = core::ptr::null_mut();
        // SAFETY: `dev` is a live, bound virtio device; `name` and every entry of `names` are
        // 'static C strings (the attributes keep pointing at them); `hook` lives until the
        // group is removed (invariant, established here); `raw` is written only on success.
        to_result(unsafe {
            ffi::vballoon_attrs_add(
                dev.as_raw(),
                name.as_char_ptr(),
                names.as_ptr(),
                n,
                core::ptr::from_ref(&*hook).cast(),
                &mut raw,
            )
        })?;
        let raw = NonNull::new(raw).ok_or(ENOMEM)?;
        Ok(Self { raw, _hook: hook })
    }
}

impl<T: Attributes> Drop for AttrGroup<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is our group (invariant); after this no read runs or starts, so the
        // hook may go.
        unsafe { ffi::vballoon_attrs_remove(self.raw.as_ptr()) };
    }
}

/// Reached from C's `vballoon_attr_show` (a direct call, so kernel CFI never compares a Rust
/// function's type with the sysfs callback type). Returns the bytes written to `buf`.
///
/// # Safety
///
/// `hook` is the hook of a live [`AttrGroup`]; `buf` is valid for writes of `len` bytes.
#[no_mangle]
unsafe extern "C" fn vballoon_rust_attr_show(
    hook: *const c_void,
    idx: u32,
    buf: *mut u8,
    len: kernel::ffi::c_ulong,
) -> kernel::ffi::c_long {
    // SAFETY: `hook` points at a `Hook<T>`, whose first field (`#[repr(C)]`) is its entry;
    // that field's type does not depend on `T`.
    let show = unsafe { *hook.cast::<unsafe fn(*const c_void, usize, &mut AttrBuf<'_>)>() };
    // The kernel's `unsigned long` is `usize`.
    let len: usize = len;
    // SAFETY: Function requirement: `buf` is valid for `len` bytes, ours for this call.
    let buf = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    let mut out = AttrBuf { buf, len: 0 };
    // SAFETY: The hook is live (function requirement) and `show` is its own entry.
    unsafe { show(hook, idx as usize, &mut out) };
    kernel::ffi::c_long::try_from(out.len).unwrap_or(0)
}
