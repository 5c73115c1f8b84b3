//! Compressing one segment of a file into extents of whole pclusters.
//!
//! Each file is cut into segments of [`SEGMENT_SIZE`] (as mkfs.erofs does, so a large
//! file uses every core); each segment is compressed on its own, and its result
//! depends only on its bytes, so the image is the same for any number of workers.
//!
//! An extent is compressed when that saves at least one block (its pcluster, rounded
//! to blocks, is smaller than its input); otherwise the input is stored as one
//! uncompressed block at a time. With ztailpacking, the last extent of a file is also
//! prepared for storage inline after the inode (compressed if that is smaller than its
//! input, else raw when under a block); the layout decides whether it fits there.
//!
//! With fragments, the end of a file that fits one pcluster (or that compresses into
//! less than one) is not compressed here: it becomes the file's tail fragment, kept
//! in the spill file until the merge (`frag`) puts it in the packed inode. When the
//! end was matched to an earlier file's fragment (`tail`), the data before the match
//! is cut so that what is left lies within it.
//!
//! With dedupe, before each new extent the data ahead is looked up among the starts
//! of every extent written so far (`dedupe`), and a match becomes an extent that
//! reuses that pcluster.

use sha2::{Digest, Sha256};

use super::codec::Encoder;
use super::dedupe::{Dedupe, Item};
use super::extent::{At, Frag, InlineTail, ZExtent, ZFile};
use super::pass::Pass;
use crate::error::Result;
use crate::tree::Source;

/// Input compressed independently of the rest of its file.
pub(crate) const SEGMENT_SIZE: u64 = 16 << 20;
/// Largest input of one extent unless `--max-extent-bytes` says less (mkfs.erofs's
/// limit too): bounds the memory of each read, in the kernel and here.
const MAX_EXTENT: u64 = 4000 << 10;

/// One segment to compress.
pub(crate) struct Seg {
    pub node: usize,
    pub seg: u64,
    pub last: bool,
    pub pcluster: u32,
    pub alg: usize,
    /// Own blocks of the file's earlier segments (dedupe index addresses).
    pub blk_base: u32,
    /// Last segment: its last `matched.0` bytes end node `matched.1`'s fragment.
    pub matched: Option<(usize, usize)>,
}

/// Output of a segment being built: encoded blocks and the extents over them.
struct Encoded {
    out: Vec<u8>,
    extents: Vec<ZExtent>,
    bs: usize,
    interlaced: bool,
    hashes: bool,
}

impl Encoded {
    fn own(&self, hash_from: usize) -> At {
        let hash = if self.hashes {
            xxhash_rust::xxh3::xxh3_64(&self.out[hash_from..])
        } else {
            0
        };
        // Relative to the segment's output until it is spilled.
        At::Own {
            spill: hash_from as u64,
            hash,
        }
    }

    /// Appends an uncompressed extent of `data` (at most a block) in one block;
    /// interlaced, the data starts at its offset in the lcluster and wraps around.
    fn raw(&mut self, data: &[u8], lstart: u64) {
        let bs = self.bs;
        debug_assert!(data.len() <= bs && !data.is_empty());
        let at = self.out.len();
        self.out.resize(at + bs, 0);
        let shift = if self.interlaced {
            (lstart % bs as u64) as usize
        } else {
            0
        };
        let right = (bs - shift).min(data.len());
        self.out[at + shift..at + shift + right].copy_from_slice(&data[..right]);
        self.out[at..at + data.len() - right].copy_from_slice(&data[right..]);
        let a = self.own(at);
        self.extents.push(ZExtent {
            lstart,
            len: data.len() as u32,
            blocks: 1,
            plen: bs as u32,
            compressed: false,
            partial: false,
            at: a,
        });
    }

