//! The Redis store against a hostile or odd Redis: the subscription's health check on a
//! RESP2 connection (issue 21.2), superseded grants written back and values copied, edited or
//! of an earlier version (issue 20.1), out-of-bound generations, oversized values and garbage
//! (issue 20.16). Real `redis-server`s, in-process sidecars (helpers shared with
//! `shared_store`).

use crate::shared_store::{injected, wait_injected, wait_subscribers, yaml, LEASE, STORE_KEY};
use crate::support::authz::{authorize, redeem};
use crate::support::logs::Logs;
use crate::support::redis::{redis_store, seal_v1, RedisServer};
use crate::support::*;

/// Polls of the follower that must pass without a hitch.
const QUIET_POLLS: u64 = 5;

/// A real redis-server and one sidecar on it polling every 100 ms, with a client-credentials
/// connection `api` (tokens as `reply` says) ready and its follower subscribed.
async fn one_replica(reply: Reply) -> (RedisServer, Echo, TokenServer, Sidecar) {
    let redis = RedisServer::start().await;
    let echo = Echo::start().await;
    let tokens = TokenServer::start(reply).await;
    let config = format!(
        "{}{}",
        redis_store(&redis, STORE_KEY, LEASE, "100ms"),
        connections(&[cc_conn("api", echo.addr, tokens.addr)])
    );
    let sidecar = Sidecar::start(&config).await;
    sidecar.wait_state("api", "ready").await;
    wait_subscribers(&redis, 1).await;
    (redis, echo, tokens, sidecar)
}

#[tokio::test]
async fn a_subscribed_follower_stays_healthy_over_many_polls() {
    let (logs, _capture) = Logs::capture();
    let (redis, _echo, _tokens, a) = one_replica(Reply::token(3600, false)).await;
    // Each poll pings the subscription (redis-server 7 answers a RESP2 subscriber
    // ["pong", ""]); wait for several of them.
    let pings = redis.calls("ping").await;
    wait_until("several polls", || async {
        redis.calls("ping").await >= pings + QUIET_POLLS
    })
    .await;
    // One subscription each for token updates (token and grant channels in one command)
    // and runtime-connection changes, never again.
    assert_eq!(redis.calls("subscribe").await, 2, "re-subscribed");
    let text = logs.text();
    assert!(!text.contains("token store degraded"), "{text}");
    let st = a.status("api").await;
    assert_eq!(st["store"]["state"], "ok", "{st}");
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("tokenwarden_store_up{backend=\"redis\"} 1"),
        "{metrics}"
    );
    assert!(injected(&a, "api").await.is_some());
}

/// The token hash of connection `key` under the default prefix.
fn token_key(key: &str) -> String {
    format!("tokenwarden:{{{key}}}:token")
}

/// Writes `sealed` at generation `generation` under `hash`, as anyone who can write to
/// Redis can, and announces it on `channel` as a replica would.
async fn plant(redis: &RedisServer, hash: &str, generation: &str, sealed: &[u8], channel: &str) {
    let key = hash.as_bytes();
    let _: () = redis
        .cmd(&[
            b"HSET",
            key,
            b"gen",
            generation.as_bytes(),
            b"sealed",
            sealed,
        ])
        .await;
    let connection = &hash[hash.find('{').unwrap() + 1..hash.find('}').unwrap()];
    let message = format!("{generation} {connection}");
    let _: i64 = redis
        .cmd(&[b"PUBLISH", channel.as_bytes(), message.as_bytes()])
        .await;
}

/// Log lines at WARN that contain every one of `parts`.
fn warnings(logs: &Logs, parts: &[&str]) -> usize {
    logs.text()
        .lines()
        .filter(|l| l.contains("WARN") && parts.iter().all(|p| l.contains(p)))
        .count()
}

