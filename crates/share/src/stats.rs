//! Counters of one [`crate::sharing::Sharing`] (one mount today; several mounts may
//! share one later, so nothing here assumes one mount per process), kept by the
//! sharing decisions and the publisher (for the log and tests).

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Files (and objects) whose content was hashed to verify it.
    pub hashed: AtomicU64,
    /// Files taken as verified because the domain's record says so (not hashed).
    pub recorded: AtomicU64,
    /// Objects found damaged (content no longer matching their fingerprint).
    pub damaged: AtomicU64,
}

impl Stats {
    /// One line on verification, for the log when sharing ends.
    pub fn verification_summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = format!(
            "{} files hashed for verification, {} verified by the record",
            get(&self.hashed),
            get(&self.recorded)
        );
        if get(&self.damaged) > 0 {
            s += &format!(", {} damaged objects found", get(&self.damaged));
        }
        s
    }
}