    /// Appends a compressed extent: its encoding end-aligned in whole blocks behind
    /// zero padding (`ZERO_PADDING`), where the kernel looks for it.
    fn compressed(&mut self, enc: &[u8], lstart: u64, used: usize) {
        let bs = self.bs;
        let at = self.out.len();
        let plen = enc.len().next_multiple_of(bs);
        self.out.resize(at + plen - enc.len(), 0);
        self.out.extend_from_slice(enc);
        let a = self.own(at);
        self.extents.push(ZExtent {
            lstart,
            len: used as u32,
            blocks: (plen / bs) as u32,
            plen: plen as u32,
            compressed: true,
            partial: false,
            at: a,
        });
    }
}

impl Encoded {
    /// Appends a byte-aligned compressed extent: its encoding right after the
    /// previous pcluster, unpadded (48-bit layout).
    fn packed(&mut self, enc: &[u8], lstart: u64, used: usize) {
        let at = self.out.len();
        self.out.extend_from_slice(enc);
        let a = self.own(at);
        self.extents.push(ZExtent {
            lstart,
            len: used as u32,
            blocks: enc.len().div_ceil(self.bs) as u32,
            plen: enc.len() as u32,
            compressed: true,
            partial: false,
            at: a,
        });
    }
}

/// Compresses segment `s.seg` of file `s.node`, deduplicating with `dd` if given.
pub(crate) fn segment(
    pass: &Pass<'_>,
    enc: &mut Encoder,
    s: &Seg,
    dd: Option<&mut Dedupe>,
) -> Result<ZFile> {
    let size = pass.tree.nodes[s.node].size;
    let start = s.seg * SEGMENT_SIZE;
    let len = (size - start).min(SEGMENT_SIZE) as usize;
    let src = Source::open(pass.tree, s.node)?;
    let mut input = vec![0u8; len];
    src.read_exact_at(&mut input, start, size)?;
    drop(src);
    let digest = (s.last && s.seg == 0 && pass.hash).then(|| Sha256::digest(&input).into());
    let mut cut = Cutter::new(pass, s, &input, start);
    let tail = cut.run(enc, dd)?;
    if let Some(p) = pass.progress {
        p.advance(len as u64);
    }
    cut.finish(tail, digest)
}

/// What one step of the cutting loop decided.
enum Step {
    /// Go on at the new head.
    Next,
    /// The segment is done, without a tail fragment.
    Done,
    /// The rest from the head is the tail fragment: the end of the matched
    /// earlier fragment (`shared`) or a new one.
    Tail { shared: bool },
}

/// The state of cutting one segment into extents.
struct Cutter<'p, 'a> {
    pass: &'p Pass<'a>,
    s: &'p Seg,
    input: &'p [u8],
    /// Where the segment starts in its file.
    start: u64,
    bs: usize,
    /// The file's pcluster size.
    pcluster: usize,
    max_extent: usize,
    /// Last segment with fragments on: its end may become the tail fragment.
    frag: bool,
    /// Last segment with ztailpacking: its last extent may go inline.
    tailpack: bool,
    /// Byte-aligned pclusters, each of a whole pcluster of input (48-bit layout).
    unaligned: bool,
    enc: Encoded,
    /// The encoder's output, up to a pcluster.
    dst: Vec<u8>,
    inline: Option<InlineTail>,
    fallback: usize,
    /// Some extent reuses an earlier pcluster.
    deduped: bool,
    /// Own blocks so far (dedupe index addresses).
    own_blocks: u32,
    /// With a matched end (mkfs.erofs's deduplicated fragment), the data before it is
    /// compressed first; its last piece is then compressed together with the matched
    /// bytes into a pcluster sized to it (`fixing`), until what is left lies within
    /// the match (it becomes the end of that fragment), fits a pcluster (a new
    /// fragment) or is nothing (no fragment). `matched` bytes of the end match node
    /// `matched_node`'s fragment.
    matched: usize,
    matched_node: usize,
    fixing: bool,
    /// Data from here on is not compressed in the current phase.
    limit: usize,
    /// The pcluster size in the current phase.
    pc: usize,
    /// Next byte of the segment to store.
    head: usize,
}

