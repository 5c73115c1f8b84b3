//! The inputs a build reads, each turned into the one [`Tree`](crate::tree::Tree)
//! the later passes work on: a source directory ([`dir`]) or a tar archive.

pub(crate) mod dir;
pub(crate) mod tar;
