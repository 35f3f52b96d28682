// SPDX-License-Identifier: GPL-2.0

//! Free page reporting (`REPORTING`): the kernel hands the driver batches of free pages, which
//! go to the host as device-writable buffers on the reporting queue, so the host can discard
//! their memory.

use super::VBalloon;
use crate::{balloon::validate, mm::Reporter, virtio::Segments};
use kernel::prelude::*;

impl Reporter for VBalloon {
    fn report(&self, pages: &mut Segments<'_>) -> Result {
        let guard = self.report_vq.lock();
        let (vq, _) = guard.as_ref().ok_or(ENODEV)?;
        vq.transfer_writable(pages, &self.acked)?;
        self.counters.reported(pages.bytes());
        Ok(())
    }
}

impl VBalloon {
    /// Registers with the kernel's free page reporting. A refusal (another device reports
    /// already) leaves the balloon working without it, with one line saying why.
    pub(super) fn start_reporting(&self) {
        let Some(capacity) = self.report_vq.lock().as_ref().map(|(_, c)| *c) else {
            return;
        };
        if let Err(errno) = self.reporting.register(capacity) {
            dev_warn!(
                self.dev.as_dev(),
                "free page reporting off: {} ({})\n",
                validate::registration_failure_reason(errno),
                errno
            );
        }
    }
}
