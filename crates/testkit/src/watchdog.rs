//! Bounded runs of code that may panic or hang, for the tests that throw corrupted input
//! at the reader: a watchdog thread and the message of a caught panic.
//!
//! Contract: [`watchdog`] returns what the work returns, or fails the test when the work
//! makes no progress (no beat and no result) for the timeout, naming the last step it
//! began, or when its thread dies (a panic outside the work's own `catch_unwind`).

use std::any::Any;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// The text of a panic payload caught by `catch_unwind` (empty if it is not a string).
pub fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Outcome counts of a run of checks of corrupted input, for its summary and assertions.
#[derive(Debug, Default)]
pub struct Tally {
    pub iterations: u64,
    /// Checks that passed.
    pub ok: u64,
    /// Checks that failed as corruption (or truncation).
    pub corrupt: u64,
    /// Checks that failed as unsupported.
    pub unsupported: u64,
    /// Checks that failed otherwise.
    pub other: u64,
    /// The largest single allocation of one check, and the input size it was for.
    pub largest_alloc: (usize, usize),
    /// What panicked.
    pub panics: Vec<String>,
    /// Wrong results: data that passed a check it should fail, odd errors.
    pub wrong: Vec<String>,
}

enum Msg<T> {
    Step(String),
    Done(T),
}

/// Runs `work` on its own thread; `work` calls `beat(label)` as it begins each step. `what`
/// names the work in the failure messages.
pub fn watchdog<T, F>(what: &str, timeout: Duration, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&dyn Fn(String)) -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Msg<T>>();
    std::thread::spawn(move || {
        let beat = |label: String| {
            // The watchdog is gone only once it failed the test.
            let _ = tx.send(Msg::Step(label));
        };
        let result = work(&beat);
        let _ = tx.send(Msg::Done(result));
    });
    let mut last = None;
    loop {
        match rx.recv_timeout(timeout) {
            Ok(Msg::Step(label)) => last = Some(label),
            Ok(Msg::Done(result)) => return result,
            Err(RecvTimeoutError::Timeout) => {
                panic!("{what} hangs (no progress in {timeout:?}); last step: {last:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the thread of {what} died after step {last:?}")
            }
        }
    }
}
