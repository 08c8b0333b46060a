//! [`Definition`]: a runtime connection as the store keeps it — what the connection API was
//! given (the connector type, the instance's names and its secrets) and when. It is the
//! source of truth: the running [`super::Connection`] is built from it and its template
//! (`runtime::build`) at creation, at every change and at every start. Plain data, as the
//! rest of this module's output: the registry's entries and the store's callers use it.

use secrecy::zeroize::Zeroizing;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// A runtime connection's definition. Holds its secrets: `Debug` shows only their names.
#[derive(Clone, Serialize, Deserialize)]
pub struct Definition {
    /// The connection key (`key`, or `instance_key` when the request gave none).
    pub key: String,
    /// The template's `saas_config.type`.
    pub connector_type: String,
    pub instance_key: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// The instance's values of the template's connector params.
    pub secrets: Map<String, Value>,
    /// Unix milliseconds.
    pub created_at: u64,
    #[serde(default)]
    pub updated_at: Option<u64>,
    /// The last `?verify=true`: when (Unix milliseconds) and whether it succeeded.
    #[serde(default)]
    pub last_test: Option<(u64, bool)>,
}

impl fmt::Debug for Definition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Definition")
            .field("key", &self.key)
            .field("connector_type", &self.connector_type)
            .field("instance_key", &self.instance_key)
            .field("name", &self.name)
            .field("description", &self.description)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("last_test", &self.last_test)
            .finish()
    }
}

impl Definition {
    /// The same without its secrets: what a running connection's entry keeps (the store
    /// has them, and the connection's params).
    pub fn without_secrets(&self) -> Definition {
        Definition {
            key: self.key.clone(),
            connector_type: self.connector_type.clone(),
            instance_key: self.instance_key.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            secrets: Map::new(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_test: self.last_test,
        }
    }

    /// The bytes the store seals (JSON; wiped from memory when dropped).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(serde_json::to_vec(self).expect("a definition serializes"))
    }

    /// A definition from the bytes [`Definition::encode`] wrote; the error never quotes
    /// them (they hold secrets).
    pub fn decode(bytes: &[u8]) -> Result<Definition, String> {
        serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "the stored definition does not read (line {}, column {})",
                e.line(),
                e.column()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Definition {
        let mut secrets = Map::new();
        secrets.insert("client_secret".into(), Value::from("s3cr3t-value"));
        Definition {
            key: "acme".into(),
            connector_type: "auth0".into(),
            instance_key: "acme".into(),
            name: Some("Acme".into()),
            description: None,
            secrets,
            created_at: 1,
            updated_at: None,
            last_test: None,
        }
    }

    #[test]
    fn round_trips_and_debug_hides_secret_values() {
        let d = sample();
        let back = Definition::decode(&d.encode()).unwrap();
        assert_eq!(back.secrets, d.secrets);
        assert_eq!(back.key, "acme");
        let shown = format!("{d:?}");
        assert!(shown.contains("client_secret"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }

    #[test]
    fn a_damaged_definition_is_refused_without_quoting_it() {
        let err = Definition::decode(b"{\"key\": \"s3cr3t-value").unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
