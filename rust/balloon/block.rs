// SPDX-License-Identifier: GPL-2.0

//! The inflate block size (module parameter `block_kib`): inflating takes whole blocks of
//! contiguous pages from the allocator where it has them free, splits them and balloons the
//! pieces, so a buffer names contiguous PFNs (a host merges them into one discard), whole host
//! huge pages are given up instead of many being split, and the allocator is called once per
//! block instead of once per page.

/// Why a `block_kib` value cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockError {
    /// Not a power of two.
    NotPowerOfTwo,
    /// Larger than the allocator's largest block (`2^max_order` pages).
    TooLarge,
}

/// The allocation order of a `block_kib` block on a guest with `2^page_shift`-byte pages whose
/// allocator hands out at most `2^max_order` pages at once. `0` (and anything up to one page)
/// means single pages only: order 0.
pub(crate) fn block_order(
    block_kib: u32,
    page_shift: u32,
    max_order: u32,
) -> Result<u32, BlockError> {
    let bytes = u64::from(block_kib).saturating_mul(1024);
    let page = 1u64.checked_shl(page_shift).unwrap_or(u64::MAX);
    if bytes <= page {
        return Ok(0);
    }
    if !bytes.is_power_of_two() {
        return Err(BlockError::NotPowerOfTwo);
    }
    // Both are powers of two and `bytes > page`: the quotient is one too.
    let order = (bytes / page).trailing_zeros();
    if order > max_order {
        return Err(BlockError::TooLarge);
    }
    Ok(order)
}

/// Whether the next allocation of an inflate step that still needs `left` pages should be a
/// whole block of `block_pages`: only while a whole block fits, so a step never takes more
/// than it was asked for.
pub(crate) fn take_block(left: usize, block_pages: usize) -> bool {
    block_pages > 1 && left >= block_pages
}

/// Pages of the first step towards a new target: one block, or one buffer if that is more,
/// so the host sees the balloon move after one allocation instead of a whole step's.
pub(crate) fn first_step_pages(pages_per_buffer: usize, block_pages: usize) -> usize {
    pages_per_buffer.max(block_pages).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mib_on_4k_pages_is_order_9() {
        assert_eq!(block_order(2048, 12, 10), Ok(9));
        assert_eq!(block_order(4096, 12, 10), Ok(10));
        assert_eq!(block_order(8, 12, 10), Ok(1));
    }

    #[test]
    fn one_page_or_less_means_single_pages() {
        assert_eq!(block_order(0, 12, 10), Ok(0));
        assert_eq!(block_order(4, 12, 10), Ok(0));
        // 64 KiB pages: a 2 MiB block is order 5; 64 KiB or less is a single page.
        assert_eq!(block_order(2048, 16, 13), Ok(5));
        assert_eq!(block_order(64, 16, 13), Ok(0));
        assert_eq!(block_order(16, 16, 13), Ok(0));
    }

    #[test]
    fn refuses_odd_and_oversized_blocks() {
        assert_eq!(block_order(3000, 12, 10), Err(BlockError::NotPowerOfTwo));
        assert_eq!(block_order(12, 12, 10), Err(BlockError::NotPowerOfTwo));
        assert_eq!(block_order(8192, 12, 10), Err(BlockError::TooLarge));
        assert_eq!(
            block_order(u32::MAX, 12, 10),
            Err(BlockError::NotPowerOfTwo)
        );
        assert_eq!(block_order(1 << 31, 12, 10), Err(BlockError::TooLarge));
    }

    #[test]
    fn first_step_is_one_block_or_one_buffer() {
        assert_eq!(first_step_pages(256, 512), 512);
        assert_eq!(first_step_pages(256, 1), 256);
        assert_eq!(first_step_pages(16, 32), 32);
        assert_eq!(first_step_pages(0, 0), 1);
    }

    #[test]
    fn blocks_only_while_a_whole_one_fits() {
        assert!(take_block(2048, 512));
        assert!(take_block(512, 512));
        assert!(!take_block(511, 512));
        assert!(!take_block(2048, 1));
        assert!(!take_block(0, 0));
    }
}
