//! Page cache measurement for the sharing tests: the page cache charged to a memory
//! cgroup holding the test process (so other processes on the machine, a compiler
//! say, do not count), and reading a file by read(2), mmap or sendfile with the
//! `memtool` helper (built once per test process from `vm/memtool.c`).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::tools::run;

pub fn memtool() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ishare-memtool-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("memtool");
        let src = crate::vm::memtool_source();
        run(Command::new("cc").args(["-O2", "-o"]).arg(&out).arg(&src));
        out
    })
}

/// A memory cgroup holding this test process, so every daemon and reader it starts is
/// charged there and other processes on the machine do not disturb the measurement:
/// (memory.stat file, the key of page cache bytes in it).
fn meter() -> &'static Option<(PathBuf, &'static str)> {
    static METER: OnceLock<Option<(PathBuf, &'static str)>> = OnceLock::new();
    METER.get_or_init(|| {
        let cg = fs::read_to_string("/proc/self/cgroup").ok()?;
        let unified = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let (base, rel, key) = if fs::read_to_string(unified).is_ok_and(|c| c.contains("memory")) {
            let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
            (PathBuf::from("/sys/fs/cgroup"), rel.to_string(), "file")
        } else {
            let rel = cg.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                f.next()?;
                let ctrl = f.next()?;
                ctrl.split(',').any(|c| c == "memory").then(|| f.next())?
            })?;
            (
                PathBuf::from("/sys/fs/cgroup/memory"),
                rel.to_string(),
                "cache",
            )
        };
        let parent = base.join(rel.trim_start_matches('/'));
        // Leftovers of earlier runs.
        for e in fs::read_dir(&parent).ok()?.flatten() {
            if e.file_name().as_bytes().starts_with(b"ishare-test-") {
                let _ = fs::remove_dir(e.path());
            }
        }
        let dir = parent.join(format!("ishare-test-{}", std::process::id()));
        fs::create_dir(&dir).ok()?;
        fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).ok()?;
        eprintln!("measuring page cache charged to {}", dir.display());
        Some((dir.join("memory.stat"), key))
    })
}

/// Page cache in KiB: charged to our cgroup (see [`meter`]), else `Cached:` of the machine.
pub fn cached_kib() -> i64 {
    if let Some((stat, key)) = meter() {
        let s = fs::read_to_string(stat).unwrap();
        let bytes: i64 = s
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {}", stat.display()));
        return bytes / 1024;
    }
    let m = fs::read_to_string("/proc/meminfo").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("Cached:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("Cached: in /proc/meminfo")
}

/// Bytes of `path` in the page cache, by util-linux's fincore.
pub fn resident_bytes(path: &Path) -> u64 {
    let out = run(Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("fincore {}: {out:?}", path.display()))
}

pub fn drop_caches() {
    rustix::fs::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

/// Reads `file` (of `size` bytes) through `how` (`read`, `mmap`, `sendfile`) with
/// memtool; returns the growth of the page cache in KiB.
pub fn grow(how: &str, file: &Path, size: u64) -> i64 {
    let before = cached_kib();
    let out = run(Command::new(memtool()).arg(how).arg(file));
    let after = cached_kib();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(" {size}")),
        "memtool {how} {} did not read {size} bytes: {text}",
        file.display()
    );
    after - before
}
