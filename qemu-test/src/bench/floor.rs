//! The host floor: how long the host's own discard of 3 GiB takes with no guest at all, the
//! way each host does it. A driver cannot inflate faster than its host discards, so each
//! inflate time is also printed as a multiple of the floor that applies.

use super::probe::HostKind;
use anyhow::{bail, Result};
use std::time::Instant;

/// How much the floor discards (the 3 GiB inflate).
pub const LEN: usize = 3 << 30;
const PAGE: usize = 4096;
const HUGE: usize = 2 << 20;
const REPS: usize = 3;

/// Seconds to discard [`LEN`] bytes, medians of [`REPS`].
#[derive(Clone, Debug, Default)]
pub struct Floor {
    /// Anonymous memory with MADV_HUGEPAGE (QEMU's RAM): one madvise(DONTNEED) per 4 KiB,
    /// as QEMU's virtio-balloon does.
    pub anon_4k: f64,
    /// The same, one madvise over the whole 3 GiB.
    pub anon_whole: f64,
    /// A shared memfd (the vhost host's guest RAM): fallocate(PUNCH_HOLE) per 4 KiB.
    pub memfd_4k: f64,
    /// The same per 1 MiB, the largest run a buffer of 256 PFNs can name.
    pub memfd_1m: f64,
    /// AnonHugePages of the touched anonymous region (KiB): whether THP backed it as it backs
    /// QEMU's RAM.
    pub anon_thp_kib: u64,
}

impl Floor {
    /// The floor an inflate on `host` is held against: QEMU discards each 4 KiB page with
    /// its own madvise; the vhost host punches one hole per run of at most 1 MiB.
    pub fn for_host(&self, host: HostKind) -> f64 {
        match host {
            HostKind::Qemu => self.anon_4k,
            HostKind::VhostRanges => self.memfd_1m,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes one byte per 4 KiB page.
fn touch(p: *mut u8) {
    for off in (0..LEN).step_by(PAGE) {
        // SAFETY: p is a mapping of LEN writable bytes.
        unsafe { p.add(off).write_volatile(1) };
    }
}

fn errno(what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", std::io::Error::last_os_error())
}

/// 2 MiB-aligned anonymous mapping of LEN bytes with MADV_HUGEPAGE, as QEMU maps RAM.
/// Returns (the mapping as made, its length, the aligned start).
fn anon_map() -> Result<(*mut libc::c_void, usize, *mut u8)> {
    let len = LEN + HUGE;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(errno("mmap 3 GiB anonymous"));
    }
    let start = (p as usize).next_multiple_of(HUGE) as *mut u8;
    // SAFETY: [start, start + LEN) lies inside the mapping.
    if unsafe { libc::madvise(start.cast(), LEN, libc::MADV_HUGEPAGE) } != 0 {
        return Err(errno("madvise HUGEPAGE"));
    }
    Ok((p, len, start))
}

fn self_anon_huge_kib() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("AnonHugePages:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Times madvise(DONTNEED) over the touched anonymous region in steps of `step`.
fn anon_once(step: usize, thp: &mut u64) -> Result<f64> {
    let (p, len, start) = anon_map()?;
    touch(start);
    *thp = (*thp).max(self_anon_huge_kib());
    let t = Instant::now();
    let mut off = 0;
    while off < LEN {
        // SAFETY: inside the mapping; DONTNEED only drops our own private pages.
        if unsafe { libc::madvise(start.add(off).cast(), step, libc::MADV_DONTNEED) } != 0 {
            return Err(errno("madvise DONTNEED"));
        }
        off += step;
    }
    let secs = t.elapsed().as_secs_f64();
    // SAFETY: unmaps exactly what anon_map mapped.
    unsafe { libc::munmap(p, len) };
    Ok(secs)
}

/// Times fallocate(PUNCH_HOLE | KEEP_SIZE) over a touched, shared-mapped 3 GiB memfd in
/// steps of `step`.
fn memfd_once(step: usize) -> Result<f64> {
    // SAFETY: the name is a NUL-terminated literal.
    let fd = unsafe { libc::memfd_create(c"vballoon-floor".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(errno("memfd_create"));
    }
    let r = (|| {
        // SAFETY: fd is our memfd.
        if unsafe { libc::ftruncate(fd, LEN as libc::off_t) } != 0 {
            return Err(errno("ftruncate"));
        }
        // SAFETY: a fresh shared mapping of our memfd.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(errno("mmap memfd"));
        }
        touch(p.cast());
        let t = Instant::now();
        let mut off = 0;
        while off < LEN {
            // SAFETY: fd is our memfd; punching a hole only drops its pages.
            let rc = unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    off as libc::off_t,
                    step as libc::off_t,
                )
            };
            if rc != 0 {
                return Err(errno("fallocate PUNCH_HOLE"));
            }
            off += step;
        }
        let secs = t.elapsed().as_secs_f64();
        // SAFETY: unmaps exactly what was mapped above.
        unsafe { libc::munmap(p, LEN) };
        Ok(secs)
    })();
    // SAFETY: closes our own fd once.
    unsafe { libc::close(fd) };
    r
}

/// Measures the floor: each way [`REPS`] times, interleaved, medians.
pub fn measure() -> Result<Floor> {
    let (mut a4, mut aw, mut m4, mut m1) = (vec![], vec![], vec![], vec![]);
    let mut thp = 0;
    for _ in 0..REPS {
        a4.push(anon_once(PAGE, &mut thp)?);
        aw.push(anon_once(LEN, &mut thp)?);
        m4.push(memfd_once(PAGE)?);
        m1.push(memfd_once(1 << 20)?);
    }
    let f = Floor {
        anon_4k: median(a4),
        anon_whole: median(aw),
        memfd_4k: median(m4),
        memfd_1m: median(m1),
        anon_thp_kib: thp,
    };
    if f.anon_4k <= 0.0 || f.memfd_1m <= 0.0 {
        bail!("floor measured no time: {f:?}");
    }
    Ok(f)
}
