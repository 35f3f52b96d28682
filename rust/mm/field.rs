// SPDX-License-Identifier: GPL-2.0

//! How a C callback that is handed a wrapper's C struct finds the Rust owner around it.

/// `Self` embeds an `F` at byte offset `OFFSET`.
///
/// # Safety
///
/// `OFFSET` must be the byte offset of a field of type `F` inside `Self`. Use
/// [`impl_has_field!`] rather than implementing this by hand.
pub(crate) unsafe trait HasField<F> {
    /// Byte offset of the field inside `Self`.
    const OFFSET: usize;
}

/// `impl_has_field!(Owner, field: FieldType)` implements [`HasField`] for `Owner`.
macro_rules! impl_has_field {
    ($type:ty, $field:ident : $fty:ty) => {
        // SAFETY: `offset_of!` gives the offset of the named field, whose type the
        // function below pins to `$fty`.
        unsafe impl $crate::mm::HasField<$fty> for $type {
            const OFFSET: usize = ::core::mem::offset_of!($type, $field);
        }
        const _: fn(&$type) -> &$fty = |t| &t.$field;
    };
}
pub(crate) use impl_has_field;

/// The owner of the `F` at `field`.
///
/// # Safety
///
/// `field` points at the `F` field of a live `T` (at `T::OFFSET`), which outlives `'a`.
pub(super) unsafe fn owner_of<'a, T: HasField<F>, F>(field: *const F) -> &'a T {
    // SAFETY: By the function's requirements, stepping back `OFFSET` bytes gives the `T`.
    unsafe { &*field.cast::<u8>().sub(T::OFFSET).cast::<T>() }
}
