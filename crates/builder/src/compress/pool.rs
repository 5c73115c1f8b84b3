//! Encoders for the workers: one per worker thread and codec, created on first use
//! and kept for the whole pass (creating a compressor context costs more than
//! compressing a small file).

use std::sync::Mutex;

use super::codec::Encoder;
use super::config::Compression;
use crate::error::Result;

/// One encoder per worker thread and algorithm, created on first use.
pub(crate) struct EncoderPool<'a> {
    cfg: &'a Compression,
    threads: usize,
    /// Slot `thread * codecs + codec`; the last thread slot is for callers outside
    /// the worker pool.
    encoders: Vec<Mutex<Option<Encoder>>>,
}

impl<'a> EncoderPool<'a> {
    pub(crate) fn new(cfg: &'a Compression) -> Self {
        let threads = rayon::current_num_threads();
        let mut encoders = Vec::new();
        encoders.resize_with((threads + 1) * cfg.algorithms.len(), || Mutex::new(None));
        EncoderPool {
            cfg,
            threads,
            encoders,
        }
    }

    /// Runs `f` with this thread's encoder for algorithm `alg`.
    pub(crate) fn with<T>(
        &self,
        alg: usize,
        f: impl FnOnce(&mut Encoder) -> Result<T>,
    ) -> Result<T> {
        let thread = rayon::current_thread_index().unwrap_or(self.threads);
        let slot = thread * self.cfg.algorithms.len() + alg;
        let mut guard = self.encoders[slot].lock().expect("encoder lock");
        if guard.is_none() {
            *guard = Some(Encoder::new(
                &self.cfg.algorithms[alg],
                self.cfg.max_pcluster(),
            )?);
        }
        f(guard.as_mut().expect("encoder"))
    }
}
