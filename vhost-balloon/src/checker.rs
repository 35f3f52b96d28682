// SPDX-License-Identifier: GPL-2.0

//! The balloon protocol as the host sees it: feature bits, which queue is which, the wire
//! formats (PFN arrays, stats entries) and the protocol checker that records what a guest
//! driver does wrong. Nothing here touches a vring or guest memory, so all of it is unit tested.

use std::collections::HashSet;

/// VIRTIO_BALLOON_F_STATS_VQ.
pub const F_STATS_VQ: u32 = 1;
/// VIRTIO_BALLOON_F_DEFLATE_ON_OOM.
pub const F_DEFLATE_ON_OOM: u32 = 2;
/// VIRTIO_BALLOON_F_PAGE_POISON: the guest writes `poison_val` (config bytes 12..16).
pub const F_PAGE_POISON: u32 = 4;
/// VIRTIO_BALLOON_F_REPORTING. (MUST_TELL_HOST and FREE_PAGE_HINT are never offered.)
pub const F_REPORTING: u32 = 5;

/// The balloon's page size: PFNs are 4 KiB frame numbers whatever the guest's page size.
pub const PAGE_SIZE: u64 = 4096;
/// VIRTIO_BALLOON_ARRAY_PFNS_MAX in Linux: the most PFNs one inflate/deflate buffer may hold.
pub const MAX_PFNS: u64 = 256;
/// One stats entry on the wire: `tag: u16 LE, val: u64 LE`, packed.
pub const STATS_ENTRY: usize = 10;
/// At most this many violation strings are kept (the count goes on).
pub const MAX_VIOLATIONS: usize = 200;

/// Parses the `--features` list (`stats,oom,reporting`, `none` or empty for none) into balloon
/// feature bits.
pub fn parse_features(list: &str) -> Result<u64, String> {
    let mut bits = 0u64;
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        bits |= match name {
            "none" => 0,
            "stats" => 1 << F_STATS_VQ,
            "oom" => 1 << F_DEFLATE_ON_OOM,
            "reporting" => 1 << F_REPORTING,
            "poison" => 1 << F_PAGE_POISON,
            other => {
                return Err(format!(
                    "unknown feature {other:?} (stats, oom, reporting, poison)"
                ))
            }
        };
    }
    Ok(bits)
}

/// What a virtqueue is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Inflate,
    Deflate,
    Stats,
    Reporting,
}

/// The role of queue `idx` under the negotiated `features`: 0 inflateq, 1 deflateq, then statsq
/// if STATS_VQ, then reporting_vq if REPORTING (absent queues take no index; this host never
/// offers FREE_PAGE_HINT, so there is no free page queue).
pub fn queue_role(features: u64, idx: usize) -> Option<Role> {
    let mut roles = vec![Role::Inflate, Role::Deflate];
    if features & (1 << F_STATS_VQ) != 0 {
        roles.push(Role::Stats);
    }
    if features & (1 << F_REPORTING) != 0 {
        roles.push(Role::Reporting);
    }
    roles.get(idx).copied()
}

/// Splits an inflate/deflate buffer into its u32 LE PFNs (a trailing partial PFN is dropped).
pub fn parse_pfns(buf: &[u8]) -> Vec<u32> {
    buf.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Splits a stats buffer into `(tag, value)` entries (a trailing partial entry is dropped).
pub fn parse_stats(buf: &[u8]) -> Vec<(u16, u64)> {
    buf.chunks_exact(STATS_ENTRY)
        .map(|c| {
            let tag = u16::from_le_bytes([c[0], c[1]]);
            let mut v = [0u8; 8];
            v.copy_from_slice(&c[2..10]);
            (tag, u64::from_le_bytes(v))
        })
        .collect()
}

/// Sorted runs of consecutive PFNs: `(first_pfn, count)`.
pub fn pfn_runs(pfns: &[u32]) -> Vec<(u64, u64)> {
    let mut sorted: Vec<u64> = pfns.iter().map(|&p| u64::from(p)).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for p in sorted {
        match runs.last_mut() {
            Some((start, n)) if *start + *n == p => *n += 1,
            _ => runs.push((p, 1)),
        }
    }
    runs
}

/// Inflate or deflate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Inflate,
    Deflate,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::Inflate => "inflate",
            Dir::Deflate => "deflate",
        }
    }
}

