//! Runtime-connection definitions in the Redis store (issue 23), on a real `redis-server`
//! (see `support::redis`): two `RedisStore`s on one Redis play two replicas. Sealing (a
//! value moved, edited or taken from a token set is refused), the delete that takes the
//! token set and lease with it, the change log the poll reads, and the push.

use crate::support::redis::RedisServer;
use crate::support::WAIT;
use futures_util::StreamExt as _;
use secrecy::SecretString;
use std::time::Duration;
use tokenwarden::config::RedisSettings;
use tokenwarden::token::store::redis::{parse_update, MAX_GENERATION, MAX_SEALED_LEN};
use tokenwarden::token::store::{GrantRef, RedisStore, StoreError, StoredToken};

const PREFIX: &str = "tokenwarden:";
/// A definition with a secret in it, which Redis must never hold in clear.
const SECRET: &str = "s3cret-client-value";
const DEFINITION: &[u8] =
    br#"{"type":"crm","secrets":{"client_id":"id","client_secret":"s3cret-client-value"}}"#;

fn store(redis: &RedisServer, prefix: &str) -> RedisStore {
    let settings = RedisSettings {
        key_prefix: prefix.to_owned(),
        lease_ttl: Duration::from_secs(5),
        poll_interval: Duration::from_millis(500),
        ..RedisSettings::for_url(&redis.url())
    };
    RedisStore::open(
        &settings,
        &SecretString::from(crate::shared_store::STORE_KEY),
    )
    .unwrap()
}

fn token() -> StoredToken {
    StoredToken {
        access_token: SecretString::from("access-1"),
        refresh_token: Some(SecretString::from("refresh-1")),
        expires_at_ms: None,
        scope: None,
        obtained_at_ms: 1_700_000_000_000,
        definition: None,
    }
}

fn definition_key(connection: &str) -> String {
    format!("{PREFIX}{{{connection}}}:connection")
}

async fn get(redis: &RedisServer, key: &str) -> Vec<u8> {
    redis.cmd(&[b"GET", key.as_bytes()]).await
}

async fn set(redis: &RedisServer, key: &str, value: &[u8]) {
    redis.cmd::<()>(&[b"SET", key.as_bytes(), value]).await;
}