impl<'p, 'a> Cutter<'p, 'a> {
    fn new(pass: &'p Pass<'a>, s: &'p Seg, input: &'p [u8], start: u64) -> Self {
        let len = input.len();
        let pcluster = s.pcluster as usize;
        let frag = pass.fragments && s.last;
        let unaligned = pass.cfg.unaligned(s.alg, pass.wide);
        let (matched, matched_node) = s.matched.filter(|_| frag).unwrap_or((0, 0));
        Cutter {
            pass,
            s,
            input,
            start,
            bs: pass.block_size as usize,
            pcluster,
            max_extent: pass
                .cfg
                .max_extent_bytes
                .unwrap_or(MAX_EXTENT)
                .min(MAX_EXTENT) as usize,
            frag,
            // No inline tails with byte-aligned pclusters (mkfs.erofs).
            tailpack: pass.tailpacking && s.last && !unaligned,
            unaligned,
            enc: Encoded {
                out: Vec::with_capacity(len / 2),
                extents: Vec::new(),
                bs: pass.block_size as usize,
                interlaced: pass.interlaced && !unaligned,
                hashes: pass.pcluster_hashes,
            },
            dst: vec![0u8; pcluster],
            inline: None,
            fallback: 0,
            deduped: false,
            own_blocks: s.blk_base,
            matched,
            matched_node,
            fixing: false,
            limit: len - matched.min(len),
            pc: pcluster,
            head: 0,
        }
    }

    /// Cuts the whole segment; returns where its tail fragment starts and whether
    /// it is the end of the matched fragment.
    fn run(
        &mut self,
        enc: &mut Encoder,
        mut dd: Option<&mut Dedupe>,
    ) -> Result<Option<(usize, bool)>> {
        while self.head < self.input.len() {
            match self.step(enc, dd.as_deref_mut())? {
                Step::Next => {}
                Step::Done => return Ok(None),
                Step::Tail { shared } => return Ok(Some((self.head, shared))),
            }
        }
        Ok(None)
    }

    /// Stores the next extent (or decides the rest is the tail).
    fn step(&mut self, enc: &mut Encoder, mut dd: Option<&mut Dedupe>) -> Result<Step> {
        let bs = self.bs;
        if self.head >= self.limit {
            // The data before the match ended on a pcluster boundary.
            return Ok(Step::Tail { shared: true });
        }
        if let Some(dd) = dd.as_deref_mut() {
            self.head = dedupe_at(
                self.pass,
                dd,
                self.s.alg,
                &self.input[..self.limit],
                self.head,
                self.start,
                &mut self.enc.extents,
                &mut self.deduped,
            )?;
            if self.head >= self.limit {
                return Ok(Step::Next);
            }
        }
        let rem = self.limit - self.head;
        let lstart = self.start + self.head as u64;
        if self.unaligned {
            return self.step_unaligned(enc, rem, lstart);
        }
        if self.frag && rem <= self.pc {
            if self.matched > 0 && !self.fixing {
                self.fit_before_match(rem);
                return Ok(Step::Next);
            }
            return Ok(Step::Tail { shared: false });
        }
        // Under a block and no ztailpacking: compressing cannot save a block.
        if rem <= bs && !self.tailpack {
            self.enc.raw(&self.input[self.head..self.limit], lstart);
            return Ok(Step::Done);
        }
        let (used, n) = self.encode(enc, rem)?;
        if self.frag && used == rem && n < self.pc {
            if self.matched > 0 && !self.fixing && n % bs != 0 {
                self.fit_before_match(n);
                return Ok(Step::Next);
            }
            if self.matched == 0 || self.fixing {
                // The rest compresses into less than a pcluster: a fragment.
                return Ok(Step::Tail { shared: false });
            }
        }
        let is_tail = self.tailpack && used == rem;
        if is_tail && n < bs && n < used {
            self.inline_compressed(used, n, lstart);
            return Ok(Step::Done);
        }
        if used == 0 || n.next_multiple_of(bs) >= used {
            // No block saved: store uncompressed, one block at a time.
            if self.tailpack && rem < bs {
                self.inline_raw(rem, lstart);
                return Ok(Step::Done);
            }
            // As many blocks as the attempt covered (up to a pcluster), so data
            // that does not compress is not tried again block by block; one with
            // dedupe, which looks for a match before every block, or while fitting
            // the data before a matched end.
            let nblk = if dd.is_some() || self.fixing {
                1
            } else {
                (used.min(self.pc).min(rem) / bs).max(1)
            };
            self.raw_blocks(nblk, dd);
        } else {
            self.compressed(used, n, lstart, dd);
        }
        if self.fixing {
            let left = self.input.len() - self.head;
            if left == 0 {
                // The pcluster took everything, the matched bytes too (an encoding
                // that fills it exactly): the file has no fragment, as with
                // mkfs.erofs, which drops a deduplicated fragment reduced to nothing.
                // An empty fragment cannot be expressed: its index entry would take
                // the place of this pcluster's head, and its data would be read from
                // the packed inode.
                return Ok(Step::Done);
            }
            if left <= self.matched {
                return Ok(Step::Tail { shared: true });
            }
            self.pc = self
                .pcluster
                .min((left - self.matched).next_multiple_of(bs));
        }
        Ok(Step::Next)
    }

