//! Which shard of a sharded instrument ([`super::Histogram`], [`super::Gauge`]) the
//! current thread records into: proxy worker `i` enters shard `i` when it starts
//! ([`enter`]); every other thread (the admin and refresher runtime, tests) records into
//! shard 0. A thread-local `Cell` read: no lock, no allocation, no system call.

use std::cell::Cell;

/// Most shards an instrument has: beyond this many workers, workers share shards (still
/// correct — the adds are atomic — only no longer alone on their cache lines).
pub const MAX_SHARDS: usize = 64;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Makes the current thread record into shard `index` (modulo an instrument's shards).
pub fn enter(index: usize) {
    SHARD.with(|s| s.set(index));
}

/// The current thread's shard index.
#[inline]
pub fn current() -> usize {
    SHARD.with(Cell::get)
}

/// Shards of a request-path instrument: one per core (the proxy runs one worker per core
/// by default), at most [`MAX_SHARDS`].
pub fn count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_SHARDS)
    })
}
