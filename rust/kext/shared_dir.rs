// SPDX-License-Identifier: GPL-2.0

//! The module's one debugfs directory, shared by every binding: made by the first binding that
//! takes a share, removed when the last share goes (so a second device's file goes beside the
//! first's, and rmmod leaves nothing behind). The 7.3 `kernel` crate's `Dir` is per owner; a
//! module-wide directory needs a global lock initialised once, which is what this keeps out of
//! the driver.

use core::sync::atomic::{AtomicBool, Ordering};
use kernel::{debugfs::Dir, prelude::*};

/// # Invariants
///
/// `users` is the number of live [`Share`]s; `dir` is `Some` exactly when it is non-zero.
struct Root {
    users: usize,
    dir: Option<Dir>,
}

kernel::sync::global_lock! {
    // SAFETY: `init` initialises it once (guarded by `CLAIMED`), and nothing locks it before
    // `READY` says so.
    unsafe(uninit) static ROOT: Mutex<Root> = Root { users: 0, dir: None };
}

/// Set (release) once `ROOT` is initialised; read (acquire) before every lock of it.
static READY: AtomicBool = AtomicBool::new(false);
/// Set by the one `init` call that initialises `ROOT`.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// The directory's name under `/sys/kernel/debug`.
const NAME: &CStr = c"vballoon";

/// Makes shares possible (from the module's init, before any binding; a second call does
/// nothing). Before it, [`Share::take`] returns `None`.
pub(crate) fn init() {
    if CLAIMED.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: Only the one call that claimed it gets here, and nothing locks `ROOT` before
    // `READY` is set below.
    unsafe { ROOT.init() };
    READY.store(true, Ordering::Release);
}

/// One binding's share of the module's directory.
pub(crate) struct Share(Option<Dir>);

impl Share {
    /// Takes a share, making the directory if this is the first. `None` before [`init`].
    pub(crate) fn take() -> Option<Self> {
        if !READY.load(Ordering::Acquire) {
            return None;
        }
        let mut root = ROOT.lock();
        let dir = root.dir.get_or_insert_with(|| Dir::new(NAME)).clone();
        root.users = root.users.saturating_add(1);
        Some(Self(Some(dir)))
    }

    /// The directory, to put files in.
    pub(crate) fn dir(&self) -> Option<&Dir> {
        self.0.as_ref()
    }
}

impl Drop for Share {
    /// Gives the share back under the lock, removing the directory with the last one, so a
    /// share taken meanwhile makes it again rather than colliding with one being removed.
    fn drop(&mut self) {
        // A share exists only once `READY` is set (`take`).
        let mut root = ROOT.lock();
        drop(self.0.take());
        root.users = root.users.saturating_sub(1);
        if root.users == 0 {
            drop(root.dir.take());
        }
    }
}
