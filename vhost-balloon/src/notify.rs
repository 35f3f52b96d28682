// SPDX-License-Identifier: GPL-2.0

//! Config-change notifications to the guest: VHOST_USER_BACKEND_CONFIG_CHANGE_MSG on the
//! backend request channel (the socket QEMU hands over with VHOST_USER_SET_BACKEND_REQ_FD);
//! QEMU's vhost-user-base turns it into a config interrupt (`virtio_notify_config`).
//!
//! The vhost crate (0.18) gives the backend that channel only as a `vhost_user::Backend`, which
//! has no method for CONFIG_CHANGE_MSG and does not expose its socket. So the socket is found
//! by what it is: the AF_UNIX stream socket with no name (QEMU made it with `socketpair`) that
//! appeared between GET_PROTOCOL_FEATURES and SET_BACKEND_REQ_FD (QEMU sends the two in that
//! order while it sets the connection up). It is `dup`ed and written directly; the crate's
//! `Backend` is never used to send, so nothing else writes to it.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::mem;
use std::os::unix::io::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

/// VHOST_USER_BACKEND_CONFIG_CHANGE_MSG.
pub const BACKEND_CONFIG_CHANGE_MSG: u32 = 2;
/// VHOST_USER_VERSION in the header flags.
pub const VHOST_USER_VERSION: u32 = 0x1;

/// The whole message: header `{request, flags, size}` (u32 LE each), no payload. No
/// NEED_REPLY: QEMU then sends nothing back, so a notification never waits for QEMU.
pub fn config_change_msg() -> [u8; 12] {
    let mut m = [0u8; 12];
    m[0..4].copy_from_slice(&BACKEND_CONFIG_CHANGE_MSG.to_le_bytes());
    m[4..8].copy_from_slice(&VHOST_USER_VERSION.to_le_bytes());
    m
}

/// The backend request channel, for config-change notifications.
pub struct ConfigNotifier {
    sock: Mutex<UnixStream>,
}

impl ConfigNotifier {
    pub fn new(sock: UnixStream) -> Self {
        // A QEMU that stopped reading must not hang a control command forever.
        let _ = sock.set_write_timeout(Some(Duration::from_secs(2)));
        ConfigNotifier {
            sock: Mutex::new(sock),
        }
    }

    /// Sends one CONFIG_CHANGE_MSG. Never call with the state lock held: the write can block
    /// while QEMU's main loop waits for a GET_CONFIG answer that needs that lock.
    pub fn notify(&self) -> io::Result<()> {
        let mut s = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        s.write_all(&config_change_msg())
    }
}

/// This process's sockets: fd → inode.
pub fn socket_inodes() -> HashMap<RawFd, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        else {
            continue;
        };
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if let Some(ino) = link
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.insert(fd, ino);
        }
    }
    out
}

/// Whether `fd` is a connected, unnamed AF_UNIX stream socket (one end of a socketpair).
fn is_unnamed_unix_stream(fd: RawFd) -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `ty`, a c_int.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            &mut ty as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 || ty != libc::SOCK_STREAM {
        return false;
    }
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `addr`.
    let r = unsafe {
        libc::getsockname(
            fd,
            &mut addr as *mut libc::sockaddr_un as *mut libc::sockaddr,
            &mut len,
        )
    };
    if r != 0 || addr.sun_family != libc::AF_UNIX as libc::sa_family_t {
        return false;
    }
    // An unnamed socket's address is only the family.
    len as usize <= mem::size_of::<libc::sa_family_t>()
}

/// Finds the socket that is new since `before` (inodes) and is an unnamed AF_UNIX stream
/// socket, and returns a duplicate of it. With several candidates the highest fd wins.
pub fn find_new_channel(before: &HashSet<u64>) -> io::Result<UnixStream> {
    let fd = socket_inodes()
        .into_iter()
        .filter(|(fd, ino)| !before.contains(ino) && is_unnamed_unix_stream(*fd))
        .map(|(fd, _)| fd)
        .max()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "backend channel not found"))?;
    // SAFETY: plain fcntl on an fd this process has open; the result is a new fd we own.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh fd owned by nobody else, and it is a stream socket.
    Ok(unsafe { UnixStream::from_raw_fd(dup) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    use std::os::unix::net::UnixListener;

    fn inode(fd: RawFd) -> u64 {
        std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino()
    }

    #[test]
    fn message_layout() {
        let m = config_change_msg();
        assert_eq!(&m[0..4], &[2, 0, 0, 0]);
        assert_eq!(&m[4..8], &[1, 0, 0, 0]);
        assert_eq!(&m[8..12], &[0, 0, 0, 0]);
    }

    #[test]
    fn finds_the_new_socketpair_and_not_named_sockets() {
        let dir = std::env::temp_dir().join(format!("vbh-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.sock");
        let _ = std::fs::remove_file(&path);
        let before: HashSet<u64> = socket_inodes().into_values().collect();
        // Named sockets (a listener and an accepted connection) are not candidates; the
        // client end is unnamed but older (lower fd) than the pair.
        let listener = UnixListener::bind(&path).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let found = find_new_channel(&before).unwrap();
        let ino = inode(found.as_raw_fd());
        // Either end of the pair is unnamed; in QEMU's case only one end is in this process.
        assert!(ino == inode(ours.as_raw_fd()) || ino == inode(theirs.as_raw_fd()));
        if ino == inode(ours.as_raw_fd()) {
            let n = ConfigNotifier::new(found);
            n.notify().unwrap();
            let mut buf = [0u8; 12];
            theirs.read_exact(&mut buf).unwrap();
            assert_eq!(buf, config_change_msg());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
