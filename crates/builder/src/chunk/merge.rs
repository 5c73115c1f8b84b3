//! How large a chunk-based file's chunks can be once its chunks are placed.
//!
//! The chunk size of `--chunksize` is a minimum: where consecutive chunks of a file
//! happen to be contiguous in the blob (or are all holes), a larger power-of-two
//! chunk describes them with fewer map entries. mkfs.erofs 1.9.4 picks the largest
//! size that every run of contiguous chunks is a multiple of (in blocks; the lowest
//! set bit of each run's length), which this reproduces so map sizes agree.

/// One chunk of a file as placed: a hole, or a blob block with the chunk's length
/// in bytes (shorter than the chunk size only for the file's last chunk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkAt {
    Hole,
    At { blk: u64, len: u64 },
}

/// The chunk size shift (in bytes) to use for a file of `size` bytes whose chunks of
/// `1 << bits` bytes are `chunks`, with `bs_bits` the block size shift and `max_bits`
/// the largest shift the format allows.
pub(crate) fn merged_bits(
    chunks: &[ChunkAt],
    size: u64,
    bits: u32,
    bs_bits: u32,
    max_bits: u32,
) -> u32 {
    let chunk = 1u64 << bits;
    // The smallest run, as a power of two of blocks; at most the file's blocks.
    let mut min_run = size.div_ceil(1 << bs_bits);
    let mut update = |start: u64, end: u64| {
        let blocks = (end - start) >> bs_bits;
        if blocks != 0 {
            let low = 1u64 << blocks.trailing_zeros();
            min_run = min_run.min(low);
        }
    };
    let (mut pos, mut run_start) = (0u64, 0u64);
    let mut last: Option<ChunkAt> = None;
    for &c in chunks {
        let continues = match (last, c) {
            (None, _) => true,
            (Some(ChunkAt::Hole), ChunkAt::Hole) => true,
            (Some(ChunkAt::At { blk: a, len }), ChunkAt::At { blk: b, .. }) => {
                (a << bs_bits) + len == b << bs_bits
            }
            _ => false,
        };
        if !continues {
            update(run_start, pos);
            run_start = pos;
        }
        pos += match c {
            ChunkAt::Hole => chunk,
            ChunkAt::At { len, .. } => len,
        };
        last = Some(c);
    }
    update(run_start, pos);
    let merged = (63 - min_run.max(1).leading_zeros()) + bs_bits;
    merged.clamp(bits, max_bits.max(bits))
}

/// The map entries at chunk shift `to` of `chunks` placed at shift `from`: every
/// `1 << (to - from)`-th entry (runs are multiples of the larger size, so each larger
/// chunk starts where its first smaller one does).
pub(crate) fn regroup(chunks: &[ChunkAt], size: u64, from: u32, to: u32) -> Vec<ChunkAt> {
    let count = size.div_ceil(1 << to) as usize;
    let step = 1usize << (to - from);
    (0..count).map(|k| chunks[k * step]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u32 = 12;

    fn at(blk: u64, len: u64) -> ChunkAt {
        ChunkAt::At { blk, len }
    }

    #[test]
    fn contiguous_file_gets_chunks_of_its_lowest_run_bit() {
        // 100000 bytes = 24 full blocks and a tail: runs of 24 blocks -> 8 blocks.
        let chunks: Vec<_> = (0..25)
            .map(|k| at(k, if k == 24 { 100_000 - 24 * 4096 } else { 4096 }))
            .collect();
        assert_eq!(merged_bits(&chunks, 100_000, BS, BS, BS + 31), BS + 3);
        let g = regroup(&chunks, 100_000, BS, BS + 3);
        assert_eq!(
            g,
            vec![at(0, 4096), at(8, 4096), at(16, 4096), at(24, 1696)]
        );
    }

    #[test]
    fn shared_or_hole_chunks_break_runs() {
        // data, data, hole, hole, data(elsewhere): runs 2, 2, 1 -> 1 block.
        let chunks = [
            at(0, 4096),
            at(1, 4096),
            ChunkAt::Hole,
            ChunkAt::Hole,
            at(7, 4096),
        ];
        assert_eq!(merged_bits(&chunks, 5 * 4096, BS, BS, BS + 31), BS);
        // data x2, holes x2: runs 2 and 2 -> 2 blocks.
        let chunks = [at(0, 4096), at(1, 4096), ChunkAt::Hole, ChunkAt::Hole];
        assert_eq!(merged_bits(&chunks, 4 * 4096, BS, BS, BS + 31), BS + 1);
        // Never beyond the format's limit, never below the asked size.
        let holes = vec![ChunkAt::Hole; 64];
        assert_eq!(merged_bits(&holes, 64 * 4096, BS, BS, BS + 3), BS + 3);
        assert_eq!(merged_bits(&[at(0, 10)], 10, BS + 2, BS, BS + 31), BS + 2);
    }
}
