//! What a sealed record is bound to: the associated data of its AEAD.
//!
//! A record opens only under the exact [`Binding`] it was sealed with, so a value cannot be
//! moved to another place and still decrypt. Two layouts exist (all integers big-endian):
//!
//! ```text
//! version 2 (token sets, since issue 20):
//!   MAGIC ‖ 2 (u16) ‖ connection length (u16) ‖ connection
//!         ‖ subject length (u32) ‖ subject ‖ namespace length (u32) ‖ namespace
//!         ‖ generation (u64)
//! version 1 (earlier token sets, and pending authorization states):
//!   MAGIC ‖ 1 (u16) ‖ label length (u16) ‖ label
//! version 3 (runtime-connection definitions in the SQLite store):
//!   MAGIC ‖ 3 (u16) ‖ connection length (u16) ‖ connection
//! ```
//!
//! The version is the record's purpose: a token set never opens as a definition, nor a
//! definition as a token set or a pending state, even under the same connection key.
//!
//! In version 2 the *subject* is the end user of a per-user grant (empty for a connection's
//! own grant), the *namespace* is where the record is kept (the Redis key prefix; empty in
//! the file store) and the *generation* is the Redis generation the value was written at
//! (0 in the file store). Sealing the generation in means a value whose `gen` field was
//! edited, or an old value written back under a higher `gen`, fails authentication;
//! sealing the prefix in means a value copied from another deployment's keys does too.
//!
//! Version 1 binds only a label (the connection key). Token sets sealed that way are still
//! read — the file store reads a version-1 file, the Redis store adopts a version-1 value
//! under the rule in its module doc — but never written.

use super::layout::MAGIC;

/// The associated-data layout of records written now.
const BOUND_VERSION: u16 = 2;
/// The associated-data layout of earlier token sets, and of pending states.
const LABEL_VERSION: u16 = 1;
/// The associated-data layout of runtime-connection definitions.
const DEFINITION_VERSION: u16 = 3;

/// Everything a token set is sealed to (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Binding<'a> {
    pub(crate) connection: &'a str,
    /// The end user of a per-user grant; empty for the connection's own grant.
    pub(crate) subject: &'a str,
    /// The Redis key prefix; empty in the file store.
    pub(crate) namespace: &'a str,
    /// The Redis generation; 0 in the file store.
    pub(crate) generation: u64,
}

impl<'a> Binding<'a> {
    /// A connection's own grant in the file store.
    pub(crate) fn file(connection: &'a str) -> Binding<'a> {
        Binding {
            connection,
            subject: "",
            namespace: "",
            generation: 0,
        }
    }

    /// The per-user grant of `subject` under `connection` in the embedded database (no
    /// namespace, generation 0, as [`Binding::file`]).
    pub(crate) fn file_grant(connection: &'a str, subject: &'a str) -> Binding<'a> {
        Binding {
            subject,
            ..Binding::file(connection)
        }
    }

    /// The version-2 associated data.
    pub(crate) fn associated_data(&self) -> Vec<u8> {
        let mut aad = label_data(BOUND_VERSION, self.connection);
        for part in [self.subject, self.namespace] {
            // Neither comes near 4 GiB (config values); saturate defensively.
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            aad.extend_from_slice(&len.to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad.extend_from_slice(&self.generation.to_be_bytes());
        aad
    }
}

/// The version-1 associated data of `label` (a connection key, or a state label).
pub(crate) fn legacy_associated_data(label: &str) -> Vec<u8> {
    label_data(LABEL_VERSION, label)
}

/// The version-3 associated data of the definition of `connection`.
pub(crate) fn definition_associated_data(connection: &str) -> Vec<u8> {
    label_data(DEFINITION_VERSION, connection)
}

/// `MAGIC ‖ version ‖ label length (u16) ‖ label`.
fn label_data(version: u16, label: &str) -> Vec<u8> {
    let label = label.as_bytes();
    let mut aad = Vec::with_capacity(MAGIC.len() + 2 * std::mem::size_of::<u16>() + label.len());
    aad.extend_from_slice(&MAGIC);
    aad.extend_from_slice(&version.to_be_bytes());
    // Connection keys longer than u16::MAX are rejected before sealing; saturate defensively.
    let len = u16::try_from(label.len()).unwrap_or(u16::MAX);
    aad.extend_from_slice(&len.to_be_bytes());
    aad.extend_from_slice(label);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(generation: u64) -> Binding<'static> {
        Binding {
            connection: "crm",
            subject: "",
            namespace: "tokenwarden:",
            generation,
        }
    }

    #[test]
    fn every_field_changes_the_associated_data() {
        let base = binding(3).associated_data();
        assert_ne!(base, binding(4).associated_data());
        for other in [
            Binding {
                connection: "crn",
                ..binding(3)
            },
            Binding {
                subject: "alice",
                ..binding(3)
            },
            Binding {
                namespace: "other:",
                ..binding(3)
            },
        ] {
            assert_ne!(base, other.associated_data(), "{other:?}");
        }
        // Length prefixes keep the fields apart: moving bytes between them changes it.
        let split = Binding {
            subject: "a",
            namespace: "b",
            ..binding(3)
        };
        let joined = Binding {
            subject: "ab",
            namespace: "",
            ..binding(3)
        };
        assert_ne!(split.associated_data(), joined.associated_data());
    }

    #[test]
    fn the_layouts_differ_by_version() {
        let legacy = legacy_associated_data("crm");
        assert_eq!(&legacy[MAGIC.len()..MAGIC.len() + 2], &[0, 1]);
        let bound = Binding::file("crm").associated_data();
        assert_eq!(&bound[MAGIC.len()..MAGIC.len() + 2], &[0, 2]);
        assert!(!bound.starts_with(&legacy));
        let definition = definition_associated_data("crm");
        assert_eq!(&definition[MAGIC.len()..MAGIC.len() + 2], &[0, 3]);
        assert_ne!(definition, legacy);
        assert!(!bound.starts_with(&definition));
    }
}
