//! A small `log` backend for the mount daemon: stderr while in the foreground; a
//! file (`log=FILE`), syslog (`/dev/log`) or nothing once detached.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;

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
        // fuser tries to unmount again after the session ended by an unmount.
        if record.target().starts_with("fuser")
            && record
                .args()
                .to_string()
                .starts_with("Failed to umount filesystem")
        {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let mut t = TARGET.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *t {
            Target::Stderr => {
                let _ = writeln!(std::io::stderr(), "ishare: {level}: {}", record.args());
            }
            Target::File(f) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let _ = writeln!(
                    f,
                    "{}.{:03} ishare[{}]: {level}: {}",
                    now.as_secs(),
                    now.subsec_millis(),
                    std::process::id(),
                    record.args()
                );
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
                let msg = format!(
                    "<{pri}>ishare[{}]: {level}: {}",
                    std::process::id(),
                    record.args()
                );
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
