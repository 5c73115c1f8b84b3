//! Compression settings and their grammar: the codecs and levels of `-z`, the
//! pcluster sizes of `-C` and `--compress-hints`, the compression parts of `-E`
//! (ztailpacking, legacy-compress, fragments, all-fragments, dedupe),
//! `--max-extent-bytes`, and the compression config records they put after the
//! superblock.

use ishare_erofs::format::{
    COMPRESSION_DEFLATE, COMPRESSION_LZ4, COMPRESSION_LZMA, COMPRESSION_ZSTD, LZMA_MAX_DICT_SIZE,
    PCLUSTER_MAX_SIZE,
};

use crate::error::{Error, Result};

/// `lz4_max_distance` of the superblock when there are no compression configs: the
/// LZ4 format's (and mkfs.erofs's) 64 KiB window.
pub(crate) const LZ4_MAX_DISTANCE: u16 = 65535;

/// Whether the image needs compression config records (and the COMPR_CFGS /
/// BIG_PCLUSTER bit): any algorithm but LZ4, or pclusters over one block.
pub(crate) fn uses_cfgs(c: &Compression, block_size: u32) -> bool {
    c.max_pcluster() > block_size
        || c.algorithms
            .iter()
            .any(|a| a.algorithm.id() != ishare_erofs::format::COMPRESSION_LZ4)
}

/// `available_compr_algs`.
pub(crate) fn algorithms_bitmap(c: &Compression) -> u16 {
    c.algorithms
        .iter()
        .fold(0, |m, a| m | 1 << a.algorithm.id())
}

/// The compression config records that follow the superblock (each a 16-bit length
/// then the record), in algorithm id order; empty when none are needed.
pub(crate) fn compr_cfgs(c: &Compression, bs: u32) -> Vec<u8> {
    if !uses_cfgs(c, bs) {
        return Vec::new();
    }
    let bitmap = algorithms_bitmap(c);
    let dict = |id: u8| {
        c.algorithms
            .iter()
            .filter(|a| a.algorithm.id() == id)
            .map(|a| a.dict_size(c.max_pcluster()))
            .max()
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    for id in 0..ishare_erofs::format::COMPRESSION_MAX {
        if bitmap & 1 << id == 0 {
            continue;
        }
        let mut rec = Vec::new();
        match id {
            ishare_erofs::format::COMPRESSION_LZ4 => {
                rec.extend_from_slice(&LZ4_MAX_DISTANCE.to_le_bytes());
                rec.extend_from_slice(&((c.max_pcluster() / bs) as u16).to_le_bytes());
                rec.resize(14, 0);
            }
            ishare_erofs::format::COMPRESSION_LZMA => {
                rec.extend_from_slice(&dict(id).to_le_bytes());
                rec.resize(14, 0);
            }
            ishare_erofs::format::COMPRESSION_DEFLATE => {
                rec.push(dict(id).ilog2() as u8);
                rec.resize(6, 0);
            }
            _ => {
                rec.push(0);
                rec.push((dict(id).ilog2() - 10) as u8);
                rec.resize(6, 0);
            }
        }
        out.extend_from_slice(&(rec.len() as u16).to_le_bytes());
        out.extend_from_slice(&rec);
    }
    out
}

/// A compressor the builder encodes with, by its mkfs.erofs name (`lz4hc` is its own
/// codec here, though the reader decodes it as LZ4: see [`Codec::id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// LZ4 (`lz4`).
    Lz4,
    /// LZ4 high compression (`lz4hc`), decoded as LZ4.
    Lz4hc,
    /// MicroLZMA (`lzma`).
    Lzma,
    /// Raw DEFLATE (`deflate`).
    Deflate,
    /// Raw DEFLATE by libdeflate (`libdeflate`), with its levels 0-12; the same
    /// on-disk algorithm as `deflate`.
    Libdeflate,
    /// Zstandard (`zstd`).
    Zstd,
}

impl Codec {
    /// Every algorithm.
    pub const ALL: [Codec; 6] = [
        Codec::Lz4,
        Codec::Lz4hc,
        Codec::Lzma,
        Codec::Deflate,
        Codec::Libdeflate,
        Codec::Zstd,
    ];

