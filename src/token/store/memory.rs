//! [`MemoryStore`]: a [`TokenStore`] kept in a map, for tests. Nothing is durable.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{DefinitionBytes, StoreError, StoredToken, TokenStore};

/// In-memory implementation for tests (no durability).
#[derive(Debug, Default)]
pub struct MemoryStore {
    tokens: Mutex<HashMap<String, StoredToken>>,
    definitions: Mutex<HashMap<String, Vec<u8>>>,
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
        }
    }

    /// The map, even if a panicking test thread poisoned the lock (every update is a single
    /// map operation, so the map is always consistent).
    fn tokens(&self) -> MutexGuard<'_, HashMap<String, StoredToken>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
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
        Ok(())
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
