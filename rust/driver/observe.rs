// SPDX-License-Identifier: GPL-2.0

//! What an operator sees: the counters as read-only files under the device in sysfs
//! (`/sys/bus/virtio/devices/virtioN/vballoon/`, stable names: [`Attr`]) and one
//! debugfs file with all of them plus the reason the balloon is where it is
//! (`/sys/kernel/debug/vballoon/virtioN`). Both read [`Counters`] without taking any of the
//! driver's locks. The trace events are in `kext::trace`, called where the work happens.

use super::{VBalloon, MIB};
use crate::{
    balloon::counters::{Attr, Live, Snapshot},
    kext,
    virtio::{AttrBuf, AttrGroup, Attributes, Device},
};
use kernel::{
    debugfs::File,
    device::Core,
    fmt,
    prelude::*,
    str::CString,
    sync::{Arc, ArcBorrow},
};

/// The files of one binding, removed at unbind.
///
/// # Invariants
///
/// `view`, while `Some`, is a file in `root`'s directory.
pub(super) struct Observe {
    attrs: Option<AttrGroup<VBalloon>>,
    view: Option<Pin<KBox<File<Arc<VBalloon>>>>>,
    root: Option<kext::shared_dir::Share>,
}

impl Drop for Observe {
    /// In order: the sysfs files, the debugfs file (both waiting out reads in progress), then
    /// this binding's share of the directory (the last share removes it).
    fn drop(&mut self) {
        drop(self.attrs.take());
        drop(self.view.take());
        drop(self.root.take());
    }
}

impl Attributes for VBalloon {
    const COUNT: usize = Attr::ALL.len();

    fn name(idx: usize) -> Option<&'static CStr> {
        Attr::ALL.get(idx).map(|a| a.c_name())
    }

    fn show(&self, idx: usize, out: &mut AttrBuf<'_>) -> fmt::Result {
        match Attr::ALL.get(idx) {
            Some(attr) => self.snapshot().attribute(*attr, out),
            None => Ok(()),
        }
    }
}

impl VBalloon {
    /// The counters now, with what only the driver knows live.
    pub(super) fn snapshot(&self) -> Snapshot {
        self.counters.snapshot(Live {
            page_bytes: self.geometry.page_bytes(),
            host_overdue: self.acked.overdue(),
            host_timeouts: self.acked.waits_past_limit(),
            now_ms: kext::boottime_ms(),
            floor_mib: self.floor_bytes / MIB,
            block_kib: u64::from(self.block_kib),
            host_timeout_ms: self.acked.limit_ms(),
        })
    }

    /// The debugfs view (see [`Snapshot::view`]).
    fn write_view(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().view(f)
    }

    /// Adds the sysfs directory and the debugfs file, once per binding (from `ready`; the
    /// files hold the binding until `remove` takes them). Either failing leaves the balloon
    /// working without it, with one line saying so.
    pub(super) fn start_observing(this: ArcBorrow<'_, Self>, dev: &Device<Core<'_>>) {
        let mut observe = this.observe.lock();
        if observe.is_some() {
            return;
        }
        let this: Arc<Self> = this.into();
        let attrs = match AttrGroup::add(dev, c"vballoon", this.clone()) {
            Ok(a) => Some(a),
            Err(e) => {
                dev_warn!(
                    dev.as_dev(),
                    "no counters in sysfs ({:?}); the balloon works without them\n",
                    e
                );
                None
            }
        };
        let root = kext::shared_dir::Share::take();
        // The device's own name (`virtio<index>`, as the bus names it).
        let name = CString::try_from_fmt(fmt!("virtio{}", dev.index())).ok();
        let view = match (root.as_ref().and_then(kext::shared_dir::Share::dir), name) {
            (Some(dir), Some(name)) => KBox::pin_init(
                dir.read_callback_file(&name, this.clone(), &|this, f| this.write_view(f)),
                GFP_KERNEL,
            )
            .ok(),
            _ => None,
        };
        if view.is_none() {
            dev_warn!(
                dev.as_dev(),
                "no view in debugfs (out of memory); the balloon works without it\n"
            );
        }
        // INVARIANT: `view` was made in `root`'s directory.
        *observe = Some(Observe { attrs, view, root });
    }

    /// Removes the files (waiting out reads in progress), first thing at unbind.
    pub(super) fn stop_observing(&self) {
        let gone = self.observe.lock().take();
        drop(gone);
    }
}