    /// mkfs.erofs's name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Lz4 => "lz4",
            Codec::Lz4hc => "lz4hc",
            Codec::Lzma => "lzma",
            Codec::Deflate => "deflate",
            Codec::Libdeflate => "libdeflate",
            Codec::Zstd => "zstd",
        }
    }

    /// Whether erofs-utils also compresses whole inputs with it (not only "as much
    /// as fits"): in the 48-bit layout its pclusters are then byte-aligned.
    pub fn encodes_whole(self) -> bool {
        matches!(self, Codec::Libdeflate | Codec::Zstd)
    }

    /// The on-disk algorithm id.
    pub fn id(self) -> u8 {
        match self {
            Codec::Lz4 | Codec::Lz4hc => COMPRESSION_LZ4,
            Codec::Lzma => COMPRESSION_LZMA,
            Codec::Deflate | Codec::Libdeflate => COMPRESSION_DEFLATE,
            Codec::Zstd => COMPRESSION_ZSTD,
        }
    }

    /// Valid levels and the default, as mkfs.erofs 1.9.
    fn levels(self) -> (&'static [std::ops::RangeInclusive<i32>], i32) {
        match self {
            Codec::Lz4 => (&[0..=0], 0),
            Codec::Lz4hc => (&[0..=12], 9),
            Codec::Lzma => (&[0..=9, 100..=109], 6),
            Codec::Deflate => (&[0..=9], 1),
            Codec::Libdeflate => (&[0..=12], 1),
            Codec::Zstd => (&[1..=22], 3),
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Codec::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                Error::InvalidOption(format!(
                    "unknown compression algorithm {s:?} (known: lz4, lz4hc, lzma, deflate, libdeflate, zstd)"
                ))
            })
    }
}

/// One algorithm with its settings (one `:`-separated part of `-z`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressor {
    /// The algorithm.
    pub algorithm: Codec,
    /// Level; `None` = the algorithm's default.
    pub level: Option<i32>,
    /// Dictionary (LZMA) or window (Zstandard, DEFLATE) size; `None` = automatic.
    pub dict_size: Option<u32>,
    /// LZMA's literal context bits, literal position bits and position bits
    /// (`lc=`, `lp=`, `pb=`); `None` = the preset's.
    pub lzma_lc_lp_pb: [Option<u32>; 3],
}

impl Compressor {
    /// `algorithm` with its default settings.
    pub fn new(algorithm: Codec) -> Self {
        Compressor {
            algorithm,
            level: None,
            dict_size: None,
            lzma_lc_lp_pb: [None; 3],
        }
    }

    /// Parses `ALG[,LEVEL]`, `ALG[,level=N][,dictsize=N]` (mkfs.erofs's forms), and
    /// for `lzma` also `lc=N`, `lp=N`, `pb=N`.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |m: String| Error::InvalidOption(format!("-z {spec}: {m}"));
        let mut parts = spec.split(',');
        let algorithm: Codec = parts.next().unwrap_or_default().parse()?;
        let mut c = Compressor::new(algorithm);
        for (i, p) in parts.enumerate() {
            let num = |v: &str| {
                v.parse::<i64>()
                    .map_err(|_| bad(format!("{v:?} is not a number")))
            };
            if let Some(v) = p.strip_prefix("level=") {
                c.level = Some(num(v)? as i32);
            } else if let Some(v) = p.strip_prefix("dictsize=") {
                let n = parse_size(v).ok_or_else(|| bad(format!("bad dictionary size {v:?}")))?;
                c.dict_size = Some(
                    u32::try_from(n).map_err(|_| bad(format!("dictionary size {n} too large")))?,
                );
            } else if let Some(slot) = ["lc=", "lp=", "pb="]
                .iter()
                .position(|k| p.starts_with(k))
                .filter(|_| algorithm == Codec::Lzma)
            {
                let v = &p[3..];
                c.lzma_lc_lp_pb[slot] = Some(
                    u32::try_from(num(v)?)
                        .map_err(|_| bad(format!("{p:?}: out of range (0 to 4)")))?,
                );
            } else if i == 0 && p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() {
                c.level = Some(num(p)? as i32);
            } else {
                return Err(bad(format!("unknown option {p:?}")));
            }
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        let a = self.algorithm;
        let (ranges, _) = a.levels();
        if let Some(l) = self.level
            && !ranges.iter().any(|r| r.contains(&l))
        {
            let r: Vec<String> = ranges
                .iter()
                .map(|r| format!("{}-{}", r.start(), r.end()))
                .collect();
            return Err(Error::InvalidOption(format!(
                "invalid {} compression level {l} (valid: {})",
                a.name(),
                r.join(", ")
            )));
        }
        if let Some(d) = self.dict_size {
            let ok = match a {
                Codec::Lzma => (4096..=LZMA_MAX_DICT_SIZE).contains(&d),
                Codec::Zstd => {
                    d.is_power_of_two() && (1024..=PCLUSTER_MAX_SIZE as u32).contains(&d)
                }
                // The DEFLATE encoder always uses the full 32 KiB window.
                Codec::Deflate | Codec::Libdeflate => d == 32768,
                Codec::Lz4 | Codec::Lz4hc => false,
            };
            if !ok {
                return Err(Error::InvalidOption(format!(
                    "invalid {} dictionary size {d}",
                    a.name()
                )));
            }
        }
        // liblzma's limits (LZMA_LCLP_MAX, LZMA_PB_MAX), which the kernel's
        // MicroLZMA decoder shares; every preset has lc=3, lp=0, pb=2.
        let [lc, lp, pb] = self.lzma_lc_lp_pb;
        let (lc, lp, pb) = (lc.unwrap_or(3), lp.unwrap_or(0), pb.unwrap_or(2));
        if lc > 4 || lp > 4 || pb > 4 || lc + lp > 4 {
            return Err(Error::InvalidOption(format!(
                "lzma: lc={lc}, lp={lp}, pb={pb}: each must be 0 to 4, and lc + lp at most 4"
            )));
        }
        Ok(())
    }

