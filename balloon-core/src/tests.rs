//! Unit tests of the balloon logic, with the edge cases the C driver got wrong over the years.

use crate::balloon::features::*;
use crate::balloon::pfn::*;
use crate::balloon::target::*;

const G4K: u32 = 12;
const G64K: u32 = 16;

fn geo(shift: u32) -> PageGeometry {
    PageGeometry::new(shift).expect("usable geometry")
}

fn wire_pfns(b: &PfnBatch) -> Vec<u32> {
    b.wire()
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn pfns_per_page_for_common_and_odd_page_sizes() {
    assert_eq!(pfns_per_page(G4K), Some(1));
    assert_eq!(pfns_per_page(14), Some(4)); // 16 KiB
    assert_eq!(pfns_per_page(G64K), Some(16));
    assert_eq!(pfns_per_page(20), Some(256)); // 1 MiB: exactly one buffer
    assert_eq!(pfns_per_page(21), None); // 2 MiB would overflow a buffer (bug class 12)
    assert_eq!(pfns_per_page(11), None); // below the balloon page size
    assert_eq!(pfns_per_page(63), None);
}

#[test]
fn geometry_unit_conversions() {
    let g = geo(G64K);
    assert_eq!(g.page_bytes(), 65536);
    assert_eq!(g.pages_per_buffer(), 16);
    assert_eq!(g.pages_to_units(3), 48);
    assert_eq!(g.units_to_pages_up(0), 0);
    assert_eq!(g.units_to_pages_up(1), 1);
    assert_eq!(g.units_to_pages_up(16), 1);
    assert_eq!(g.units_to_pages_up(17), 2);
    assert_eq!(geo(G4K).pages_per_buffer(), 256);
    assert_eq!(g.pages_to_units(u64::MAX), u64::MAX); // saturates, never wraps
}

#[test]
fn first_pfn_4k_and_64k() {
    assert_eq!(geo(G4K).first_pfn(0), Ok(0));
    assert_eq!(geo(G4K).first_pfn(12345), Ok(12345));
    assert_eq!(geo(G64K).first_pfn(5), Ok(80));
}

#[test]
fn pfn_at_or_above_2_pow_32_is_refused_not_truncated() {
    let g = geo(G4K);
    assert_eq!(g.first_pfn((1 << 32) - 1), Ok(u32::MAX));
    assert_eq!(g.first_pfn(1 << 32), Err(PfnError::TooHigh));
    assert_eq!(g.first_pfn(u64::MAX), Err(PfnError::TooHigh));
    let g = geo(G64K);
    // The last 4 KiB frame of guest page 2^28 - 1 is 2^32 - 1: still fits.
    assert_eq!(g.first_pfn((1 << 28) - 1), Ok(u32::MAX - 15));
    assert_eq!(g.first_pfn(1 << 28), Err(PfnError::TooHigh));
    assert_eq!(g.first_pfn(u64::MAX >> 4), Err(PfnError::TooHigh));
}

#[test]
fn empty_batch_has_no_wire_bytes() {
    let b = PfnBatch::new(geo(G4K));
    assert!(b.is_empty());
    assert_eq!(b.len(), 0);
    assert_eq!(b.pages(), 0);
    assert!(b.wire().is_empty());
    assert!(!b.is_full());
}

#[test]
fn batch_4k_fills_to_exactly_256_pfns() {
    let mut b = PfnBatch::new(geo(G4K));
    for i in 0..256u64 {
        assert_eq!(b.push_page(1000 + i), Ok(()));
    }
    assert!(b.is_full());
    assert_eq!(b.push_page(9), Err(PfnError::Full));
    assert_eq!(b.len(), 256);
    assert_eq!(b.wire().len(), 1024);
    let pfns = wire_pfns(&b);
    assert_eq!(pfns[0], 1000);
    assert_eq!(pfns[255], 1255);
    b.clear();
    assert!(b.is_empty());
}

#[test]
fn batch_wire_is_little_endian_without_padding() {
    let mut b = PfnBatch::new(geo(G4K));
    b.push_page(0x0102_0304).unwrap();
    b.push_page(0xA0B0_C0D0).unwrap();
    assert_eq!(b.wire(), &[0x04, 0x03, 0x02, 0x01, 0xD0, 0xC0, 0xB0, 0xA0]);
}

#[test]
fn batch_64k_pages_take_16_consecutive_pfns_and_16_fit() {
    // The 2017 off-by-one wrote past the array and hit guest page 0; here a 64 KiB guest page
    // is exactly 16 consecutive PFNs, and the 17th page is refused whole.
    let mut b = PfnBatch::new(geo(G64K));
    b.push_page(0).unwrap();
    assert_eq!(wire_pfns(&b), (0..16).collect::<Vec<u32>>());
    for p in 1..16u64 {
        b.push_page(p * 7).unwrap();
    }
    assert!(b.is_full());
    assert_eq!(b.pages(), 16);
    assert_eq!(b.push_page(3), Err(PfnError::Full));
    assert_eq!(b.len(), 256);
    let pfns = wire_pfns(&b);
    assert_eq!(&pfns[16..32], &(7 * 16..8 * 16).collect::<Vec<u32>>()[..]);
}

#[test]
fn too_high_page_leaves_batch_unchanged() {
    let mut b = PfnBatch::new(geo(G64K));
    b.push_page(1).unwrap();
    let before = b.wire().to_vec();
    assert_eq!(b.push_page(1 << 28), Err(PfnError::TooHigh));
    assert_eq!(b.wire(), &before[..]);
    assert_eq!(b.pages(), 1);
}

fn room(available_mib: u64, floor_mib: u64) -> Headroom {
    Headroom {
        available_bytes: available_mib << 20,
        floor_bytes: floor_mib << 20,
    }
}

#[test]
fn target_rounds_up_to_whole_guest_pages() {
    let g = geo(G64K);
    assert_eq!(target_pages(&g, 0), 0);
    assert_eq!(target_pages(&g, 1), 1);
    assert_eq!(target_pages(&g, 17), 2);
    assert_eq!(target_pages(&geo(G4K), 17), 17);
    assert_eq!(target_pages(&geo(G4K), u32::MAX), u64::from(u32::MAX));
}

#[test]
fn actual_is_in_4k_units_and_saturates() {
    assert_eq!(actual_units(&geo(G64K), 2), 32);
    assert_eq!(actual_units(&geo(G4K), 262_144), 262_144);
    assert_eq!(actual_units(&geo(G64K), 1 << 40), u32::MAX);
}

#[test]
fn inflate_is_capped_by_step_size() {
    let g = geo(G4K);
    assert_eq!(
        next_step(&g, 262_144, 0, room(2048, 64), 2048),
        Step::Inflate(2048)
    );
    assert_eq!(
        next_step(&g, 100, 0, room(2048, 64), 2048),
        Step::Inflate(100)
    );
    assert_eq!(
        next_step(&g, 100, 99, room(2048, 64), 2048),
        Step::Inflate(1)
    );
}

#[test]
fn inflate_stops_at_floor() {
    let g = geo(G4K);
    // 10 MiB above the floor: at most 2560 pages, whatever the host asks.
    assert_eq!(
        next_step(&g, u32::MAX, 0, room(74, 64), 1 << 20),
        Step::Inflate(2560)
    );
    assert_eq!(
        next_step(&g, u32::MAX, 0, room(64, 64), 2048),
        Step::AtFloor
    );
    assert_eq!(
        next_step(&g, u32::MAX, 0, room(10, 64), 2048),
        Step::AtFloor
    );
    // A partial guest page of headroom is no headroom.
    let g = geo(G64K);
    let h = Headroom {
        available_bytes: (64 << 20) + 65535,
        floor_bytes: 64 << 20,
    };
    assert_eq!(next_step(&g, 1000, 0, h, 2048), Step::AtFloor);
}

#[test]
fn target_above_guest_ram_is_bounded_by_headroom() {
    // A 2 GiB guest told to keep 16 MiB: the balloon takes what is above the floor, no more.
    let g = geo(G4K);
    let target_units = ((2048 - 16) << 20) / 4096;
    let mut held = 0u64;
    let mut available = 1900u64 << 20;
    loop {
        let h = Headroom {
            available_bytes: available,
            floor_bytes: 64 << 20,
        };
        match next_step(&g, target_units, held, h, 2048) {
            Step::Inflate(n) => {
                held += n as u64;
                available -= (n as u64) * 4096;
            }
            Step::AtFloor => break,
            s => panic!("unexpected {s:?}"),
        }
    }
    assert_eq!(available, 64 << 20);
    assert_eq!(held, (1900 - 64) << 8);
}

#[test]
fn deflate_and_done() {
    let g = geo(G4K);
    assert_eq!(
        next_step(&g, 0, 5000, room(0, 64), 2048),
        Step::Deflate(2048)
    );
    assert_eq!(
        next_step(&g, 4000, 5000, room(0, 64), 2048),
        Step::Deflate(1000)
    );
    assert_eq!(next_step(&g, 5000, 5000, room(0, 64), 2048), Step::Done);
    // Deflating ignores the floor: giving memory back is always allowed.
    assert_eq!(
        next_step(&g, 0, 1, room(0, 1 << 30), 2048),
        Step::Deflate(1)
    );
    // 64 KiB pages: target 17 units = 2 pages.
    assert_eq!(
        next_step(&geo(G64K), 17, 3, room(0, 0), 16),
        Step::Deflate(1)
    );
    assert_eq!(next_step(&geo(G64K), 17, 2, room(0, 0), 16), Step::Done);
}

#[test]
fn queue_map_is_dense_like_linux() {
    let all = QueueMap::new(|_| true);
    assert_eq!(all.count(), 5);
    assert_eq!(all.index(Queue::Reporting), Some(4));
    let none = QueueMap::new(|_| false);
    assert_eq!(none.count(), 2);
    assert_eq!(none.index(Queue::Inflate), Some(0));
    assert_eq!(none.index(Queue::Deflate), Some(1));
    assert_eq!(none.index(Queue::Stats), None);
    // Stats off, reporting on: reporting is queue 2, not 4 (bug class 10).
    let rep = QueueMap::new(|b| b == F_REPORTING);
    assert_eq!(rep.count(), 3);
    assert_eq!(rep.index(Queue::Reporting), Some(2));
    assert_eq!(rep.queue(2), Some(Queue::Reporting));
    let hint = QueueMap::new(|b| b == F_FREE_PAGE_HINT || b == F_REPORTING);
    assert_eq!(hint.index(Queue::FreePage), Some(2));
    assert_eq!(hint.index(Queue::Reporting), Some(3));
    assert_eq!(hint.queue(4), None);
}

#[test]
fn oom_hold_keeps_the_balloon_where_the_oom_deflate_left_it() {
    let g = PageGeometry::new(12).unwrap();
    // Host wants 1000 units in the balloon; OOM deflated us to 744 pages.
    assert_eq!(effective_target(&g, 1000, Some(1000), 744), 744);
    // Until the host sets another target: then it is followed again (up or down).
    assert_eq!(effective_target(&g, 1200, Some(1000), 744), 1200);
    assert_eq!(effective_target(&g, 500, Some(1000), 744), 500);
    // The host lowering the target below what is held is honoured even with the hold.
    assert_eq!(effective_target(&g, 600, Some(600), 744), 600);
    assert_eq!(effective_target(&g, 1000, None, 744), 1000);
    // So the step after an OOM deflate is Done, not Inflate.
    let room = Headroom {
        available_bytes: 1 << 30,
        floor_bytes: 0,
    };
    assert_eq!(
        next_step_to(
            &g,
            effective_target(&g, 1000, Some(1000), 744),
            744,
            room,
            2048
        ),
        Step::Done
    );
}

#[test]
fn oom_hold_survives_config_changes_that_keep_the_target() {
    // A hint command id or any other config write: the target reads the same, the hold stays.
    assert_eq!(hold_after(Some(1000), 1000), Some(1000));
    // The host set a new target (up or down): the hold ends.
    assert_eq!(hold_after(Some(1000), 1001), None);
    assert_eq!(hold_after(Some(1000), 0), None);
    assert_eq!(hold_after(None, 1000), None);
    // And the step after a kept hold is still Done, not Inflate.
    let g = PageGeometry::new(12).unwrap();
    let room = Headroom {
        available_bytes: 1 << 30,
        floor_bytes: 0,
    };
    let hold = hold_after(Some(1000), 1000);
    assert_eq!(
        next_step_to(&g, effective_target(&g, 1000, hold, 744), 744, room, 2048),
        Step::Done
    );
}

#[test]
fn oom_pages_are_256_balloon_pages() {
    assert_eq!(oom_pages(&PageGeometry::new(12).unwrap()), 256);
    assert_eq!(oom_pages(&PageGeometry::new(14).unwrap()), 64);
    assert_eq!(oom_pages(&PageGeometry::new(16).unwrap()), 16);
    // A guest page of 1 MiB is 256 balloon pages: one page.
    assert_eq!(oom_pages(&PageGeometry::new(20).unwrap()), 1);
}

mod validate_rules {
    use crate::balloon::features::*;
    use crate::balloon::validate::*;

    const NEITHER: FreedPages = FreedPages {
        init_on_free: false,
        poisoning: false,
    };
    const POISON: FreedPages = FreedPages {
        init_on_free: false,
        poisoning: true,
    };
    const ZEROED: FreedPages = FreedPages {
        init_on_free: true,
        poisoning: false,
    };
    const BOTH: FreedPages = FreedPages {
        init_on_free: true,
        poisoning: true,
    };

    fn refused_with(freed: FreedPages, offers_poison: bool) -> Vec<u32> {
        refused(freed, |b| b == F_PAGE_POISON && offers_poison)
            .into_iter()
            .flatten()
            .collect()
    }

    #[test]
    fn every_combination_matches_virtballoon_validate() {
        // Freed pages keep no value: PAGE_POISON is refused, REPORTING kept.
        for offers in [false, true] {
            assert_eq!(
                refused_with(NEITHER, offers),
                vec![F_PAGE_POISON, F_RING_INDIRECT_DESC, F_ACCESS_PLATFORM]
            );
        }
        // Freed pages keep a value: with PAGE_POISON offered nothing else is refused;
        // without it REPORTING goes.
        for freed in [POISON, ZEROED, BOTH] {
            assert_eq!(
                refused_with(freed, true),
                vec![F_RING_INDIRECT_DESC, F_ACCESS_PLATFORM]
            );
            assert_eq!(
                refused_with(freed, false),
                vec![F_REPORTING, F_RING_INDIRECT_DESC, F_ACCESS_PLATFORM]
            );
        }
    }

    #[test]
    fn poison_val_zero_with_init_on_free_else_the_poison_pattern() {
        assert_eq!(poison_val(ZEROED), 0);
        assert_eq!(poison_val(BOTH), 0);
        assert_eq!(poison_val(POISON), 0xaaaa_aaaa);
        // Same bytes in either order: what goes on the wire is aa aa aa aa.
        assert_eq!(poison_val(POISON).to_le_bytes(), [0xaa; 4]);
    }

    #[test]
    fn reporting_capacity_from_the_ring() {
        assert_eq!(reporting_capacity(128), Ok(PAGE_REPORTING_CAPACITY));
        assert_eq!(reporting_capacity(32), Ok(32));
        // A ring smaller than the kernel's capacity: reports shrink to fit it.
        assert_eq!(reporting_capacity(8), Ok(8));
        assert_eq!(reporting_capacity(1), Ok(1));
        assert_eq!(reporting_capacity(0), Err(NoReporting::EmptyRing));
    }

    #[test]
    fn registration_failures_are_explained() {
        assert!(registration_failure_reason(-16).contains("another device"));
        assert!(registration_failure_reason(-12).contains("memory"));
        assert!(registration_failure_reason(-22).contains("refused"));
    }
}

#[test]
fn wire_endianness_rule() {
    use crate::balloon::wire::WireEndian;
    // Modern devices: little-endian on every guest.
    assert_eq!(WireEndian::for_device(true, false), WireEndian::Little);
    assert_eq!(WireEndian::for_device(true, true), WireEndian::Little);
    // Legacy devices: the guest's own order.
    assert_eq!(WireEndian::for_device(false, false), WireEndian::Little);
    assert_eq!(WireEndian::for_device(false, true), WireEndian::Big);
    // x86 test guests are little-endian either way.
    assert_eq!(WireEndian::for_this_guest(false), WireEndian::Little);
}

#[test]
fn legacy_big_endian_pfns_and_stats_are_big_endian_on_the_wire() {
    use crate::balloon::stats::{Sample, StatsBuf};
    use crate::balloon::wire::WireEndian;
    let g = PageGeometry::new(12).unwrap();
    let mut be = PfnBatch::with_endian(g, WireEndian::Big);
    let mut le = PfnBatch::new(g);
    be.push_page(0x0102_0304).unwrap();
    le.push_page(0x0102_0304).unwrap();
    assert_eq!(be.wire(), &[1, 2, 3, 4]);
    assert_eq!(le.wire(), &[4, 3, 2, 1]);
    // 64 KiB pages: 16 consecutive PFNs, each big-endian.
    let g64 = PageGeometry::new(16).unwrap();
    let mut be64 = PfnBatch::with_endian(g64, WireEndian::Big);
    be64.push_page(1).unwrap();
    assert_eq!(&be64.wire()[..8], &[0, 0, 0, 16, 0, 0, 0, 17]);
    let s = Sample {
        total_pages: 1,
        no_vm_events: true,
        ..Default::default()
    };
    let mut b = StatsBuf::with_endian(WireEndian::Big);
    b.fill(&s, 12);
    // Second entry: MemTotal, tag 5 then 4096, both big-endian.
    assert_eq!(&b.wire()[10..20], &[0, 5, 0, 0, 0, 0, 0, 0, 0x10, 0]);
}

mod hinting {
    use crate::balloon::hint::*;

    #[test]
    fn cmd_ids_follow_report_free_page_func() {
        // DONE gives everything back, whatever was active.
        assert_eq!(on_cmd_id(CMD_ID_DONE, None), HintCommand::ReturnAll);
        assert_eq!(on_cmd_id(CMD_ID_DONE, Some(7)), HintCommand::ReturnAll);
        // STOP starts nothing.
        assert_eq!(on_cmd_id(CMD_ID_STOP, None), HintCommand::Nothing);
        assert_eq!(on_cmd_id(CMD_ID_STOP, Some(7)), HintCommand::Nothing);
        // A new id starts a cycle; the same id again does not.
        assert_eq!(on_cmd_id(7, None), HintCommand::Start(7));
        assert_eq!(on_cmd_id(7, Some(7)), HintCommand::Nothing);
        assert_eq!(on_cmd_id(8, Some(7)), HintCommand::Start(8));
        assert!(keep_hinting(7, 7));
        assert!(!keep_hinting(CMD_ID_STOP, 7));
        assert!(!keep_hinting(8, 7));
    }

    #[test]
    fn shrinker_gives_back_whole_blocks() {
        // 4 MiB blocks of 4 KiB pages: 1024 pages a block.
        assert_eq!(blocks_to_shrink(1, 1024), 1);
        assert_eq!(blocks_to_shrink(1024, 1024), 1);
        assert_eq!(blocks_to_shrink(1025, 1024), 2);
        assert_eq!(blocks_to_shrink(128, 1024), 1);
        assert_eq!(blocks_to_shrink(5, 0), 0);
    }

    #[test]
    fn ring_keeps_room_for_the_command_ids() {
        assert!(hint_ring_room(128, 0));
        assert!(hint_ring_usable(3) && !hint_ring_usable(2) && !hint_ring_usable(0));
        assert!(hint_ring_room(128, 125));
        assert!(!hint_ring_room(128, 126));
        assert!(!hint_ring_room(2, 0));
        assert!(hint_ring_room(3, 0));
    }
}

#[test]
fn buffers_in_flight_never_exceed_the_ring() {
    // QEMU's balloon rings have 128 descriptors: the full 8 buffers.
    assert_eq!(buffers_in_flight(128), Some(MAX_INFLIGHT));
    assert_eq!(buffers_in_flight(8), Some(8));
    // A small ring (a hostile or tiny host): never more buffers than descriptors.
    for ring in 1..8 {
        assert_eq!(buffers_in_flight(ring), Some(ring));
    }
    assert_eq!(buffers_in_flight(0), None);
}

mod stats {
    use crate::balloon::stats::*;

    fn entries(b: &StatsBuf) -> Vec<(u16, u64)> {
        b.wire()
            .chunks_exact(ENTRY_BYTES)
            .map(|e| {
                let tag = u16::from_le_bytes([e[0], e[1]]);
                let mut v = [0u8; 8];
                v.copy_from_slice(&e[2..]);
                (tag, u64::from_le_bytes(v))
            })
            .collect()
    }

    fn sample() -> Sample {
        Sample {
            swap_in_pages: 1,
            swap_out_pages: 2,
            major_faults: 3,
            minor_faults: 4,
            oom_kills: 5,
            alloc_stalls: 6,
            async_scan_pages: 7,
            direct_scan_pages: 8,
            async_reclaim_pages: 9,
            direct_reclaim_pages: 10,
            hugetlb: Some((11, 12)),
            free_pages: 13,
            total_pages: 14,
            available_pages: 15,
            file_pages: 16,
            no_vm_events: false,
        }
    }

    #[test]
    fn without_vm_event_counters_only_the_four_memory_figures() {
        // CONFIG_VM_EVENT_COUNTERS=n: the C driver's update_balloon_vm_stats adds nothing.
        let mut b = StatsBuf::new();
        b.fill(
            &Sample {
                no_vm_events: true,
                ..sample()
            },
            12,
        );
        let tags: Vec<u16> = entries(&b).iter().map(|e| e.0).collect();
        assert_eq!(tags, vec![4, 5, 6, 7]);
        assert_eq!(b.wire().len(), 4 * ENTRY_BYTES);
        assert!(entries(&b).contains(&(5, 14 << 12)));
    }

    #[test]
    fn all_16_tags_once_in_c_order_with_c_units() {
        let mut b = StatsBuf::new();
        b.fill(&sample(), 12);
        assert_eq!(b.count(), NR_TAGS);
        assert_eq!(b.wire().len(), 160);
        assert_eq!(
            entries(&b),
            vec![
                (0, 4096),
                (1, 8192),
                (2, 3),
                (3, 4),
                (10, 5),
                (11, 6),
                (12, 7 * 4096),
                (13, 8 * 4096),
                (14, 9 * 4096),
                (15, 10 * 4096),
                (8, 11),
                (9, 12),
                (4, 13 * 4096),
                (5, 14 * 4096),
                (6, 15 * 4096),
                (7, 16 * 4096),
            ]
        );
        let mut tags: Vec<u16> = entries(&b).iter().map(|e| e.0).collect();
        tags.sort();
        assert_eq!(tags, (0..16).collect::<Vec<u16>>());
    }

    #[test]
    fn exact_bytes_little_endian_no_padding() {
        let mut b = StatsBuf::new();
        let s = Sample {
            total_pages: 0x0102_0304,
            hugetlb: None,
            ..Default::default()
        };
        b.fill(&s, 12);
        // MemTotal is the 12th entry without hugetlb: tag 5, then 0x01020304 << 12 in LE.
        let e = &b.wire()[11 * ENTRY_BYTES..12 * ENTRY_BYTES];
        assert_eq!(e, &[5, 0, 0x00, 0x40, 0x30, 0x20, 0x10, 0, 0, 0]);
    }

    #[test]
    fn without_hugetlb_14_tags_and_same_set_every_refill() {
        let mut b = StatsBuf::new();
        let s = Sample {
            hugetlb: None,
            ..sample()
        };
        b.fill(&s, 16);
        assert_eq!(b.count(), 14);
        let first: Vec<u16> = entries(&b).iter().map(|e| e.0).collect();
        assert!(!first.contains(&8) && !first.contains(&9));
        b.fill(
            &Sample {
                free_pages: 99,
                ..s
            },
            16,
        );
        let second: Vec<u16> = entries(&b).iter().map(|e| e.0).collect();
        assert_eq!(first, second);
        // 64 KiB pages: 99 pages of free memory.
        assert!(entries(&b).contains(&(4, 99 << 16)));
    }

    #[test]
    fn byte_conversion_saturates_instead_of_wrapping() {
        let mut b = StatsBuf::new();
        b.fill(
            &Sample {
                total_pages: u64::MAX >> 4,
                ..Default::default()
            },
            12,
        );
        assert!(entries(&b).contains(&(5, u64::MAX)));
    }

    #[test]
    fn empty_buffer_is_empty() {
        let b = StatsBuf::new();
        assert_eq!(b.count(), 0);
        assert!(b.wire().is_empty());
    }
}

mod counters {
    use crate::balloon::counters::*;

    const PAGE: u64 = 4096;
    const MIB_PAGES: u64 = 256;

    fn live() -> Live {
        Live {
            page_bytes: PAGE,
            host_overdue: false,
            host_timeouts: 0,
            now_ms: 10_000,
            floor_mib: 64,
            block_kib: 2048,
            host_timeout_ms: 5000,
        }
    }

    fn attr(s: &Snapshot, a: Attr) -> String {
        let mut out = String::new();
        s.attribute(a, &mut out).unwrap();
        out
    }

    fn explain(s: &Snapshot) -> String {
        let mut out = String::new();
        s.explain(&mut out).unwrap();
        out
    }

    #[test]
    fn steps_add_up_and_held_follows() {
        let c = Counters::new();
        c.set_target(1024 * 256, 1024 * MIB_PAGES);
        c.set_phase(Phase::Moving, 0);
        for _ in 0..4 {
            c.inflated(2048);
        }
        c.set_held(8192);
        let s = c.snapshot(live());
        assert_eq!(s.inflated_pages, 8192);
        assert_eq!(s.inflate_steps, 4);
        assert_eq!(attr(&s, Attr::ActualMib), "32\n");
        assert_eq!(attr(&s, Attr::TargetMib), "1024\n");
        assert_eq!(s.why(), Why::Inflating);
        c.deflated(8192);
        c.set_held(0);
        c.set_target(0, 0);
        c.set_phase(Phase::AtTarget, 0);
        let s = c.snapshot(live());
        assert_eq!(attr(&s, Attr::DeflatedPages), "8192\n");
        assert_eq!(attr(&s, Attr::HeldPages), "0\n");
        assert_eq!(attr(&s, Attr::State), "at_target\n");
    }

    #[test]
    fn why_prefers_the_host_then_the_hold_then_the_direction() {
        let c = Counters::new();
        assert_eq!(c.snapshot(live()).why(), Why::Starting);
        c.set_target(512 * 256, 512 * MIB_PAGES);
        c.set_held(100 * MIB_PAGES);
        c.set_phase(Phase::Floor, 63 * MIB_PAGES);
        let s = c.snapshot(live());
        assert_eq!(s.why(), Why::Floor);
        let text = explain(&s);
        assert!(text.contains("holding at 100 MiB of the 512 MiB"), "{text}");
        assert!(text.contains("MemAvailable 63 MiB"), "{text}");
        assert!(text.contains("floor_mib=64"), "{text}");
        // A host past its limit explains the hold better than the floor does.
        let s = c.snapshot(Live {
            host_overdue: true,
            ..live()
        });
        assert_eq!(s.why(), Why::HostSlow);
        assert!(explain(&s).contains("host_timeout_ms=5000"));
        // A floor phase left over from before a deflate target is not a floor hold.
        c.set_target(0, 0);
        assert_eq!(c.snapshot(live()).why(), Why::Deflating);
        c.set_phase(Phase::OutOfMemory, 0);
        c.set_target(512 * 256, 512 * MIB_PAGES);
        c.alloc_failed();
        let s = c.snapshot(live());
        assert_eq!(s.why(), Why::OutOfMemory);
        assert!(explain(&s).contains("refused pages (1 times"));
        c.error(-110);
        c.set_phase(Phase::HostStopped, 0);
        let s = c.snapshot(live());
        assert_eq!(attr(&s, Attr::State), "host_stopped\n");
        assert!(explain(&s).contains("ETIMEDOUT"));
        assert_eq!(attr(&s, Attr::LastError), "-110\n");
    }

    #[test]
    fn oom_hold_says_what_went_back() {
        let c = Counters::new();
        c.set_target(512 * 256, 512 * MIB_PAGES);
        c.set_held(448 * MIB_PAGES);
        c.oom_deflated(64 * MIB_PAGES);
        c.set_phase(Phase::OomHold, 0);
        let s = c.snapshot(live());
        assert_eq!(s.why(), Why::OomHold);
        assert!(explain(&s).contains("giving 64 MiB back on OOM"));
        assert_eq!(
            attr(&s, Attr::OomDeflatedPages),
            format!("{}\n", 64 * MIB_PAGES)
        );
    }

    #[test]
    fn bytes_counters_show_as_pages_and_config_time_as_ago() {
        let c = Counters::new();
        c.reported(4 << 20);
        c.hinted(2 << 20);
        c.config_changed(9_000);
        c.config_changed(9_500);
        assert_eq!(c.stats_answered(), 1);
        assert_eq!(c.stats_answered(), 2);
        let s = c.snapshot(live());
        assert_eq!(attr(&s, Attr::ReportedPages), "1024\n");
        assert_eq!(attr(&s, Attr::HintedPages), "512\n");
        assert_eq!(attr(&s, Attr::ConfigChanges), "2\n");
        assert_eq!(attr(&s, Attr::LastConfigChangeMs), "9500\n");
        assert_eq!(attr(&s, Attr::StatsRequests), "2\n");
        let mut view = String::new();
        s.view(&mut view).unwrap();
        assert!(view.contains("last_config_change_ago_ms: 500\n"), "{view}");
        assert!(view.starts_with("starting: "), "{view}");
    }

    #[test]
    fn every_attribute_has_a_value_and_the_view_lists_them_all() {
        let c = Counters::new();
        c.set_phase(Phase::AtTarget, 0);
        let s = c.snapshot(live());
        let mut view = String::new();
        s.view(&mut view).unwrap();
        for a in Attr::ALL {
            let v = attr(&s, a);
            assert!(v.ends_with('\n') && v.len() > 1, "{a:?} shows {v:?}");
            let n = a.label();
            assert_eq!(a.c_name().to_str().unwrap(), n, "C name of {a:?}");
            if a != Attr::State {
                assert!(view.contains(&format!("\n{n}: ")), "view lacks {n}");
            }
        }
        let mut names: Vec<_> = Attr::ALL.iter().map(|a| a.label()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Attr::ALL.len(), "attribute names are unique");
        // Parameters show as given.
        assert_eq!(attr(&s, Attr::FloorMib), "64\n");
        assert_eq!(attr(&s, Attr::BlockKib), "2048\n");
        assert_eq!(attr(&s, Attr::HostTimeoutMs), "5000\n");
    }

    #[test]
    fn a_zero_page_size_cannot_divide_by_zero() {
        let c = Counters::new();
        c.reported(4096);
        let s = c.snapshot(Live {
            page_bytes: 0,
            ..live()
        });
        assert_eq!(attr(&s, Attr::ReportedPages), "0\n");
    }
}

mod wakeup {
    use crate::balloon::wakeup::*;

    #[test]
    fn a_reason_arriving_while_another_finishes_keeps_the_hold() {
        let mut w = Wakeup::default();
        assert!(w.start(ADJUST), "first reason takes the source");
        w.process(ADJUST);
        // A stats request arrives while the resize work is still running.
        assert!(!w.start(STATS), "already held");
        assert!(
            !w.finish(),
            "the resize work must not drop the stats request's hold"
        );
        w.process(STATS);
        assert!(w.finish(), "the stats work lets go: nothing pending");
        assert!(!w.finish(), "once");
    }

    #[test]
    fn a_new_target_during_the_resize_work_keeps_the_hold_for_the_next_run() {
        let mut w = Wakeup::default();
        assert!(w.start(ADJUST));
        w.process(ADJUST);
        // The host sets a new target before the run ends: the queued run handles it.
        assert!(!w.start(ADJUST));
        assert!(!w.finish());
        w.process(ADJUST);
        assert!(w.finish());
    }

    #[test]
    fn clear_lets_go_once() {
        let mut w = Wakeup::default();
        assert!(!w.clear());
        assert!(w.start(STATS));
        assert!(w.clear());
        assert!(!w.clear());
        assert!(!w.finish());
    }
}
