//! [`Histogram`]: a duration histogram that the request path records into without a lock
//! or an allocation. It is sharded: each proxy worker thread records into its own
//! cache-line-aligned shard ([`super::shard`]) of relaxed `AtomicU64` bucket counts and a
//! sum, so workers never contend for a line; a scrape sums the shards ([`Snapshot`]).
//! prometheus-client's own histogram takes a lock per observation, hence this one.
//!
//! The shards are allocated at the first observation, not before: a connection has eight
//! histograms of 128 bytes a core, and most of 10,000 runtime connections may never see a
//! request (on 16 cores, eagerly, 160 MB).

use super::shard;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of every duration histogram's buckets, in nanoseconds (`+Inf` follows):
/// 0.5 ms to 10 s, about 2.5× apart — a proxied request, a TCP or TLS connect and a token
/// request all fall inside. Fourteen bounds make a shard's fifteen buckets and its sum two
/// cache lines exactly.
pub const BOUNDS_NANOS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets of a histogram: one per bound, and `+Inf`.
pub const BUCKETS: usize = BOUNDS_NANOS.len() + 1;

/// Nanoseconds in a second (for the exposition, which is in seconds).
const NANOS_PER_SECOND: f64 = 1e9;

/// One worker's counts, alone on its cache lines (128 bytes: two lines, as adjacent-line
/// prefetchers pair them).
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    /// Observations per bucket (not cumulative); their total is the count.
    buckets: [AtomicU64; BUCKETS],
    /// Sum of the observations, in nanoseconds (wraps after 584 years of total time).
    sum_nanos: AtomicU64,
}

/// A sharded duration histogram; see the module doc.
pub struct Histogram {
    /// Allocated at the first observation.
    shards: std::sync::OnceLock<Box<[Shard]>>,
    /// How many shards it has once allocated (at least one).
    count: usize,
}

impl Default for Histogram {
    /// One shard per worker thread the machine runs ([`shard::count`]).
    fn default() -> Histogram {
        Histogram::with_shards(shard::count())
    }
}

impl Histogram {
    /// A histogram of `shards` shards (at least one); a thread records into shard
    /// [`shard::current`] modulo their number.
    pub fn with_shards(shards: usize) -> Histogram {
        Histogram {
            shards: std::sync::OnceLock::new(),
            count: shards.max(1),
        }
    }

    /// Records one observation: two relaxed atomic adds on this thread's shard (the first
    /// observation allocates the shards).
    #[inline]
    pub fn record(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let shards = self
            .shards
            .get_or_init(|| (0..self.count).map(|_| Shard::default()).collect());
        let shard = &shards[shard::current() % shards.len()];
        // The first bucket whose bound is ≥ the value (`le` is inclusive).
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        shard.buckets[bucket].fetch_add(1, Relaxed);
        shard.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// The counts summed over the shards (each shard read once, relaxed: a scrape that
    /// races a recording may see its bucket and not yet its sum).
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for shard in self.shards.get().into_iter().flat_map(|s| s.iter()) {
            for (total, bucket) in snapshot.buckets.iter_mut().zip(&shard.buckets) {
                *total += bucket.load(Relaxed);
            }
            snapshot.sum_nanos = snapshot
                .sum_nanos
                .wrapping_add(shard.sum_nanos.load(Relaxed));
        }
        snapshot
    }
}

/// A histogram's counts at one scrape.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Observations per bucket, not cumulative (the last is `+Inf`).
    pub buckets: [u64; BUCKETS],
    pub sum_nanos: u64,
}