    pub(crate) fn effective_level(&self) -> i32 {
        self.level.unwrap_or(self.algorithm.levels().1)
    }

    /// The dictionary/window size used, as mkfs.erofs chooses it by default: LZMA
    /// four times the largest pcluster (32 KiB to 8 MiB), Zstandard eight times
    /// (power of two, at most 1 MiB), DEFLATE 32 KiB.
    pub(crate) fn dict_size(&self, pcluster_max: u32) -> u32 {
        if let Some(d) = self.dict_size {
            return d;
        }
        match self.algorithm {
            Codec::Lzma => (pcluster_max.saturating_mul(4)).clamp(32768, LZMA_MAX_DICT_SIZE),
            Codec::Zstd => {
                let d = pcluster_max.saturating_mul(8).min(PCLUSTER_MAX_SIZE as u32);
                1 << d.ilog2()
            }
            Codec::Deflate | Codec::Libdeflate => 32768,
            Codec::Lz4 | Codec::Lz4hc => 0,
        }
    }
}

/// Compression settings of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// Algorithms in `-z` order: the first compresses every file; a second (HEAD2)
    /// is reserved for `--compress-hints`.
    pub algorithms: Vec<Compressor>,
    /// Largest pcluster in bytes (`-C`), a multiple of the block size.
    pub pcluster_size: u32,
    /// Inline each file's last pcluster after its inode when it fits (`-E ztailpacking`).
    pub ztailpacking: bool,
    /// Full lcluster indexes instead of compact ones (`-E legacy-compress`).
    pub legacy_indexes: bool,
    /// Largest decompressed extent (`--max-extent-bytes`); `None` = no limit
    /// besides the kernel's.
    pub max_extent_bytes: Option<u64>,
    /// Per-file settings (`--compress-hints`): the first hint whose pattern matches a
    /// file's path (relative to the source root) decides its pcluster size and
    /// algorithm.
    pub hints: Vec<Hint>,
    /// Store the end of each compressed file that would otherwise take a last,
    /// partly filled pcluster (and small files whole) in the packed inode, itself
    /// compressed (`-E fragments`); identical tails are stored once, and so are
    /// identical pclusters.
    pub fragments: bool,
    /// Store every compressed file whole in the packed inode (`-E all-fragments`;
    /// implies `fragments`).
    pub all_fragments: bool,
    /// Pcluster size of the packed inode (`-E fragments=SIZE`); `None` = `pcluster_size`.
    pub packed_pcluster_size: Option<u32>,
    /// Reuse pclusters already written whose data starts the same way, also in part
    /// (`-E dedupe`; files are then compressed one after another).
    pub dedupe: bool,
    /// How tail fragments are deduplicated (`-E fragdedupe`).
    pub fragdedupe: FragDedupe,
}

/// `-E fragdedupe=`: which tail fragments may point into an earlier one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FragDedupe {
    /// Any fragment equal to (the end of) an earlier one (the default).
    #[default]
    Full,
    /// Only fragments that are a whole file (`fragdedupe=inode`).
    Inode,
    /// None: every fragment is appended (`^fragdedupe`).
    Off,
}