/// `result` is a refusal of the value at `key`, and says nothing of the secret.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, StoreError>, key: &str, why: &str) {
    match result {
        Err(e @ StoreError::Refused { .. }) => {
            let text = e.to_string();
            assert!(text.contains(key), "{why}: {text}");
            assert!(!text.contains(SECRET), "{why}: {text}");
        }
        other => panic!("{why}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_definition_round_trips_sealed_and_another_replica_reads_it() {
    let redis = RedisServer::start().await;
    let (a, b) = (store(&redis, PREFIX), store(&redis, PREFIX));
    assert!(b.read_definition("crm").await.unwrap().is_none());
    let (at, none) = b.load_definitions().await.unwrap();
    assert!(at == 0 && none.is_empty());

    let first = a.put_definition("crm", DEFINITION).await.unwrap();
    assert_eq!(first, 1);
    assert_eq!(
        a.read_definition("crm").await.unwrap().unwrap().as_slice(),
        DEFINITION
    );
    assert_eq!(
        b.read_definition("crm").await.unwrap().unwrap().as_slice(),
        DEFINITION,
        "written on one replica, read on the other"
    );
    let stored = get(&redis, &definition_key("crm")).await;
    assert!(!String::from_utf8_lossy(&stored).contains(SECRET));
    assert!(!String::from_utf8_lossy(&stored).contains("client_id"));

    let changed: &[u8] = br#"{"type":"crm","secrets":{}}"#;
    let second = b.put_definition("crm", changed).await.unwrap();
    assert_eq!(second, first + 1);
    let third = a.put_definition("erp", DEFINITION).await.unwrap();
    let (at, all) = b.load_definitions().await.unwrap();
    assert_eq!(at, third);
    let mut all: Vec<(String, Vec<u8>)> = all.into_iter().map(|(k, d)| (k, d.to_vec())).collect();
    all.sort();
    assert_eq!(
        all,
        vec![
            ("crm".to_owned(), changed.to_vec()),
            ("erp".to_owned(), DEFINITION.to_vec())
        ]
    );
}

#[tokio::test]
async fn of_two_replicas_creating_one_key_only_the_first_writes() {
    let redis = RedisServer::start().await;
    let (a, b) = (store(&redis, PREFIX), store(&redis, PREFIX));
    let created = a.create_definition("crm", DEFINITION).await.unwrap();
    assert_eq!(created, Some(1));
    let other: &[u8] = br#"{"type":"crm","secrets":{"client_id":"someone-else"}}"#;
    assert_eq!(b.create_definition("crm", other).await.unwrap(), None);
    assert_eq!(
        a.read_definition("crm").await.unwrap().unwrap().as_slice(),
        DEFINITION,
        "the second create wrote nothing"
    );
    let (at, _) = a.definitions_changed_since(0).await.unwrap();
    assert_eq!(at, 1, "and recorded no change");
    // Once deleted, the key can be created again.
    a.remove_definition("crm").await.unwrap();
    assert!(b.create_definition("crm", other).await.unwrap().is_some());
}

#[tokio::test]
async fn a_value_moved_edited_or_taken_from_a_token_set_is_refused() {
    let redis = RedisServer::start().await;
    let ours = store(&redis, PREFIX);
    let staging = store(&redis, "staging:");
    ours.put_definition("crm", DEFINITION).await.unwrap();
    ours.put_definition("erp", b"{}").await.unwrap();
    staging.put_definition("crm", DEFINITION).await.unwrap();
    let (crm, erp) = (definition_key("crm"), definition_key("erp"));
    let sealed = get(&redis, &crm).await;
    let foreign = get(&redis, "staging:{crm}:connection").await;

    set(&redis, &erp, &sealed).await;
    assert_refused(
        ours.read_definition("erp").await,
        &erp,
        "another connection's",
    );
    set(&redis, &crm, &foreign).await;
    assert_refused(ours.read_definition("crm").await, &crm, "another prefix's");
    let mut edited = sealed.clone();
    let last = edited.len() - 1;
    edited[last] ^= 1;
    set(&redis, &crm, &edited).await;
    assert_refused(ours.read_definition("crm").await, &crm, "an edited byte");
    set(&redis, &crm, &sealed[..20]).await;
    assert_refused(ours.read_definition("crm").await, &crm, "a truncated value");
    let load = ours.load_definitions().await;
    assert!(
        matches!(&load, Err(StoreError::Refused { key, .. }) if key.ends_with(":connection")),
        "a load with a bad value fails naming it: {:?}",
        load.err()
    );

    // A token set is never a definition, nor the reverse.
    ours.commit(GrantRef::own("crm"), None, false, 0, &token(), false)
        .await
        .unwrap();
    let token_key = format!("{PREFIX}{{crm}}:token");
    let token_sealed: Vec<u8> = redis.cmd(&[b"HGET", token_key.as_bytes(), b"sealed"]).await;
    set(&redis, &crm, &token_sealed).await;
    assert_refused(ours.read_definition("crm").await, &crm, "a token set");
    redis
        .cmd::<()>(&[b"HSET", token_key.as_bytes(), b"sealed", &sealed])
        .await;
    assert!(
        matches!(
            ours.read(GrantRef::own("crm"), 0).await,
            Err(StoreError::Refused { .. })
        ),
        "a definition read as a token set"
    );

    // Too long: refused without being fetched.
    set(&redis, &crm, &vec![7u8; MAX_SEALED_LEN + 1]).await;
    assert_refused(
        ours.read_definition("crm").await,
        &crm,
        "an oversized value",
    );
    // Not a string: named, and Redis still counts as up.
    redis.cmd::<()>(&[b"DEL", crm.as_bytes()]).await;
    redis
        .cmd::<()>(&[b"HSET", crm.as_bytes(), b"sealed", &sealed])
        .await;
    match ours.read_definition("crm").await {
        Err(e @ StoreError::BadValue { .. }) => assert!(e.to_string().contains(&crm), "{e}"),
        other => panic!("a hash: expected a bad value, got {other:?}"),
    }
    assert!(ours.health().0, "a bad value is not Redis down");
    redis.cmd::<()>(&[b"DEL", crm.as_bytes()]).await;
    // What was written opens where it was written.
    set(&redis, &crm, &sealed).await;
    assert_eq!(
        ours.read_definition("crm")
            .await
            .unwrap()
            .unwrap()
            .as_slice(),
        DEFINITION
    );
}

#[tokio::test]
async fn removing_a_connection_deletes_its_definition_token_set_and_lease() {
    let redis = RedisServer::start().await;
    let (a, b) = (store(&redis, PREFIX), store(&redis, PREFIX));
    a.put_definition("crm", DEFINITION).await.unwrap();
    a.put_definition("erp", DEFINITION).await.unwrap();
    a.commit(GrantRef::own("crm"), None, false, 0, &token(), false)
        .await
        .unwrap();
    a.commit(GrantRef::own("erp"), None, false, 0, &token(), false)
        .await
        .unwrap();
    let _lease = a
        .lease(GrantRef::own("crm"))
        .await
        .unwrap()
        .expect("lease taken");

    let removed = b.remove_definition("crm").await.unwrap();
    for suffix in ["connection", "token", "lease"] {
        let key = format!("{PREFIX}{{crm}}:{suffix}");
        let exists: i64 = redis.cmd(&[b"EXISTS", key.as_bytes()]).await;
        assert_eq!(exists, 0, "{key} deleted");
    }
    assert!(a.read_definition("crm").await.unwrap().is_none());
    assert!(a.read(GrantRef::own("crm"), 0).await.unwrap().is_none());
    let (at, all) = a.load_definitions().await.unwrap();
    assert_eq!(at, removed);
    assert_eq!(
        all.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["erp"]
    );
    assert!(
        a.read(GrantRef::own("erp"), 0).await.unwrap().is_some(),
        "others untouched"
    );
    assert!(
        b.remove_definition("crm").await.unwrap() > removed,
        "deleting an absent one is not an error"
    );
}

#[tokio::test]
async fn changed_since_names_exactly_the_connections_changed_after_a_generation() {
    let redis = RedisServer::start().await;
    let (a, b) = (store(&redis, PREFIX), store(&redis, PREFIX));
    assert_eq!(b.definitions_changed_since(0).await.unwrap(), (0, vec![]));
    let g1 = a.put_definition("alpha", DEFINITION).await.unwrap();
    let g2 = a.put_definition("bravo", DEFINITION).await.unwrap();
    let g3 = b.remove_definition("alpha").await.unwrap();
    let g4 = b.put_definition("charlie", DEFINITION).await.unwrap();
    assert!(g1 < g2 && g2 < g3 && g3 < g4);
    let since = |g| b.definitions_changed_since(g);
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        since(0).await.unwrap(),
        (g4, names(&["bravo", "alpha", "charlie"]))
    );
    assert_eq!(
        since(g1).await.unwrap(),
        (g4, names(&["bravo", "alpha", "charlie"]))
    );
    assert_eq!(since(g2).await.unwrap(), (g4, names(&["alpha", "charlie"])));
    assert_eq!(since(g3).await.unwrap(), (g4, names(&["charlie"])));
    assert_eq!(since(g4).await.unwrap(), (g4, vec![]));
    // Token writes are not connection changes; another prefix has its own log.
    a.commit(GrantRef::own("bravo"), None, false, 0, &token(), false)
        .await
        .unwrap();
    assert_eq!(since(g4).await.unwrap(), (g4, vec![]));
    let staging = store(&redis, "staging:");
    assert_eq!(
        staging.definitions_changed_since(0).await.unwrap(),
        (0, vec![])
    );

    // A counter that is not a generation (edited, or at the bound) writes nothing.
    let counter = format!("{PREFIX}connections:gen");
    for unusable in ["junk".to_owned(), MAX_GENERATION.to_string()] {
        set(&redis, &counter, unusable.as_bytes()).await;
        assert!(
            matches!(
                a.put_definition("delta", DEFINITION).await,
                Err(StoreError::BadValue { .. })
            ),
            "{unusable}"
        );
        assert!(
            matches!(
                a.remove_definition("bravo").await,
                Err(StoreError::BadValue { .. })
            ),
            "{unusable}"
        );
    }
    assert!(a.read_definition("delta").await.unwrap().is_none());
    assert!(a.read_definition("bravo").await.unwrap().is_some());
    set(&redis, &counter, b"junk").await;
    assert!(matches!(
        b.definitions_changed_since(0).await,
        Err(StoreError::BadValue { .. })
    ));
}

#[tokio::test]
async fn a_subscriber_is_told_of_every_change() {
    let redis = RedisServer::start().await;
    let (a, b) = (store(&redis, PREFIX), store(&redis, PREFIX));
    let (_sink, mut messages) = b.subscribe_connections().await.unwrap();
    let created = a.put_definition("crm", DEFINITION).await.unwrap();
    // A token write is on the token channel, not this one.
    a.commit(GrantRef::own("crm"), None, false, 0, &token(), false)
        .await
        .unwrap();
    let removed = a.remove_definition("crm").await.unwrap();
    for expected in [created, removed] {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("notified in time")
            .expect("subscription open");
        assert_eq!(message.get_channel_name(), b.connections_channel());
        assert_eq!(
            parse_update(message.get_payload_bytes()),
            Some((expected, "crm"))
        );
    }
}
