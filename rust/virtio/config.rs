// SPDX-License-Identifier: GPL-2.0

//! Typed fields of a device's configuration space.
//!
//! A driver describes its config space as a `#[repr(C)]` struct of [`Le32`] fields and names a
//! field with [`config_field!`], which takes the offset with `offset_of!` and checks at compile
//! time that the field is a `Le32` of that struct: an offset outside the layout, or of a field
//! of another width, does not compile. Fields that exist only with a feature carry that feature
//! bit; [`super::Device::read`] refuses them when it was not negotiated, because transports size
//! the config space by the negotiated features and a read past its end is a BUG on virtio-pci.

use core::marker::PhantomData;

/// A little-endian 32-bit config field, as the balloon's config space has (always LE, also on
/// legacy devices: the balloon is the one virtio device whose legacy config is LE).
#[repr(transparent)]
pub(crate) struct Le32(#[allow(dead_code)] [u8; 4]);

/// A `Le32` field of config layout `C`.
///
/// # Invariants
///
/// `offset` is the offset of a `Le32` field of `C`, so `offset + 4 <= size_of::<C>()`.
pub(crate) struct ConfigField<C> {
    offset: u32,
    feature: Option<u32>,
    _c: PhantomData<fn() -> C>,
}

impl<C> Clone for ConfigField<C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C> Copy for ConfigField<C> {}

impl<C> ConfigField<C> {
    /// Use [`config_field!`], which proves the invariant.
    ///
    /// # Safety
    ///
    /// `offset` is the offset of the `Le32` field of `C` that `_proof` returns.
    #[doc(hidden)]
    pub(crate) const unsafe fn __new(
        _proof: fn(&C) -> &Le32,
        offset: usize,
        feature: Option<u32>,
    ) -> Self {
        // Config spaces are tiny; a layout over 4 GiB would not compile to begin with.
        Self {
            offset: offset as u32,
            feature,
            _c: PhantomData,
        }
    }

    pub(super) fn offset(&self) -> u32 {
        self.offset
    }

    pub(super) fn feature(&self) -> Option<u32> {
        self.feature
    }
}

/// `config_field!(Layout, field)` or `config_field!(Layout, field, feature = BIT)`: a typed
/// [`ConfigField`] for `Layout::field`, which must be an [`Le32`].
macro_rules! config_field {
    ($layout:ty, $field:ident $(, feature = $bit:expr)?) => {
        // SAFETY: The offset is `offset_of!` of the very field the proof closure returns,
        // which the closure's type pins to a `Le32` of `$layout`.
        unsafe {
            $crate::virtio::ConfigField::<$layout>::__new(
                |c: &$layout| &c.$field,
                ::core::mem::offset_of!($layout, $field),
                $crate::virtio::config_field!(@feature $($bit)?),
            )
        }
    };
    (@feature) => { None };
    (@feature $bit:expr) => { Some($bit) };
}
pub(crate) use config_field;
