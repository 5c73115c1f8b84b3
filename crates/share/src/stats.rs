//! Counters of one mount's sharing, kept by the sharing decisions and the publisher
//! (for the log and tests).

use std::sync::atomic::AtomicU64;

/// Counters for the log and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Files served from a shared object.
    pub shared: AtomicU64,
    /// Objects this process published.
    pub published: AtomicU64,
    /// Bytes this process wrote into published objects.
    pub published_bytes: AtomicU64,
    /// Files refused because their content does not match their fingerprint.
    pub mismatches: AtomicU64,
}
