//! A small `log` backend for the mount daemon: stderr while in the foreground; a
//! file (`log=FILE`), syslog (`/dev/log`) or nothing once detached.
//!
//! # Contract
//!
//! * Every record is one whole line: line breaks and other control characters in a
//!   message are shown escaped (`\n`), and the line goes out in a single write(2) (a
//!   single datagram to syslog). Daemons sharing one `log=FILE` (opened `O_APPEND`)
//!   therefore never interleave parts of lines.
//! * Warnings and errors are rate-limited per call site: at most [`BURST`] in a
//!   second; the rest of that second is counted and reported in one line ("suppressed
//!   K similar messages") with the site's next record after it, so a flood (a client
//!   repeating a failing request) cannot fill the disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where log lines go.
#[derive(Debug)]
pub enum Target {
    /// Standard error.
    Stderr,
    /// An append-only file.
    File(File),
    /// The local syslog socket.
    Syslog(UnixDatagram),
    /// Nowhere.
    Null,
}

static TARGET: Mutex<Target> = Mutex::new(Target::Stderr);

/// Warnings and errors one call site may log in a [`WINDOW`].
pub(crate) const BURST: u32 = 10;
/// The rate limit's window.
const WINDOW: Duration = Duration::from_secs(1);

/// Per call site: the current window's start, records let through in it, records
/// suppressed since the last report.
#[derive(Debug, Default)]
pub(crate) struct RateLimit {
    sites: HashMap<String, (Option<Instant>, u32, u64)>,
}

impl RateLimit {
    /// Whether a record of `site` at `now` may be logged, and how many of the site's
    /// records were suppressed before it (to report first).
    pub(crate) fn admit(&mut self, site: &str, now: Instant) -> (bool, u64) {
        if !self.sites.contains_key(site) {
            // Bounded: a site is a place in the code.
            self.sites.insert(site.to_string(), (None, 0, 0));
        }
        let entry = self.sites.get_mut(site).expect("just inserted");
        let (start, count, suppressed) = entry;
        if start.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            *start = Some(now);
            *count = 0;
        }
        if *count < BURST {
            *count += 1;
            (true, std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            (false, 0)
        }
    }
}

static LIMIT: Mutex<Option<RateLimit>> = Mutex::new(None);

/// `s` with line breaks and other control characters escaped, so it stays on one
/// line.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push(' '),
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    out
}

struct Logger;

static LOGGER: Logger = Logger;

fn ours(target: &str) -> bool {
    target.starts_with("ishare")
}

impl log::Log for Logger {
    fn enabled(&self, md: &log::Metadata) -> bool {
        // fuser's own messages only from warnings up; ours from info (debug with
        // ISHARE_LOG=debug, which sets the max level).
        ours(md.target()) || md.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut suppressed = 0;
        if record.level() <= log::Level::Warn {
            let site = format!(
                "{}:{}",
                record.file().unwrap_or(record.target()),
                record.line().unwrap_or(0)
            );
            let mut limit = LIMIT.lock().unwrap_or_else(|e| e.into_inner());
            let (pass, before) = limit
                .get_or_insert_with(RateLimit::default)
                .admit(&site, Instant::now());
            if !pass {
                return;
            }
            suppressed = before;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let mut msg = one_line(&record.args().to_string());
        if suppressed > 0 {
            msg = format!("(suppressed {suppressed} similar messages before this one) {msg}");
        }
        let mut t = TARGET.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *t {
            Target::Stderr => {
                let line = format!("ishare: {level}: {msg}\n");
                // One write(2): stderr is unbuffered, and writeln! would write in pieces.
                let _ = std::io::stderr().write(line.as_bytes());
            }
            Target::File(f) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let line = format!(
                    "{}.{:03} ishare[{}]: {level}: {msg}\n",
                    now.as_secs(),
                    now.subsec_millis(),
                    std::process::id(),
                );
                // One write(2) of the whole line; with O_APPEND the kernel places it
                // atomically at the end of the file.
                let _ = f.write(line.as_bytes());
            }
            Target::Syslog(s) => {
                // RFC 3164 without timestamp (syslog adds it); facility daemon (3).
                let pri = 3 * 8
                    + match record.level() {
                        log::Level::Error => 3,
                        log::Level::Warn => 4,
                        log::Level::Info => 6,
                        _ => 7,
                    };
                let msg = format!("<{pri}>ishare[{}]: {level}: {msg}", std::process::id());
                let _ = s.send(msg.as_bytes());
            }
            Target::Null => {}
        }
    }

    fn flush(&self) {}
}

/// Installs the logger (idempotent).
pub fn init() {
    let level = match std::env::var("ISHARE_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        Ok("warn") => log::LevelFilter::Warn,
        _ => log::LevelFilter::Info,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Switches the destination.
pub fn set_target(t: Target) {
    *TARGET.lock().unwrap_or_else(|e| e.into_inner()) = t;
}

/// The destination of a detached daemon: `log` if given, else syslog if present,
/// else nothing.
pub fn detached_target(log: Option<&Path>) -> std::io::Result<Target> {
    if let Some(p) = log {
        return Ok(Target::File(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ));
    }
    let sock = UnixDatagram::unbound()?;
    Ok(match sock.connect("/dev/log") {
        Ok(()) => Target::Syslog(sock),
        Err(_) => Target::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_on_one_line() {
        assert_eq!(
            one_line("ioctl(ino: INodeNo(\n    1,\n), x)\r\u{1b}"),
            "ioctl(ino: INodeNo(\\n    1,\\n), x)\\r\\u{1b}"
        );
        assert_eq!(one_line("plain é"), "plain é");
    }

    #[test]
    fn a_site_logs_a_burst_per_second_then_reports_the_rest() {
        let mut r = RateLimit::default();
        let t0 = Instant::now();
        let passed = (0..1000)
            .filter(|i| r.admit("a.rs:1", t0 + Duration::from_micros(*i)).0)
            .count();
        assert_eq!(passed, BURST as usize);
        // Another site is not affected.
        assert_eq!(r.admit("b.rs:2", t0), (true, 0));
        // The next window lets records through again, the first reporting the rest.
        assert_eq!(
            r.admit("a.rs:1", t0 + WINDOW),
            (true, 1000 - u64::from(BURST))
        );
        assert_eq!(r.admit("a.rs:1", t0 + WINDOW), (true, 0));
    }
}