#[tokio::test]
async fn a_superseded_grant_written_back_is_refused_and_the_next_refresh_is_bobs() {
    let (logs, _capture) = Logs::capture();
    let redis = RedisServer::start().await;
    let echo = Echo::start().await;
    // 4 s tokens with rotating refresh tokens: bob's grant is refreshed ~2 s after it.
    let tokens = TokenServer::start(Reply::token(4, true)).await;
    let conn = fixture_authcode("crm", echo.addr, Some(tokens.addr), true);
    let config = yaml(&redis, STORE_KEY, &[conn]);
    let a = Sidecar::start(&config).await;
    let b = Sidecar::start(&config).await;
    wait_subscribers(&redis, 2).await;
    let hash = token_key("crm");

    // alice's grant (tok-1, ref-1), its sealed value copied out of Redis…
    let alice = authorize(&a, "crm").await;
    assert_eq!(redeem(&a, "alice", &alice.state).await.status, 200);
    let alices: Vec<u8> = redis.cmd(&[b"HGET", hash.as_bytes(), b"sealed"]).await;
    // …then bob's (tok-2, ref-2), which every replica takes up.
    let bob = authorize(&b, "crm").await;
    assert_eq!(redeem(&b, "bob", &bob.state).await.status, 200);
    wait_injected(&a, "crm", "Bearer tok-2").await;
    wait_injected(&b, "crm", "Bearer tok-2").await;

    // alice's value written back above bob's generation, and announced.
    let planted = (redis.generation("crm").await + 1).to_string();
    plant(&redis, &hash, &planted, &alices, "tokenwarden:tokens").await;
    wait_until("both replicas to refuse it", || async {
        warnings(&logs, &[&hash, "value refused", "failed authentication"]) >= 2
    })
    .await;
    for s in [&a, &b] {
        assert_eq!(injected(s, "crm").await.as_deref(), Some("Bearer tok-2"));
        assert_eq!(s.status("crm").await["state"], "ready");
    }
    let adopted = format!("generation={planted}");
    assert!(
        !logs
            .text()
            .lines()
            .any(|l| l.contains("token from the shared store") && l.contains(&adopted)),
        "alice's value was adopted"
    );

    // The next refresh presents bob's refresh token and writes above the planted value.
    let refresh = tokens.nth(3).await;
    assert!(
        refresh.path_and_query.contains("refresh_token=ref-2"),
        "{}",
        refresh.path_and_query
    );
    wait_injected(&a, "crm", "Bearer tok-3").await;
    wait_injected(&b, "crm", "Bearer tok-3").await;
    assert!(redis.generation("crm").await > planted.parse().unwrap());
    logs.assert_free_of(&[
        ("alice's token", "tok-1"),
        ("alice's refresh token", "ref-1"),
        ("bob's refresh token", "ref-2"),
    ]);
}

#[tokio::test]
async fn a_value_with_its_gen_edited_or_from_another_key_prefix_is_refused() {
    let (logs, _capture) = Logs::capture();
    let redis = RedisServer::start().await;
    let echo = Echo::start().await;
    let prod_tokens = TokenServer::start(Reply::token(3600, false)).await;
    let staging_tokens = TokenServer::start(Reply::token(3600, false)).await;
    let prod = Sidecar::start(&yaml(
        &redis,
        STORE_KEY,
        &[cc_conn("api", echo.addr, prod_tokens.addr)],
    ))
    .await;
    // Another deployment on the same Redis, with the same store key but its own prefix.
    let staging = Sidecar::start(&format!(
        "{}  key_prefix: \"staging:\"\n{}",
        redis_store(&redis, STORE_KEY, LEASE, "500ms"),
        connections(&[cc_conn("api", echo.addr, staging_tokens.addr)])
    ))
    .await;
    prod.wait_state("api", "ready").await;
    staging.wait_state("api", "ready").await;
    wait_until("staging to subscribe", || async {
        let (_, n): (String, i64) = redis.cmd(&[b"PUBSUB", b"NUMSUB", b"staging:tokens"]).await;
        n == 1
    })
    .await;
    let adoptions = || logs.text().matches("token from the shared store").count();
    let before = adoptions();

    // prod's value copied under staging's key, above staging's generation.
    let prods: Vec<u8> = redis
        .cmd(&[b"HGET", token_key("api").as_bytes(), b"sealed"])
        .await;
    let staging_gen: String = redis.cmd(&[b"HGET", b"staging:{api}:token", b"gen"]).await;
    let above = (staging_gen.parse::<u64>().unwrap() + 1).to_string();
    plant(
        &redis,
        "staging:{api}:token",
        &above,
        &prods,
        "staging:tokens",
    )
    .await;
    wait_until("staging to refuse prod's value", || async {
        warnings(&logs, &["staging:{api}:token", "value refused"]) >= 1
    })
    .await;

    // prod's own value with only its gen edited.
    let edited = (redis.generation("api").await + 1).to_string();
    plant(
        &redis,
        &token_key("api"),
        &edited,
        &prods,
        "tokenwarden:tokens",
    )
    .await;
    wait_until("prod to refuse its edited value", || async {
        warnings(&logs, &[&token_key("api"), "value refused"]) >= 1
    })
    .await;

    assert_eq!(adoptions(), before, "a refused value was adopted");
    for s in [&prod, &staging] {
        assert_eq!(injected(s, "api").await.as_deref(), Some("Bearer tok-1"));
    }
}