    /// One extent of a byte-aligned file (mkfs.erofs's `data_unaligned`): a whole
    /// pcluster of input compressed at once, kept if its encoding is any shorter,
    /// else stored a block at a time; the end that fits a pcluster is the tail
    /// fragment when fragments are on. With a matched end, the data before it is
    /// cut so; its last piece (up to a pcluster) is then compressed together with
    /// the matched bytes, a pcluster of input at a time into at most the piece's
    /// blocks, until what is left lies within the match (the end of that fragment)
    /// or fits, or compresses into, those blocks (a new fragment).
    fn step_unaligned(&mut self, enc: &mut Encoder, rem: usize, lstart: u64) -> Result<Step> {
        let bs = self.bs;
        if self.matched > 0 && !self.fixing && rem <= self.pc {
            self.fit_before_match(rem);
            return Ok(Step::Next);
        }
        let rem = self.limit - self.head;
        if self.frag && rem <= self.pc {
            return Ok(Step::Tail { shared: false });
        }
        if rem <= bs {
            self.enc.raw(&self.input[self.head..self.limit], lstart);
            return Ok(Step::Done);
        }
        let take = rem.min(self.pcluster).min(self.max_extent);
        let data = &self.input[self.head..self.head + take];
        match enc.whole(data, &mut self.dst[..self.pc]) {
            // The rest compresses into less than the pcluster: a fragment.
            Some(n) if self.frag && take == rem && n < self.pc => {
                return Ok(Step::Tail { shared: false });
            }
            Some(n) if n < take => {
                self.enc.packed(&self.dst[..n], lstart, take);
                self.head += take;
            }
            _ => {
                // mkfs.erofs's uncompressed extents: blocks while at least two
                // blocks of the attempt are left, then one more.
                let mut processed = take.min(self.pc);
                loop {
                    let count = (self.limit - self.head).min(bs);
                    self.raw_blocks(1, None);
                    if processed < bs + count {
                        break;
                    }
                    processed -= count;
                }
            }
        }
        if self.fixing {
            let left = self.input.len() - self.head;
            if left == 0 {
                return Ok(Step::Done);
            }
            if left <= self.matched {
                return Ok(Step::Tail { shared: true });
            }
            self.pc = self
                .pcluster
                .min((left - self.matched).next_multiple_of(bs));
        }
        Ok(Step::Next)
    }

    /// Starts compressing the last piece before the matched end together with the
    /// matched bytes, into pclusters sized to the piece's `n` bytes.
    fn fit_before_match(&mut self, n: usize) {
        (self.pc, self.fixing, self.limit) = (n.next_multiple_of(self.bs), true, self.input.len());
    }

