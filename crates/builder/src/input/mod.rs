//! The inputs a build reads, each turned into the one [`Tree`](crate::tree::Tree)
//! the later passes work on: a source directory ([`dir`]), a tar archive, or the
//! layers of an OCI image ([`oci`] finds them, the tar input applies them).

pub(crate) mod dir;
pub(crate) mod oci;
pub(crate) mod tar;