/// The protocol checker: the set of PFNs the guest has given to the host, counters, and the
/// violations seen. It never fails; it records.
#[derive(Default)]
pub struct Checker {
    inflated: HashSet<u32>,
    /// Guest RAM as `(start, len)` guest-physical ranges (from the vhost-user memory table).
    regions: Vec<(u64, u64)>,
    pub inflate_bufs: u64,
    pub deflate_bufs: u64,
    pub inflated_pfns: u64,
    pub deflated_pfns: u64,
    /// Deflated PFNs that were not inflated (forgiven, but counted).
    pub deflate_unknown: u64,
    pub max_pfns_in_buffer: u64,
    pub reporting_bufs: u64,
    pub reported_bytes: u64,
    pub resets: u64,
    pub violations: Vec<String>,
    pub violations_total: u64,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    /// PFNs currently inflated.
    pub fn ballooned(&self) -> u64 {
        self.inflated.len() as u64
    }

    pub fn set_regions(&mut self, regions: Vec<(u64, u64)>) {
        self.regions = regions;
    }

    pub fn regions(&self) -> &[(u64, u64)] {
        &self.regions
    }

    /// Whether `[addr, addr + len)` lies inside one RAM region. With no memory table yet,
    /// everything is accepted (nothing to check against).
    pub fn in_ram(&self, addr: u64, len: u64) -> bool {
        if self.regions.is_empty() {
            return true;
        }
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.regions
            .iter()
            .any(|&(start, size)| addr >= start && end <= start.saturating_add(size))
    }