impl FragDedupe {
    /// How much of a `matched`-byte match with an earlier fragment may be used for
    /// a file of `size` bytes.
    pub(crate) fn keep(self, matched: u64, size: u64) -> u64 {
        match self {
            FragDedupe::Full => matched,
            FragDedupe::Inode if matched >= size => matched,
            FragDedupe::Inode | FragDedupe::Off => 0,
        }
    }
}

/// One line of a `--compress-hints` file: `PCLUSTER_SIZE [ALGORITHM_INDEX] REGEX`.
#[derive(Debug, Clone)]
pub struct Hint {
    /// Pcluster size in bytes; 0 = store matching files uncompressed.
    pub pcluster_size: u32,
    /// Index into [`Compression::algorithms`].
    pub algorithm: usize,
    /// Extended regular expression, searched in the relative path.
    pub pattern: regex::bytes::Regex,
}

impl PartialEq for Hint {
    fn eq(&self, o: &Self) -> bool {
        self.pcluster_size == o.pcluster_size
            && self.algorithm == o.algorithm
            && self.pattern.as_str() == o.pattern.as_str()
    }
}

impl Eq for Hint {}

impl Compression {
    /// `-z` with its defaults: one pcluster per block, compact indexes.
    pub fn parse(spec: &str, block_size: u32) -> Result<Self> {
        let algorithms = spec
            .split(':')
            .map(Compressor::parse)
            .collect::<Result<Vec<_>>>()?;
        if algorithms.len() > 2 {
            return Err(Error::InvalidOption(format!(
                "-z {spec}: at most two algorithms (HEAD1 and HEAD2)"
            )));
        }
        Ok(Self {
            algorithms,
            pcluster_size: block_size,
            ztailpacking: false,
            legacy_indexes: false,
            max_extent_bytes: None,
            hints: Vec::new(),
            fragments: false,
            all_fragments: false,
            packed_pcluster_size: None,
            dedupe: false,
            fragdedupe: FragDedupe::Full,
        })
    }

    /// Whether uncompressed pclusters are stored rotated to their offset in the
    /// lcluster (mkfs.erofs does so with fragments, unless deduplicating).
    pub(crate) fn interlaced(&self) -> bool {
        self.fragments && !self.dedupe
    }

    /// Whether files compressed with algorithm `alg` (index in the `-z` list) get
    /// byte-aligned pclusters: in the 48-bit layout (`wide`), with the algorithms
    /// that compress whole inputs (mkfs.erofs's `data_unaligned`). Not with dedupe,
    /// whose index addresses whole blocks: those files keep block-aligned pclusters
    /// (extent records describe both).
    pub(crate) fn unaligned(&self, alg: usize, wide: bool) -> bool {
        wide && !self.dedupe
            && self
                .algorithms
                .get(alg)
                .is_some_and(|c| c.algorithm.encodes_whole())
    }

    /// Pcluster size of the packed inode.
    pub(crate) fn packed_pcluster(&self) -> u32 {
        self.packed_pcluster_size.unwrap_or(self.pcluster_size)
    }