    /// Encodes as much from the head as fits the current pcluster; returns the
    /// bytes used and the encoded length (in `dst`).
    fn encode(&mut self, enc: &mut Encoder, rem: usize) -> Result<(usize, usize)> {
        let bs = self.bs;
        let take = rem.min(self.max_extent);
        let data = &self.input[self.head..self.head + take];
        let (mut used, mut n) = enc.dest_size(data, &mut self.dst[..self.pc])?;
        if self.tailpack && used == rem && n > bs && n % bs != 0 && n.next_multiple_of(bs) < used {
            // The last extent ends in a partly filled block: if a block less holds
            // most of it and the rest is smaller than what that saves, the rest can
            // go inline (mkfs.erofs's recompression of the trailing extent).
            let first = self.dst[..n].to_vec();
            let (u2, n2) = enc.dest_size(data, &mut self.dst[..n / bs * bs])?;
            if u2 > 0 && n2 > 0 && n2 + (used - u2) < n.next_multiple_of(bs) {
                (used, n) = (u2, n2);
            } else {
                self.dst[..n].copy_from_slice(&first);
            }
        }
        Ok((used, n))
    }

    /// The inline candidate, compressed (`n` bytes in `dst` for `used` of input);
    /// its block form if it does not fit.
    fn inline_compressed(&mut self, used: usize, n: usize, lstart: u64) {
        self.inline = Some(InlineTail {
            len: used as u32,
            data: self.dst[..n].to_vec(),
            compressed: true,
        });
        let before = self.enc.extents.len();
        if used > self.bs {
            self.enc.compressed(&self.dst[..n], lstart, used);
        } else {
            self.enc.raw(&self.input[self.head..], lstart);
        }
        self.fallback = self.enc.extents.len() - before;
    }

    /// The inline candidate, raw (the last `rem` bytes, under a block); its block
    /// form if it does not fit.
    fn inline_raw(&mut self, rem: usize, lstart: u64) {
        self.inline = Some(InlineTail {
            len: rem as u32,
            data: self.input[self.head..].to_vec(),
            compressed: false,
        });
        self.enc.raw(&self.input[self.head..], lstart);
        self.fallback = 1;
    }

    /// Stores up to `nblk` blocks from the head uncompressed.
    fn raw_blocks(&mut self, nblk: usize, mut dd: Option<&mut Dedupe>) {
        let input = self.input;
        for _ in 0..nblk {
            let k = (self.limit - self.head).min(self.bs);
            if k == 0 {
                break;
            }
            let l = self.start + self.head as u64;
            let data = &input[self.head..self.head + k];
            self.enc.raw(data, l);
            self.record(dd.as_deref_mut(), data, l);
            self.own_blocks = self.own_blocks.wrapping_add(1);
            self.head += k;
        }
    }

    /// Stores the `n` encoded bytes in `dst`, which hold `used` bytes from the head.
    fn compressed(&mut self, used: usize, n: usize, lstart: u64, dd: Option<&mut Dedupe>) {
        let input = self.input;
        self.enc.compressed(&self.dst[..n], lstart, used);
        self.record(dd, &input[self.head..self.head + used], lstart);
        self.own_blocks = self
            .own_blocks
            .wrapping_add(self.enc.extents.last().map_or(0, |e| e.blocks));
        self.head += used;
    }

    /// Indexes the extent just stored (over `data`) for dedupe, if on.
    fn record(&mut self, dd: Option<&mut Dedupe>, data: &[u8], lstart: u64) {
        if let Some(dd) = dd {
            index(
                dd,
                self.s,
                data,
                lstart,
                self.enc.extents.last(),
                self.own_blocks,
            );
        }
    }