    pub fn violation(&mut self, msg: String) {
        self.violations_total += 1;
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(msg);
        }
    }

    /// Checks the shape of an inflate/deflate buffer of `len` device-readable bytes, of which
    /// `writable` were device-writable (there must be none).
    pub fn check_buffer(&mut self, dir: Dir, len: u64, writable: u64) {
        match dir {
            Dir::Inflate => self.inflate_bufs += 1,
            Dir::Deflate => self.deflate_bufs += 1,
        }
        let pfns = len / 4;
        self.max_pfns_in_buffer = self.max_pfns_in_buffer.max(pfns);
        if len > MAX_PFNS * 4 {
            self.violation(format!(
                "{}: buffer of {len} bytes ({pfns} PFNs), more than {MAX_PFNS} PFNs",
                dir.name()
            ));
        }
        if !len.is_multiple_of(4) {
            self.violation(format!(
                "{}: buffer of {len} bytes, not a multiple of 4",
                dir.name()
            ));
        }
        if len == 0 {
            self.violation(format!("{}: empty buffer", dir.name()));
        }
        if writable != 0 {
            self.violation(format!(
                "{}: buffer has {writable} device-writable bytes",
                dir.name()
            ));
        }
    }

    fn pfn_in_ram(&mut self, dir: Dir, pfn: u32) -> bool {
        let addr = u64::from(pfn) * PAGE_SIZE;
        if self.in_ram(addr, PAGE_SIZE) {
            return true;
        }
        self.violation(format!(
            "{}: PFN {pfn:#x} (address {addr:#x}) outside guest RAM",
            dir.name()
        ));
        false
    }

    /// The guest inflated `pfns`; returns the ones newly given to the host (in RAM and not
    /// already inflated), which the host may discard.
    pub fn inflate(&mut self, pfns: &[u32]) -> Vec<u32> {
        let mut fresh = Vec::with_capacity(pfns.len());
        for &pfn in pfns {
            self.inflated_pfns += 1;
            if !self.pfn_in_ram(Dir::Inflate, pfn) {
                continue;
            }
            if self.inflated.insert(pfn) {
                fresh.push(pfn);
            } else {
                self.violation(format!(
                    "inflate: PFN {pfn:#x} already inflated (no deflate since)"
                ));
            }
        }
        fresh
    }

    /// The guest deflated `pfns`.
    pub fn deflate(&mut self, pfns: &[u32]) {
        for &pfn in pfns {
            self.deflated_pfns += 1;
            if !self.pfn_in_ram(Dir::Deflate, pfn) {
                continue;
            }
            if !self.inflated.remove(&pfn) {
                self.deflate_unknown += 1;
            }
        }
    }

    /// One free page report range `[addr, addr + len)`; returns whether it is in guest RAM.
    pub fn report_range(&mut self, addr: u64, len: u64) -> bool {
        self.reported_bytes += len;
        if self.in_ram(addr, len) {
            return true;
        }
        self.violation(format!(
            "reporting: range {addr:#x}+{len:#x} outside guest RAM"
        ));
        false
    }

    /// A device reset: the guest owns all its memory again.
    pub fn reset(&mut self) {
        self.inflated.clear();
        self.resets += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// RAM like QEMU's pc machine with 6 GiB: 0-640K, 1M-3G, 4G-7G.
    fn checker() -> Checker {
        let mut c = Checker::new();
        c.set_regions(vec![
            (0, 0xa0000),
            (0x10_0000, 3 * GIB - 0x10_0000),
            (4 * GIB, 3 * GIB),
        ]);
        c
    }

    fn le(pfns: &[u32]) -> Vec<u8> {
        pfns.iter().flat_map(|p| p.to_le_bytes()).collect()
    }

    #[test]
    fn pfns_parse_little_endian() {
        assert_eq!(
            parse_pfns(&le(&[1, 0x12345678, u32::MAX])),
            vec![1, 0x12345678, u32::MAX]
        );
        assert_eq!(parse_pfns(&[1, 0, 0, 0, 9]), vec![1]);
        assert!(parse_pfns(&[]).is_empty());
    }

    #[test]
    fn stats_parse_packed_entries() {
        let mut buf = Vec::new();
        for (tag, val) in [(0u16, 5u64), (7, 0x1122_3344_5566_7788)] {
            buf.extend_from_slice(&tag.to_le_bytes());
            buf.extend_from_slice(&val.to_le_bytes());
        }
        buf.push(0xff);
        assert_eq!(parse_stats(&buf), vec![(0, 5), (7, 0x1122_3344_5566_7788)]);
    }

    #[test]
    fn runs_merge_consecutive_pfns() {
        assert_eq!(pfn_runs(&[5, 3, 4, 10, 11, 4]), vec![(3, 3), (10, 2)]);
        assert!(pfn_runs(&[]).is_empty());
    }

    #[test]
    fn features_parse() {
        assert_eq!(parse_features("stats").unwrap(), 1 << F_STATS_VQ);
        assert_eq!(
            parse_features("stats,oom,reporting").unwrap(),
            (1 << F_STATS_VQ) | (1 << F_DEFLATE_ON_OOM) | (1 << F_REPORTING)
        );
        assert_eq!(parse_features("").unwrap(), 0);
        assert_eq!(parse_features("none").unwrap(), 0);
        assert!(parse_features("hint").is_err());
    }

    #[test]
    fn queue_roles_follow_negotiated_features() {
        let stats = 1u64 << F_STATS_VQ;
        let rep = 1u64 << F_REPORTING;
        assert_eq!(queue_role(0, 0), Some(Role::Inflate));
        assert_eq!(queue_role(0, 1), Some(Role::Deflate));
        assert_eq!(queue_role(0, 2), None);
        assert_eq!(queue_role(stats, 2), Some(Role::Stats));
        assert_eq!(queue_role(stats, 3), None);
        assert_eq!(queue_role(rep, 2), Some(Role::Reporting));
        assert_eq!(queue_role(stats | rep, 2), Some(Role::Stats));
        assert_eq!(queue_role(stats | rep, 3), Some(Role::Reporting));
    }

    #[test]
    fn inflate_deflate_round_trip_is_clean() {
        let mut c = checker();
        let pfns: Vec<u32> = (0x100..0x200).collect();
        c.check_buffer(Dir::Inflate, 1024, 0);
        assert_eq!(c.inflate(&pfns).len(), 256);
        assert_eq!(c.ballooned(), 256);
        c.check_buffer(Dir::Deflate, 1024, 0);
        c.deflate(&pfns);
        assert_eq!(c.ballooned(), 0);
        assert_eq!(c.deflate_unknown, 0);
        assert_eq!(c.max_pfns_in_buffer, 256);
        assert_eq!((c.inflate_bufs, c.deflate_bufs), (1, 1));
        assert_eq!((c.inflated_pfns, c.deflated_pfns), (256, 256));
        assert!(c.violations.is_empty(), "{:?}", c.violations);
    }

    #[test]
    fn oversized_and_misaligned_buffers_are_violations() {
        let mut c = checker();
        c.check_buffer(Dir::Inflate, 1028, 0);
        assert_eq!(c.max_pfns_in_buffer, 257);
        assert_eq!(c.violations.len(), 1);
        assert!(c.violations[0].contains("257 PFNs"));
        c.check_buffer(Dir::Deflate, 6, 0);
        assert_eq!(c.violations.len(), 2);
        assert!(c.violations[1].contains("not a multiple of 4"));
        c.check_buffer(Dir::Inflate, 8, 4);
        assert!(c.violations[2].contains("device-writable"));
    }

    #[test]
    fn double_inflate_is_a_violation() {
        let mut c = checker();
        assert_eq!(c.inflate(&[0x300, 0x301]), vec![0x300, 0x301]);
        assert_eq!(c.inflate(&[0x301, 0x302]), vec![0x302]);
        assert_eq!(c.violations.len(), 1);
        assert!(c.violations[0].contains("0x301"));
        // Within one buffer too.
        assert_eq!(c.inflate(&[0x400, 0x400]), vec![0x400]);
        assert_eq!(c.violations.len(), 2);
        // After a deflate the PFN may be inflated again.
        c.deflate(&[0x300]);
        assert_eq!(c.inflate(&[0x300]), vec![0x300]);
        assert_eq!(c.violations.len(), 2);
    }

    #[test]
    fn unknown_deflate_is_counted_not_a_violation() {
        let mut c = checker();
        c.deflate(&[0x500, 0x501]);
        assert_eq!(c.deflate_unknown, 2);
        assert!(c.violations.is_empty());
        assert_eq!(c.ballooned(), 0);
    }

    #[test]
    fn pfns_outside_ram_are_violations() {
        let mut c = checker();
        // The legacy hole at 640K-1M, the PCI hole at 3-4G, past the end.
        let hole = (0xa0000 / PAGE_SIZE) as u32;
        let pci = (3 * GIB / PAGE_SIZE) as u32 + 5;
        let past = (7 * GIB / PAGE_SIZE) as u32;
        assert!(c.inflate(&[hole, pci, past]).is_empty());
        assert_eq!(c.violations.len(), 3);
        assert!(c.violations.iter().all(|v| v.contains("outside guest RAM")));
        assert_eq!(c.ballooned(), 0);
        // Above 4G is RAM.
        let high = (4 * GIB / PAGE_SIZE) as u32 + 1;
        assert_eq!(c.inflate(&[high]), vec![high]);
        c.deflate(&[pci]);
        assert_eq!(c.violations.len(), 4);
        assert_eq!(c.deflate_unknown, 0);
    }

    #[test]
    fn report_ranges_are_checked_against_regions() {
        let mut c = checker();
        assert!(c.report_range(0x20_0000, 0x20_0000));
        assert!(c.report_range(4 * GIB, 2 * GIB));
        assert!(!c.report_range(3 * GIB - 0x1000, 0x2000));
        assert!(!c.report_range(u64::MAX - 10, 100));
        assert_eq!(c.reported_bytes, 0x20_0000 + 2 * GIB + 0x2000 + 100);
        assert_eq!(c.violations.len(), 2);
    }

    #[test]
    fn reset_clears_the_set() {
        let mut c = checker();
        c.inflate(&[1 << 12, (1 << 12) + 1]);
        c.reset();
        assert_eq!(c.ballooned(), 0);
        assert_eq!(c.resets, 1);
        // The guest owns its memory again: inflating the same PFNs is fine.
        assert_eq!(c.inflate(&[1 << 12]).len(), 1);
        assert!(c.violations.is_empty());
    }

    #[test]
    fn no_memory_table_accepts_everything() {
        let mut c = Checker::new();
        assert!(c.in_ram(123 * PAGE_SIZE, PAGE_SIZE));
        assert_eq!(c.inflate(&[u32::MAX]).len(), 1);
    }

    #[test]
    fn violations_are_capped_but_counted() {
        let mut c = checker();
        for _ in 0..(MAX_VIOLATIONS + 5) {
            c.check_buffer(Dir::Inflate, 2, 0);
        }
        assert_eq!(c.violations.len(), MAX_VIOLATIONS);
        assert_eq!(c.violations_total, MAX_VIOLATIONS as u64 + 5);
    }
}
