// SPDX-License-Identifier: GPL-2.0

//! Suspend and resume.
//!
//! Not supported yet: a resume resets the device, and re-creating the queues and re-inflating
//! to the host's standing target is still to come. Until then the driver vetoes the suspend
//! (the kernel aborts it and the balloon keeps working) instead of resuming on dead queues.

use super::VBalloon;
use kernel::{device::Core, prelude::*};

use crate::virtio::Device;

impl VBalloon {
    /// `freeze`: refuse, with one line saying why and what the balloon holds.
    pub(super) fn refuse_suspend(&self, dev: &Device<Core<'_>>) -> Result {
        let held = self.state.lock().held;
        dev_warn!(
            dev.as_dev(),
            "refusing to suspend: vballoon does not support suspend/resume yet (balloon holds {} MiB); the suspend is aborted\n",
            self.held_mib(held)
        );
        Err(EBUSY)
    }
}