#[tokio::test]
async fn a_value_of_the_previous_version_is_adopted_and_resealed_then_refused() {
    let (logs, _capture) = Logs::capture();
    let redis = RedisServer::start().await;
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let conn = fixture_authcode("crm", echo.addr, Some(tokens.addr), true);
    let config = yaml(&redis, STORE_KEY, &[conn]);
    let hash = token_key("crm");
    // What the previous version left in Redis.
    let old = seal_v1(STORE_KEY, "crm", "old-access", "old-refresh");
    plant(&redis, &hash, "5", &old, "tokenwarden:tokens").await;

    // Upgraded without `store.migrate_legacy`: the start is refused (the value may be an
    // old grant written back), naming the Redis key and the setting that adopts it.
    let dir = tempfile::tempdir().unwrap();
    let refused = try_start(dir.path(), &config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        refused.contains(&hash) && refused.contains("store.migrate_legacy: true"),
        "{refused}"
    );
    assert_eq!(redis.generation("crm").await, 5, "left as it was");

    // With it, a replica that holds nothing adopts it and re-seals it at once…
    let config = config.replacen("store:\n", "store:\n  migrate_legacy: true\n", 1);
    let a = Sidecar::start(&config).await;
    wait_injected(&a, "crm", "Bearer old-access").await;
    assert_eq!(
        redis.generation("crm").await,
        6,
        "re-sealed at the next generation"
    );
    // …in the new form, which the next replica reads as it is.
    let b = Sidecar::start(&config).await;
    wait_injected(&b, "crm", "Bearer old-access").await;
    assert_eq!(redis.generation("crm").await, 6);
    wait_subscribers(&redis, 2).await;

    // A value of the previous version planted now: both hold a set, so both refuse it.
    let planted = seal_v1(STORE_KEY, "crm", "planted-access", "planted-refresh");
    plant(&redis, &hash, "9", &planted, "tokenwarden:tokens").await;
    wait_until("both replicas to refuse it", || async {
        warnings(&logs, &[&hash, "value refused", "earlier version"]) >= 2
    })
    .await;
    for s in [&a, &b] {
        assert_eq!(
            injected(s, "crm").await.as_deref(),
            Some("Bearer old-access")
        );
    }
    assert_eq!(tokens.count(), 0);
}

#[tokio::test]
async fn an_oversized_value_and_a_generation_beyond_the_bound_are_refused_once() {
    use tokenwarden::token::store::redis::{MAX_GENERATION, MAX_SEALED_LEN};
    let (logs, _capture) = Logs::capture();
    // 10 s tokens: the first refresh comes ~4.5 s or more after start.
    let (redis, _echo, _tokens, a) = one_replica(Reply::token(10, false)).await;
    let hash = token_key("api");
    let sealed: Vec<u8> = redis.cmd(&[b"HGET", hash.as_bytes(), b"sealed"]).await;
    let refused = |what: &'static str| {
        let logs = logs.clone();
        let hash = hash.clone();
        move || warnings(&logs, &[&hash, what, "keeping the current token"])
    };
    let polls = || async {
        let pings = redis.calls("ping").await;
        wait_until("several polls", || async {
            redis.calls("ping").await >= pings + QUIET_POLLS
        })
        .await;
    };

    // 1 MiB under a newer generation: refused without being fetched, on any poll.
    let oversized = vec![b'x'; 4 * MAX_SEALED_LEN];
    plant(&redis, &hash, "2", &oversized, "tokenwarden:tokens").await;
    let too_long = refused("longer than");
    wait_until("the oversized value refused", || async { too_long() >= 1 }).await;
    let sent = redis.bytes_sent().await;
    polls().await;
    let grown = redis.bytes_sent().await - sent;
    // Less than one copy of the value went out (the pings and INFO replies are small).
    assert!(
        grown < oversized.len() as u64,
        "{grown} bytes sent over {QUIET_POLLS} polls"
    );
    assert_eq!(too_long(), 1, "warned more than once");

    // A gen near 2^64 (the value itself intact): refused, and warned about once.
    plant(
        &redis,
        &hash,
        "18446744073709551615",
        &sealed,
        "tokenwarden:tokens",
    )
    .await;
    let beyond = refused("beyond");
    wait_until("the generation refused", || async { beyond() >= 1 }).await;
    polls().await;
    assert_eq!(beyond(), 1, "warned more than once");
    assert!(
        injected(&a, "api").await.is_some(),
        "the token held stays in use"
    );

    // The next refresh is not blocked: it replaces the value with a readable generation.
    wait_injected(&a, "api", "Bearer tok-2").await;
    let generation: String = redis.cmd(&[b"HGET", hash.as_bytes(), b"gen"]).await;
    let generation: u64 = generation.parse().expect("a decimal generation");
    assert!((1..=MAX_GENERATION).contains(&generation), "{generation}");
    let length: u64 = redis.cmd(&[b"HSTRLEN", hash.as_bytes(), b"sealed"]).await;
    assert!(length < 1024, "{length}");
    let st = a.status("api").await;
    assert_eq!(st["state"], "ready", "{st}");
}

