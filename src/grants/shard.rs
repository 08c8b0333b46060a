//! One shard of a per-user connection's grants in memory: a hash table of the grants,
//! found by subject (the grant holds its subject: no key of its own), and the line in which
//! eviction considers them — second chance (CLOCK): the oldest first, passing over, once,
//! those used since eviction last passed them. A hit only sets the grant's `used` flag; no
//! list is reordered on the request path. About 20 bytes a grant besides the grant.

use super::Grant;
use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Default)]
pub(super) struct Shard {
    table: HashTable<Arc<Grant>>,
    /// The grants in eviction order, oldest first. A grant forgotten since keeps its place
    /// until eviction reaches it or the line is compacted ([`Shard::remove`]).
    line: VecDeque<Arc<Grant>>,
}

impl Shard {
    /// The grant of `subject`, whose hash is `hash`.
    pub fn find(&self, hash: u64, subject: &str) -> Option<&Arc<Grant>> {
        self.table.find(hash, |g| *g.subject == *subject)
    }

    /// Adds `grant` (whose subject is not held), at the end of the line.
    pub fn insert(&mut self, hash: u64, grant: Arc<Grant>, hasher: &DefaultHashBuilder) {
        self.line.push_back(Arc::clone(&grant));
        self.table
            .insert_unique(hash, grant, |g| hasher.hash_one(&*g.subject));
    }

    /// Removes the grant of `subject`; whether there was one.
    pub fn remove(&mut self, hash: u64, subject: &str, hasher: &DefaultHashBuilder) -> bool {
        let Ok(held) = self.table.find_entry(hash, |g| *g.subject == *subject) else {
            return false;
        };
        held.remove();
        // Subjects looked up and forgotten (never authorized) would grow the line without
        // end while nothing is evicted: drop the forgotten once they are half of it.
        if self.line.len() > 2 * self.table.len() + 16 {
            let table = &self.table;
            self.line.retain(|g| holds(table, g, hasher));
        }
        true
    }

    /// Evicts one grant, if it holds one it may: the oldest not used since eviction last
    /// passed it and not [`pinned`]; each used one passed is unmarked and goes to the end
    /// of the line, so this ends within two rounds of the line (none evicted when every
    /// grant is pinned: the count then exceeds the size until they are not).
    pub fn evict_one(&mut self, hasher: &DefaultHashBuilder) -> bool {
        let mut rounds = 2 * self.line.len();
        while let Some(oldest) = self.line.pop_front() {
            if rounds == 0 {
                self.line.push_front(oldest);
                return false;
            }
            rounds -= 1;
            let hash = hasher.hash_one(&*oldest.subject);
            let Entry::Occupied(held) = self.table.entry(
                hash,
                |g| Arc::ptr_eq(g, &oldest),
                |g| hasher.hash_one(&*g.subject),
            ) else {
                continue; // forgotten: its place goes too
            };
            if pinned(&oldest) || oldest.used.swap(false, Ordering::Relaxed) {
                self.line.push_back(oldest);
            } else {
                held.remove();
                return true;
            }
        }
        false
    }

    /// Every grant held.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Grant>> {
        self.table.iter()
    }
}

/// Whether `grant` must stay in memory: a renewal is queued or running, a writer holds
/// it (a second object for the same subject would have a lock of its own: two refreshes
/// of one refresh token, or a deletion written over), or it holds a set the store could
/// not take (a rotated refresh token that exists nowhere else: ready, with an error).
fn pinned(grant: &Grant) -> bool {
    grant.renewing.load(Ordering::Acquire)
        || grant.tokens.write_lock.try_lock().is_err()
        || (grant.tokens.token().is_some() && grant.tokens.status().last_error.is_some())
}

/// Whether `table` holds `grant` itself (not merely one of the same subject).
fn holds(table: &HashTable<Arc<Grant>>, grant: &Arc<Grant>, hasher: &DefaultHashBuilder) -> bool {
    let hash = hasher.hash_one(&*grant.subject);
    table.find(hash, |g| Arc::ptr_eq(g, grant)).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_looked_up_and_forgotten_do_not_grow_the_line() {
        let (mut shard, hasher) = (Shard::default(), DefaultHashBuilder::default());
        let counters = Arc::default();
        let signals = Arc::default();
        let kept = Arc::new(Grant::new("kept", &counters, &signals));
        shard.insert(hasher.hash_one("kept"), kept, &hasher);
        for i in 0..10_000 {
            let subject = format!("unknown-{i}");
            let hash = hasher.hash_one(subject.as_str());
            let grant = Arc::new(Grant::new(&subject, &counters, &signals));
            shard.insert(hash, grant, &hasher);
            assert!(shard.remove(hash, &subject, &hasher));
        }
        assert!(shard.line.len() <= 2 + 16, "{}", shard.line.len());
        assert!(shard.find(hasher.hash_one("kept"), "kept").is_some());
        // Eviction skips the forgotten and takes the one held.
        assert!(shard.evict_one(&hasher));
        assert_eq!(shard.iter().count(), 0);
        assert!(!shard.evict_one(&hasher));
    }

    #[test]
    fn a_grant_being_renewed_or_written_is_not_evicted() {
        let (mut shard, hasher) = (Shard::default(), DefaultHashBuilder::default());
        let (counters, signals) = (Arc::default(), Arc::default());
        let grant = |s: &str| Arc::new(Grant::new(s, &counters, &signals));
        let (renewing, written) = (grant("renewing"), grant("written"));
        renewing.renewing.store(true, Ordering::Release);
        let _writer = written.tokens.write_lock.try_lock().unwrap();
        for g in [&renewing, &written] {
            shard.insert(hasher.hash_one(&*g.subject), Arc::clone(g), &hasher);
        }
        assert!(!shard.evict_one(&hasher), "both are pinned");
        assert_eq!(shard.iter().count(), 2);
        let idle = grant("idle");
        shard.insert(hasher.hash_one("idle"), idle, &hasher);
        assert!(shard.evict_one(&hasher));
        assert!(shard.find(hasher.hash_one("idle"), "idle").is_none());
        assert_eq!(shard.iter().count(), 2);
    }
}
