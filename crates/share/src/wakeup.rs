//! Where the kernel wakes a mount's FUSE thread, and so whether that thread should spin
//! (`spin=auto`).
//!
//! A warm open through FUSE is one round trip: the request wakes the FUSE thread, the
//! answer wakes the process that opened. On a virtual machine whose idle CPUs halt (this
//! project's 2-vCPU machine halts at once), each wake-up of a thread on another CPU
//! costs ~10 µs, most of what an open costs us (the kernel's own open and close: 1.1 µs).
//! Two ways around it:
//!
//! * the FUSE thread spins a little after each answer (`spin=MICROSECONDS`; the vendored
//!   fuser's `Spin`): the next request needs no wake-up, the answer still wakes the
//!   reader's CPU;
//! * the kernel wakes the FUSE thread on the CPU of the process that asked. The thread
//!   then runs there while the reader waits, and the answer's wake-up is local too: no
//!   CPU is woken at all. Some kernels offer this as the `fuse` module parameter
//!   `wake_here` (this project's machine has it; mainline Linux does not, as of 7.2:
//!   there it would be the scheduler's "wake up on the current CPU", which seccomp's user
//!   notifications use for the same round trip). With it on, spinning only gets in the
//!   way: a spinning thread waits on no queue, so the request cannot pull it to the
//!   reader's CPU, and the CPU it spins on is taken from readers. Measured on that
//!   machine, one open and close of a minbase mount: 61 µs with neither, 20 µs
//!   spinning, 8.6 µs with `wake_here` and no spinning (9.0 spinning); reading three
//!   family images: 1.5 s with `wake_here` alone, 1.77 s spinning as well (kernel 0.95 s).
//!
//! The parameter is the host's to set (it changes every FUSE file system of the host):
//! `dist/systemd/ishare.service` turns it on where the kernel has it (`ExecStartPre=`),
//! `ishare doctor` reports it (`fuse_wakeup`). The threads also run under `SCHED_BATCH`
//! (`crate::mount`), so that a request nobody waits for (RELEASE) does not preempt the
//! reader on its CPU.

use std::path::Path;

use crate::options::DEFAULT_SPIN_US;

/// The parameter of the kernel's `fuse` module (built in or loaded).
pub const WAKE_HERE_PARAM: &str = "/sys/module/fuse/parameters/wake_here";

/// Whether the kernel wakes FUSE threads on the CPU of the process that asked: `None`
/// when it has no such parameter (or it cannot be read).
pub fn wakes_on_requesting_cpu() -> Option<bool> {
    read_param(Path::new(WAKE_HERE_PARAM))
}

/// The spin of `spin=auto`: none where the kernel wakes FUSE threads on the reader's
/// CPU, else [`DEFAULT_SPIN_US`].
pub fn auto_spin_us() -> u32 {
    spin_for(wakes_on_requesting_cpu())
}

fn spin_for(wake_here: Option<bool>) -> u32 {
    if wake_here == Some(true) {
        0
    } else {
        DEFAULT_SPIN_US
    }
}

/// A boolean module parameter as sysfs shows it (`Y`/`N`, or `1`/`0` for some).
fn read_param(path: &Path) -> Option<bool> {
    parse_bool_param(&std::fs::read_to_string(path).ok()?)
}

fn parse_bool_param(s: &str) -> Option<bool> {
    match s.trim() {
        "Y" | "y" | "1" => Some(true),
        "N" | "n" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_values_as_sysfs_shows_them() {
        assert_eq!(parse_bool_param("Y\n"), Some(true));
        assert_eq!(parse_bool_param("N\n"), Some(false));
        assert_eq!(parse_bool_param("1"), Some(true));
        assert_eq!(parse_bool_param("0\n"), Some(false));
        assert_eq!(parse_bool_param(""), None);
        assert_eq!(parse_bool_param("maybe"), None);
        assert_eq!(read_param(Path::new("/nonexistent/wake_here")), None);
    }

    #[test]
    fn threads_spin_only_where_the_kernel_wakes_them_elsewhere() {
        assert_eq!(spin_for(Some(true)), 0);
        assert_eq!(spin_for(Some(false)), DEFAULT_SPIN_US);
        assert_eq!(spin_for(None), DEFAULT_SPIN_US);
    }
}