#[tokio::test]
async fn garbage_under_a_readable_generation_is_replaced_by_the_next_refresh() {
    let (logs, _capture) = Logs::capture();
    let redis = RedisServer::start().await;
    let echo = Echo::start().await;
    // 3 s tokens: a refresh every ~1.5 s.
    let tokens = TokenServer::start(Reply::token(3, false)).await;
    let a = Sidecar::start(&yaml(
        &redis,
        STORE_KEY,
        &[cc_conn("api", echo.addr, tokens.addr)],
    ))
    .await;
    a.wait_state("api", "ready").await;
    let hash = token_key("api");
    let planted = (redis.generation("api").await + 1).to_string();
    plant(&redis, &hash, &planted, b"garbage", "tokenwarden:tokens").await;
    wait_until("the garbage refused", || async {
        warnings(&logs, &[&hash, "value refused", "too short"]) >= 1
    })
    .await;
    wait_injected(&a, "api", "Bearer tok-2").await;
    assert!(redis.generation("api").await > planted.parse().unwrap());
    let st = a.status("api").await;
    assert_eq!(st["state"], "ready", "{st}");
}

/// A reload that changes what a grant was obtained under (here its token endpoint) drops its
/// token on every replica, though Redis still holds the set: the definition is sealed with
/// the set, so neither the reloaded replica nor one started on the new definition adopts it,
/// and a new authorization goes above it.
#[tokio::test]
async fn a_set_obtained_under_another_definition_is_never_adopted() {
    let (logs, _capture) = Logs::capture();
    let redis = RedisServer::start().await;
    let echo = Echo::start().await;
    let (tokens, other_tokens) = (
        TokenServer::start(Reply::token(3600, true)).await,
        TokenServer::start(Reply::token(3600, true)).await,
    );
    let config = |tokens: &TokenServer| {
        yaml(
            &redis,
            STORE_KEY,
            &[fixture_authcode("crm", echo.addr, Some(tokens.addr), true)],
        )
    };
    let a = Sidecar::start(&config(&tokens)).await;
    let grant = authorize(&a, "crm").await;
    assert_eq!(redeem(&a, "code", &grant.state).await.status, 200);
    wait_injected(&a, "crm", "Bearer tok-1").await;
    let old_generation = redis.generation("crm").await;

    let (status, outcome) = a.reload(&config(&other_tokens)).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["tokens_dropped"], serde_json::json!(["crm"]));
    let b = Sidecar::start(&config(&other_tokens)).await;
    let refused = "obtained under another definition";
    wait_until("both replicas to pass the old set by", || async {
        logs.text().matches(refused).count() >= 2
    })
    .await;
    for s in [&a, &b] {
        assert_eq!(
            injected(s, "crm").await,
            None,
            "the old grant's token was sent"
        );
        assert_eq!(s.status("crm").await["state"], "needs_authorization");
    }

    // Authorized anew under the new definition: above the old set, and on every replica.
    let grant = authorize(&b, "crm").await;
    assert_eq!(redeem(&b, "code", &grant.state).await.status, 200);
    assert!(redis.generation("crm").await > old_generation);
    assert_eq!(other_tokens.count(), 1);
    wait_injected(&a, "crm", "Bearer tok-1").await;
    wait_injected(&b, "crm", "Bearer tok-1").await;
    assert_eq!(
        tokens.count(),
        1,
        "the old token endpoint is never asked again"
    );
}
