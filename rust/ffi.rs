// SPDX-License-Identifier: GPL-2.0

//! The one `extern "C"` boundary of the module: bindings generated at build time from
//! `bindings.h` (virtio, balloon, and the C shim in `helpers.c`), on top of the kernel crate's
//! own bindings so shared types (`device`, `page`, `module`, ...) are the same types.
//!
//! Only `virtio`, `mm` and `kext` use this module; the driver never does.

#[allow(
    dead_code,
    improper_ctypes,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unreachable_pub,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
mod generated {
    pub(crate) use kernel::bindings::*;
    use kernel::ffi;
    use pin_init::MaybeZeroable;
    include!(env!("VBALLOON_GENERATED"));
}

pub(crate) use generated::*;
