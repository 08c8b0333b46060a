//! [`Gauge`]: a count of open things (app connections, upstream connections), raised and
//! lowered by an RAII [`Open`] guard. Sharded like [`super::Histogram`]: the guard adds
//! to and later subtracts from the shard of the thread that opened it, so proxy workers
//! never contend for a cache line; a scrape sums the shards.

use super::shard;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

/// One shard's value, alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Shard(AtomicI64);

/// A sharded gauge of open things; see the module doc.
pub struct Gauge {
    shards: Box<[Shard]>,
}

impl Default for Gauge {
    fn default() -> Gauge {
        Gauge {
            shards: (0..shard::count()).map(|_| Shard::default()).collect(),
        }
    }
}

impl Gauge {
    /// Counts one more open thing until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> Open {
        let shard = shard::current() % self.shards.len();
        self.shards[shard].0.fetch_add(1, Relaxed);
        Open {
            gauge: Arc::clone(self),
            shard,
        }
    }

    /// The open things now (the sum of the shards).
    pub fn get(&self) -> i64 {
        self.shards.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

/// One open thing: counted from [`Gauge::open`] until dropped.
pub struct Open {
    gauge: Arc<Gauge>,
    shard: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.shards[self.shard].0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_counts_until_dropped_even_on_another_thread() {
        let gauge = Arc::new(Gauge::default());
        let a = gauge.open();
        let b = gauge.open();
        assert_eq!(gauge.get(), 2);
        drop(a);
        assert_eq!(gauge.get(), 1);
        std::thread::spawn(move || drop(b)).join().unwrap();
        assert_eq!(gauge.get(), 0);
    }
}