    /// Reads a `--compress-hints` file (mkfs.erofs's format: `#` comments, then per
    /// line a pcluster size, an optional algorithm index into `-z`'s list, and a
    /// regular expression to the end of the line).
    pub fn parse_hints(&mut self, text: &str, file: &str) -> Result<()> {
        for (i, line) in text.lines().enumerate() {
            let bad = |m: String| Error::InvalidOption(format!("{file}:{}: {m}", i + 1));
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let line = line.trim_start();
            let (size, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let pcluster_size = size
                .parse::<u32>()
                .map_err(|_| bad(format!("{size:?} is not a pcluster size")))?;
            let rest = rest.trim_start_matches([' ', '\t']);
            let (algorithm, pattern) = match rest.split_once([' ', '\t']) {
                Some((a, p)) if a.bytes().all(|b| b.is_ascii_digit()) => {
                    let n: usize = a.parse().map_err(|_| bad(format!("bad index {a:?}")))?;
                    if n >= self.algorithms.len() {
                        return Err(bad(format!(
                            "algorithm index {n}, but -z names {} algorithm(s)",
                            self.algorithms.len()
                        )));
                    }
                    (n, p.trim_start_matches([' ', '\t']))
                }
                _ => (0, rest),
            };
            if pattern.is_empty() {
                return Err(bad("no pattern".into()));
            }
            let pattern = regex::bytes::Regex::new(pattern)
                .map_err(|e| bad(format!("invalid pattern {pattern:?}: {e}")))?;
            self.hints.push(Hint {
                pcluster_size,
                algorithm,
                pattern,
            });
        }
        Ok(())
    }

    /// Pcluster size and algorithm index for a file at `rel` (0 = not compressed).
    pub(crate) fn settings_for(&self, rel: &[u8]) -> (u32, usize) {
        self.hints
            .iter()
            .find(|h| h.pattern.is_match(rel))
            .map_or((self.pcluster_size, 0), |h| (h.pcluster_size, h.algorithm))
    }

    /// The largest pcluster any file may use.
    pub(crate) fn max_pcluster(&self) -> u32 {
        self.hints
            .iter()
            .map(|h| h.pcluster_size)
            .fold(self.pcluster_size, u32::max)
    }

    pub(crate) fn validate(&self, block_size: u32) -> Result<()> {
        let p = self.pcluster_size;
        if p == 0 || !p.is_multiple_of(block_size) || u64::from(p) > PCLUSTER_MAX_SIZE {
            return Err(Error::InvalidOption(format!(
                "pcluster size {p} must be a multiple of the block size ({block_size}) up to {PCLUSTER_MAX_SIZE}"
            )));
        }
        if self.algorithms.is_empty() {
            return Err(Error::InvalidOption("no compression algorithm".into()));
        }
        for h in &self.hints {
            let p = h.pcluster_size;
            if p != 0 && (!p.is_multiple_of(block_size) || u64::from(p) > PCLUSTER_MAX_SIZE) {
                return Err(Error::InvalidOption(format!(
                    "compress hint {:?}: pcluster size {p} must be a multiple of the block size ({block_size}) up to {PCLUSTER_MAX_SIZE}",
                    h.pattern.as_str()
                )));
            }
        }
        for c in &self.algorithms {
            c.validate()?;
        }
        if let Some(p) = self.packed_pcluster_size
            && (p == 0 || !p.is_multiple_of(block_size) || p > self.max_pcluster())
        {
            return Err(Error::InvalidOption(format!(
                "-E fragments={p}: the packed inode's pcluster size must be a multiple of the \
                 block size ({block_size}) up to the largest pcluster ({})",
                self.max_pcluster()
            )));
        }
        if self.all_fragments && !self.fragments {
            return Err(Error::InvalidOption(
                "all-fragments implies fragments: set both".into(),
            ));
        }
        if let Some(m) = self.max_extent_bytes
            && m < u64::from(block_size)
        {
            return Err(Error::InvalidOption(format!(
                "--max-extent-bytes {m} must be at least the block size ({block_size})"
            )));
        }
        Ok(())
    }
}

/// Parses a size as mkfs.erofs does: `123`, `4k`, `1M`, `2G`, `0x1000`.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, mul) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n = match num.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok()?,
        None => num.parse().ok()?,
    };
    n.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mkfs_erofs_forms() {
        let c = Compression::parse("lz4hc,12:lzma,level=109,dictsize=1M", 4096).unwrap();
        assert_eq!(c.algorithms[0].algorithm, Codec::Lz4hc);
        assert_eq!(c.algorithms[0].level, Some(12));
        assert_eq!(c.algorithms[1].level, Some(109));
        assert_eq!(c.algorithms[1].dict_size, Some(1 << 20));
        for bad in [
            "lz5",
            "lz4hc,13",
            "zstd,0",
            "lzma,10",
            "zstd,dictsize=3000",
            "lz4,x=1",
        ] {
            let e = Compression::parse(bad, 4096).unwrap_err().to_string();
            let alg = bad.split(',').next().unwrap();
            assert!(e.contains(alg), "{bad}: {e}");
        }
        assert!(Compression::parse("lz4:lz4hc:zstd", 4096).is_err());
    }

    #[test]
    fn default_dictionaries_follow_the_pcluster_size() {
        let c = Compressor::new;
        assert_eq!(c(Codec::Lzma).dict_size(4096), 32768);
        assert_eq!(c(Codec::Lzma).dict_size(65536), 262144);
        assert_eq!(c(Codec::Zstd).dict_size(4096), 32768);
        assert_eq!(c(Codec::Zstd).dict_size(1 << 20), 1 << 20);
    }
}
