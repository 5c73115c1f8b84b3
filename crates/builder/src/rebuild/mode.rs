//! What a rebuild does with the layers' file data: an option the layout and the
//! writer read too, kept in a file of its own so that they need nothing else of
//! `rebuild/`.

/// What becomes of the layers' file data (`--clean=X` / `--incremental=X`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildData {
    /// The default: the image holds metadata only; each regular file is
    /// chunk-indexed into its layer, which is an extra device of the image (its
    /// device table lists the layers in the order given; mount with
    /// `-o device=LAYER1,device=LAYER2,...`).
    BlobIndex,
    /// `=data`: the data is copied into the image, which stands alone.
    Full,
    /// `=rvsp`: room for the data is reserved in the image but not written (the
    /// files read as zeros until a later tool fills the blocks in).
    Reserve,
}
