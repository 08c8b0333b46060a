//! [`MemoryStore`]: a [`TokenStore`] kept in a map, for tests. Nothing is durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::{DefinitionBytes, GrantCounts, GrantListing, StoreError, StoredToken, TokenStore};

/// In-memory implementation for tests (no durability).
#[derive(Debug, Default)]
pub struct MemoryStore {
    tokens: Mutex<HashMap<String, StoredToken>>,
    definitions: Mutex<HashMap<String, Vec<u8>>>,
    /// Per-user grants by (connection, subject).
    grants: Mutex<BTreeMap<(String, String), StoredToken>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store pre-filled with `tokens`, as if they had been saved by an earlier run.
    pub fn with_tokens(tokens: HashMap<String, StoredToken>) -> Self {
        MemoryStore {
            tokens: Mutex::new(tokens),
            definitions: Mutex::default(),
            grants: Mutex::default(),
        }
    }

    /// The map, even if a panicking test thread poisoned the lock (every update is a single
    /// map operation, so the map is always consistent).
    fn tokens(&self) -> MutexGuard<'_, HashMap<String, StoredToken>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The per-user grants, as [`MemoryStore::tokens`].
    fn grants(&self) -> MutexGuard<'_, BTreeMap<(String, String), StoredToken>> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TokenStore for MemoryStore {
    fn load_all(&self) -> Result<HashMap<String, StoredToken>, StoreError> {
        Ok(self.tokens().clone())
    }

    fn put(&self, connection: &str, token: &StoredToken) -> Result<(), StoreError> {
        self.tokens().insert(connection.to_owned(), token.clone());
        Ok(())
    }

    fn remove(&self, connection: &str) -> Result<(), StoreError> {
        self.tokens().remove(connection);
        Ok(())
    }

    fn load_definitions(&self) -> Result<Vec<(String, DefinitionBytes)>, StoreError> {
        let definitions = self.definitions.lock().unwrap_or_else(|p| p.into_inner());
        Ok(definitions
            .iter()
            .map(|(k, d)| (k.clone(), DefinitionBytes::new(d.clone())))
            .collect())
    }

    fn read_definition(&self, connection: &str) -> Result<Option<DefinitionBytes>, StoreError> {
        let definitions = self.definitions.lock().unwrap_or_else(|p| p.into_inner());
        Ok(definitions
            .get(connection)
            .map(|d| DefinitionBytes::new(d.clone())))
    }

    fn put_definition(&self, connection: &str, definition: &[u8]) -> Result<(), StoreError> {
        let mut definitions = self.definitions.lock().unwrap_or_else(|p| p.into_inner());
        definitions.insert(connection.to_owned(), definition.to_vec());
        Ok(())
    }

    fn remove_definition(&self, connection: &str) -> Result<(), StoreError> {
        let mut definitions = self.definitions.lock().unwrap_or_else(|p| p.into_inner());
        definitions.remove(connection);
        self.tokens().remove(connection);
        self.grants().retain(|(c, _), _| c != connection);
        Ok(())
    }

    fn read_grant(
        &self,
        connection: &str,
        subject: &str,
    ) -> Result<Option<StoredToken>, StoreError> {
        let key = (connection.to_owned(), subject.to_owned());
        Ok(self.grants().get(&key).cloned())
    }

    fn put_grant(
        &self,
        connection: &str,
        subject: &str,
        token: &StoredToken,
    ) -> Result<(), StoreError> {
        let key = (connection.to_owned(), subject.to_owned());
        self.grants().insert(key, token.clone());
        Ok(())
    }

    fn remove_grant(&self, connection: &str, subject: &str) -> Result<bool, StoreError> {
        let key = (connection.to_owned(), subject.to_owned());
        Ok(self.grants().remove(&key).is_some())
    }

    fn grant_page(
        &self,
        connection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GrantListing>, StoreError> {
        let grants = self.grants();
        Ok(grants
            .iter()
            .filter(|((c, s), _)| c == connection && after.is_none_or(|a| s.as_str() > a))
            .take(limit)
            .map(|((_, subject), t)| GrantListing {
                subject: subject.clone(),
                expires_at_ms: t.expires_at_ms,
            })
            .collect())
    }

    fn grant_counts(&self, connection: &str, now_ms: u64) -> Result<GrantCounts, StoreError> {
        let grants = self.grants();
        let mut counts = GrantCounts::default();
        for ((c, _), t) in grants.iter() {
            if c == connection {
                counts.total += 1;
                counts.expired += u64::from(t.expires_at_ms.is_some_and(|e| e < now_ms));
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::store::test_support::{same_token, sample_token};

    #[test]
    fn put_replace_remove() {
        let store = MemoryStore::new();
        assert!(store.load_all().unwrap().is_empty());
        store.put("a", &sample_token("1")).unwrap();
        store.put("a", &sample_token("2")).unwrap();
        store.put("b", &sample_token("3")).unwrap();
        let all = store.load_all().unwrap();
        assert_eq!(all.len(), 2);
        assert!(same_token(&all["a"], &sample_token("2")));
        store.remove("a").unwrap();
        store.remove("absent").unwrap();
        let all = store.load_all().unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), vec!["b"]);
    }

    #[test]
    fn usable_as_trait_object() {
        let seeded = HashMap::from([("x".to_owned(), sample_token("x"))]);
        let store: Box<dyn TokenStore> = Box::new(MemoryStore::with_tokens(seeded));
        assert!(same_token(
            &store.load_all().unwrap()["x"],
            &sample_token("x")
        ));
    }
}