    /// The segment's result: the tail fragment (starting at `tail.0`; its bytes
    /// spilled unless it is the end of the matched fragment) and the encoded
    /// blocks, spilled, with the extents pointing at them.
    fn finish(self, tail: Option<(usize, bool)>, digest: Option<[u8; 32]>) -> Result<ZFile> {
        let (start, len) = (self.start, self.input.len());
        // An empty fragment has no index entry of its own (see `step`).
        debug_assert!(tail.is_none_or(|(h, _)| h < len), "empty tail fragment");
        let frag = match tail {
            Some((h, true)) => Some(Frag {
                lstart: start + h as u64,
                len: (len - h) as u64,
                spill: None,
                offset: 0,
                suffix_of: Some(self.matched_node),
            }),
            Some((h, false)) => Some(Frag {
                lstart: start + h as u64,
                len: (len - h) as u64,
                spill: Some(self.pass.spill.put(&self.input[h..])?),
                offset: 0,
                suffix_of: None,
            }),
            None => None,
        };
        let mut extents = self.enc.extents;
        if !self.enc.out.is_empty() {
            let base = self.pass.spill.put(&self.enc.out)?;
            for e in &mut extents {
                if let At::Own { spill, .. } = &mut e.at {
                    *spill += base;
                }
            }
        }
        Ok(ZFile {
            extents,
            inline: self.inline,
            fallback: self.fallback,
            frag,
            dedupe: self.deduped,
            digest,
            // Set when the file's segments are put together.
            algorithm: 0,
            unaligned: self.unaligned,
        })
    }
}

/// Records a new extent (just written at `lstart`, over `data`) in the dedupe index.
fn index(dd: &mut Dedupe, s: &Seg, data: &[u8], lstart: u64, e: Option<&ZExtent>, blk: u32) {
    if let Some(e) = e {
        dd.insert(
            data,
            Item {
                node: s.node,
                lstart,
                len: e.len,
                blocks: e.blocks,
                compressed: e.compressed,
                alg: s.alg,
                blk,
            },
        );
    }
}

/// Replaces the data at `head` with extents reusing earlier pclusters, as long as
/// matches are found (mkfs.erofs's rules: a match may start inside the previous
/// extent, which then keeps only its first part, but at least a block of it; a
/// big pcluster must be referenced across two lclusters, where its block count is
/// stored). Returns the new head.
#[allow(clippy::too_many_arguments)]
fn dedupe_at(
    pass: &Pass<'_>,
    dd: &mut Dedupe,
    alg: usize,
    input: &[u8],
    mut head: usize,
    start: u64,
    extents: &mut Vec<ZExtent>,
    deduped: &mut bool,
) -> Result<usize> {
    let bs = pass.block_size as usize;
    let bs64 = bs as u64;
    loop {
        let prev_len = extents.last().map_or(0, |e| e.len as usize);
        let back = if prev_len <= bs {
            0
        } else {
            head.min(prev_len - bs)
        };
        let Some(m) = dd.find(pass.tree, alg, input, head - back, head)? else {
            return Ok(head);
        };
        let delta = head - m.cur;
        let lstart = start + m.cur as u64;
        if m.item.blocks > 1 && lstart % bs64 + (m.len as u64) < 2 * bs64 {
            return Ok(head);
        }
        if delta > 0 {
            let p = extents
                .last_mut()
                .expect("a match before head needs a previous extent");
            let kept = u64::from(p.len) - delta as u64;
            if p.blocks > 1 && p.lstart % bs64 + kept < 2 * bs64 {
                return Ok(head);
            }
            p.len = kept as u32;
            p.partial = p.compressed;
        }
        extents.push(ZExtent {
            lstart,
            len: m.len as u32,
            blocks: m.item.blocks,
            plen: m.item.blocks * bs as u32,
            compressed: m.item.compressed,
            partial: m.item.compressed && m.len < m.item.len as usize,
            at: At::Shared {
                node: m.item.node,
                pos: u64::from(m.item.blk) * bs64,
            },
        });
        *deduped = true;
        head = m.cur + m.len;
        if head >= input.len() {
            return Ok(head);
        }
    }
}
