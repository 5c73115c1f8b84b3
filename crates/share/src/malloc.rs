//! glibc malloc tuning for the daemons (FFI: with `kernel::loopdev`'s ioctls, the crate's
//! only `unsafe`).
//!
//! fuser gives every FUSE worker thread a 16 MiB request buffer (`vec![0; 16 MiB +
//! 4 KiB]`), of which a read-only filesystem's requests touch a page or two. glibc
//! serves such an allocation with a fresh `mmap`, zero-filled by the kernel on touch,
//! only while it is above the dynamic mmap threshold. Freeing the first buffer (the
//! one of the INIT handshake) raises that threshold past 16 MiB, so every later
//! worker's buffer comes from a malloc arena, which `calloc` must clear by writing all
//! 16 MiB: measured, 21 MiB of resident memory per mount of the node daemon (2.1 GiB
//! at 100 mounts) and most of the 31 MiB of a mount daemon of its own. A fixed
//! threshold (which also turns the dynamic one off) keeps those buffers untouched:
//! 0.45 MiB per mount.
//!
//! glibc also gives threads arenas of their own, up to 8 per core; a node daemon runs
//! dozens of threads (FUSE workers, checkers, the publisher), and what one thread
//! freed in its arena stays there for that arena's next allocations only. Two arenas
//! are plenty for requests that are mostly answered from caches on a few cores.

/// Allocations at least this large are mmap'ed (glibc's initial default).
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Most malloc arenas.
const ARENA_MAX: i32 = 2;

/// Fixes glibc's mmap threshold and caps its arenas (see the module's header); nothing
/// on other C libraries. Called before the daemon's threads start (arenas made before
/// stay).
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets an allocator parameter; any value is valid to pass.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}

/// Gives the memory malloc holds free back to the system (glibc; nothing elsewhere).
/// After a burst of work on threads of its own (the preparation ahead of a mount's
/// files), the arenas keep what that work freed (measured together with ending the
/// preparation's threads: 0.7 MiB less daemon PSS with ten family images).
pub(crate) fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only releases free memory of the allocator; any pad is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}