impl Snapshot {
    /// Adds `other`'s observations (a series summed over several connections).
    pub fn add(&mut self, other: &Snapshot) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_nanos += other.sum_nanos;
    }

    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / NANOS_PER_SECOND
    }

    /// `(upper bound in seconds, non-cumulative count)` per bucket, the last `+Inf`: what
    /// `MetricEncoder::encode_histogram` takes (it makes them cumulative).
    pub fn buckets_in_seconds(&self) -> [(f64, u64); BUCKETS] {
        let mut out = [(f64::INFINITY, 0); BUCKETS];
        for (i, (slot, count)) in out.iter_mut().zip(self.buckets).enumerate() {
            if let Some(bound) = BOUNDS_NANOS.get(i) {
                slot.0 = *bound as f64 / NANOS_PER_SECOND;
            }
            slot.1 = count;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_value_lands_in_the_first_bucket_whose_bound_is_not_below_it() {
        let h = Histogram::with_shards(1);
        for nanos in [0, MS / 2, MS / 2 + 1, MS, 10_000 * MS, 10_000 * MS + 1] {
            h.record(Duration::from_nanos(nanos));
        }
        let s = h.snapshot();
        // 0 and exactly 0.5 ms: le="0.0005"; just above it and 1 ms: le="0.001".
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[1], 2);
        // exactly 10 s: the last bound; above it: +Inf.
        assert_eq!(s.buckets[BUCKETS - 2], 1);
        assert_eq!(s.buckets[BUCKETS - 1], 1);
        assert_eq!(s.count(), 6);
        assert_eq!(
            s.sum_nanos,
            MS / 2 + MS / 2 + 1 + MS + 10_000 * MS + 10_000 * MS + 1
        );
    }

    #[test]
    fn the_bounds_are_in_seconds_and_the_last_is_infinite() {
        let h = Histogram::with_shards(1);
        h.record(Duration::from_millis(3));
        let b = h.snapshot().buckets_in_seconds();
        assert_eq!(b[0], (0.0005, 0));
        assert_eq!(b[3], (0.005, 1), "3 ms is above 2.5 ms and not above 5 ms");
        assert_eq!(b[BUCKETS - 2].0, 10.0);
        assert_eq!(b[BUCKETS - 1], (f64::INFINITY, 0));
        assert!(BOUNDS_NANOS.windows(2).all(|w| w[0] < w[1]), "ascending");
    }

    #[test]
    fn shards_are_allocated_at_the_first_observation() {
        let h = Histogram::with_shards(4);
        assert!(h.shards.get().is_none());
        assert_eq!(
            h.snapshot(),
            Snapshot::default(),
            "an unused one reads as empty"
        );
        h.record(Duration::from_millis(1));
        assert_eq!(h.shards.get().map(|s| s.len()), Some(4));
        assert_eq!(h.snapshot().count(), 1);
    }

    #[test]
    fn a_snapshot_sums_every_shard() {
        let h = Histogram::with_shards(4);
        std::thread::scope(|scope| {
            for worker in 0..4 {
                let h = &h;
                scope.spawn(move || {
                    shard::enter(worker);
                    for _ in 0..=worker {
                        h.record(Duration::from_millis(7));
                    }
                });
            }
        });
        // Each shard holds its own worker's observations …
        for (worker, shard) in h.shards.get().unwrap().iter().enumerate() {
            assert_eq!(shard.buckets[4].load(Relaxed), worker as u64 + 1);
        }
        // … and the snapshot is their total: 1 + 2 + 3 + 4.
        let s = h.snapshot();
        assert_eq!(s.count(), 10);
        assert_eq!(s.buckets[4], 10, "7 ms: le=\"0.01\"");
        assert_eq!(s.sum_nanos, 10 * 7 * MS);
        assert!((s.sum_seconds() - 0.07).abs() < 1e-12);
    }

    #[test]
    fn workers_beyond_the_shards_share_one_and_lose_nothing() {
        let h = Histogram::with_shards(2);
        std::thread::scope(|scope| {
            for worker in 0..5 {
                let h = &h;
                scope.spawn(move || {
                    shard::enter(worker);
                    for _ in 0..1000 {
                        h.record(Duration::from_micros(100));
                    }
                });
            }
        });
        assert_eq!(h.snapshot().buckets[0], 5000);
    }

    #[test]
    fn a_shard_has_cache_lines_of_its_own() {
        assert_eq!(std::mem::align_of::<Shard>(), 128);
        assert_eq!(std::mem::size_of::<Shard>(), 128);
    }
}
