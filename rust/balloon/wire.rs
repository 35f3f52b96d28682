// SPDX-License-Identifier: GPL-2.0

//! The byte order of what goes on the rings.
//!
//! Modern devices (`VIRTIO_F_VERSION_1`) are little-endian throughout. Legacy devices
//! (transitional PCI with the modern interface off, legacy virtio-mmio) use the guest's own
//! byte order for ring data: the PFN arrays (`__virtio32`) and the stats entries
//! (`__virtio16` tag, `__virtio64` value). The balloon's *config space* is the exception:
//! little-endian even on legacy devices, so config fields never go through this.

/// Byte order of ring data for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireEndian {
    /// Modern devices, and legacy devices on little-endian guests.
    Little,
    /// Legacy devices on big-endian guests.
    Big,
}

impl WireEndian {
    /// The rule: little-endian with `VIRTIO_F_VERSION_1`, else the guest's byte order.
    pub(crate) const fn for_device(version_1: bool, guest_big_endian: bool) -> Self {
        if version_1 || !guest_big_endian {
            Self::Little
        } else {
            Self::Big
        }
    }

    /// The rule on the running guest.
    pub(crate) const fn for_this_guest(version_1: bool) -> Self {
        Self::for_device(version_1, cfg!(target_endian = "big"))
    }

    pub(crate) const fn u16(self, v: u16) -> [u8; 2] {
        match self {
            Self::Little => v.to_le_bytes(),
            Self::Big => v.to_be_bytes(),
        }
    }

    pub(crate) const fn u32(self, v: u32) -> [u8; 4] {
        match self {
            Self::Little => v.to_le_bytes(),
            Self::Big => v.to_be_bytes(),
        }
    }

    pub(crate) const fn u64(self, v: u64) -> [u8; 8] {
        match self {
            Self::Little => v.to_le_bytes(),
            Self::Big => v.to_be_bytes(),
        }
    }
}
