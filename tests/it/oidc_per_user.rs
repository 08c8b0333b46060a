//! Per-user grants end to end (issue 24), against panva's oidc-provider (tests/oidc):
//! rotating refresh tokens whose reuse revokes the grant, 3-second access tokens, PKCE.
//!
//! Three `tokenwarden run` processes share one Redis and one connection with
//! `grants: per_user`. 200 provider accounts `user-0` … `user-199` each log in through the
//! provider's real login and consent pages, as the sidecar subject of the same name: the
//! state minted by one replica (`authorize?subject=`), the provider's redirect delivered
//! to the same or another one. Then for 60 s every subject's requests go through randomly
//! chosen replicas to the provider's userinfo endpoint (`/me`), which answers the `sub` of
//! the token it was given — so the upstream itself checks that each request carried its
//! own subject's token. Subjects are used at three paces: every second (their grants are
//! renewed in the background while their token is still good), every 2.5 s (renewed in the
//! background or just after expiry) and every 12 s (always expired: each request waits for
//! its renewal).
//!
//! Asserted: every request 200 with its own subject's `sub`, never another's; not one
//! `invalid_grant` (nor any other token-endpoint error) at the provider; per account, the
//! refresh grants the provider answered are no fewer than the tokens that account's
//! request times need, and no more than one per request and per shortest refresh cycle
//! (plus one per token `/me` rejected, which a replay renews); the replicas' logs hold no
//! token the provider issued and no WARN or ERROR line.
//!
//! Soak tier (about 75 s: 5–10 s of logins, the 60 s of traffic): ignored by plain `cargo test`, run by
//! `cargo test -- --include-ignored` or alone with
//! `cargo test --test it oidc_per_user -- --ignored`.

use crate::oidc::{connection, CS_POST, KEY, PUBLIC_URL, REDIRECT_URI};
use crate::support::authz::{authorize_user_at, callback_at};
use crate::support::oidc::{login, stat, Provider};
use crate::support::process::SidecarProcess;
use crate::support::redis::{redis_store, RedisServer};
use crate::support::*;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Access-token lifetime at the provider.
const ACCESS_TTL: Duration = Duration::from_secs(3);
const SUBJECTS: usize = 200;
/// Logins walked through the provider at once.
const LOGINS_AT_ONCE: usize = 16;
/// How long the traffic runs.
const TRAFFIC: Duration = Duration::from_secs(60);
/// How many subjects are asked how often, in order (`user-0` first): 20 + 12 + 12.5 = about
/// 45 requests a second in all.
const PACES: [(usize, Duration); 3] = [
    (20, Duration::from_secs(1)),
    (30, Duration::from_millis(2500)),
    (150, Duration::from_secs(12)),
];
/// The shortest time from one token of a grant to its renewal: `refresh_after` of a 3 s
/// lifetime with full jitter (half of it, less 10 %). Renewals start from requests that
/// find the grant's token past this, so one grant is refreshed at most once per cycle.
const SHORTEST_CYCLE: Duration = Duration::from_millis(1350);
/// A request that takes longer than this fails (a token is waited for at most 2 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The default lease: a token request is given 11 s to be answered. A shorter one (5 s
/// leaves 2.5 s) abandons refreshes a stalled provider still carries out on a loaded
/// machine, and the next refresh, with the rotated-out refresh token, ends the grant.
const LEASE: &str = "15s";
const POLL: &str = "1s";
const STORE_KEY: &str = "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=";
const SUBJECT_HEADER: &str = "tokenwarden-subject";

fn subject(i: usize) -> String {
    format!("user-{i}")
}

/// How often subject `i` is asked.
fn pace(i: usize) -> Duration {
    let mut first = 0;
    for (n, every) in PACES {
        if i < first + n {
            return every;
        }
        first += n;
    }
    panic!("subject {i} has no pace")
}

/// One proxied request: when it was sent and answered, and the `sub` `/me` answered (or
/// what went wrong).
struct Call {
    replica: usize,
    sent: Instant,
    done: Instant,
    outcome: Result<String, String>,
}

/// `GET /idp/me` through the proxy at `url` as `subject`.
async fn me(http: &reqwest::Client, url: &str, subject: &str) -> Result<String, String> {
    let r = http
        .get(url)
        .header(SUBJECT_HEADER, subject)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))?;
    v["sub"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no sub: {body}"))
}

/// Authorizes every subject through the provider's login: `authorize?subject=` on replica
/// `i % 3`, the redirect delivered to replica `(i + i / 3) % 3`. Returns how many
/// callbacks reached another replica than the one that minted their state.
async fn authorize_all(replicas: &[SidecarProcess], provider: &Arc<Provider>) -> usize {
    let admins: Vec<_> = replicas.iter().map(|r| r.admin).collect();
    let permits = Arc::new(Semaphore::new(LOGINS_AT_ONCE));
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..SUBJECTS {
        let (minter, receiver) = (admins[i % 3], admins[(i + i / 3) % 3]);
        let (provider, permits) = (Arc::clone(provider), Arc::clone(&permits));
        logins.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            let user = subject(i);
            let a = authorize_user_at(minter, KEY, &user).await;
            assert_eq!(a.param("code_challenge_method"), Some("S256"), "{}", a.url);
            let back = login(&provider, &a.url, &user).await;
            let page = callback_at(receiver, back.query().unwrap()).await;
            assert_eq!(page.status, 200, "callback of {user}: {}", page.body);
        });
    }
    while let Some(done) = logins.join_next().await {
        done.expect("every subject authorized");
    }
    (0..SUBJECTS).filter(|i| (i + i / 3) % 3 != i % 3).count()
}

/// The requests of subject `i` for [`TRAFFIC`] from `start`, at its [`pace`] from a random
/// phase, each through a random replica.
async fn traffic(
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
    i: usize,
    start: Instant,
) -> Vec<Call> {
    let every = pace(i);
    let user = subject(i);
    let end = start + TRAFFIC;
    let mut at = start + every.mul_f64(rand::random::<f64>());
    let mut calls = Vec::new();
    while at < end {
        tokio::time::sleep_until(at).await;
        let replica = rand::random::<u32>() as usize % urls.len();
        let url = &urls[replica];
        let sent = Instant::now();
        let outcome = me(&http, url, &user).await;
        calls.push(Call {
            replica,
            sent,
            done: Instant::now(),
            outcome,
        });
        at += every;
    }
    calls
}

/// The fewest access tokens that can have served `calls` (sorted by `done`): a token lives
/// [`ACCESS_TTL`] from its issue, and a request was checked by `/me` between its `sent` and
/// `done`, so one token serves requests whose `[sent − TTL, done]` all hold its issue time.
/// The classic greedy stabbing of those intervals, by right end.
fn tokens_needed(calls: &[Call]) -> u64 {
    let mut needed = 0;
    let mut issue: Option<Instant> = None;
    for call in calls {
        let covered = issue.is_some_and(|at| {
            call.sent
                .checked_sub(ACCESS_TTL)
                .is_none_or(|from| from <= at)
        });
        if !covered {
            issue = Some(call.done);
            needed += 1;
        }
    }
    needed
}

/// The most refreshes a grant asked `calls` can have had without a rejected token: one per
/// request, and one per [`SHORTEST_CYCLE`] over the time its requests span.
fn refreshes_allowed(calls: &[Call]) -> u64 {
    let (Some(first), Some(last)) = (calls.first(), calls.last()) else {
        return 0;
    };
    let span = last.done.duration_since(first.sent);
    let cycles = (span.as_secs_f64() / SHORTEST_CYCLE.as_secs_f64()).floor() as u64 + 1;
    cycles.min(calls.len() as u64)
}

/// The refresh grants the provider answered 200, summed over its accounts.
fn answered_refreshes(stats: &serde_json::Value) -> u64 {
    stats["accounts"]
        .as_object()
        .unwrap()
        .values()
        .map(|a| a["refresh_token"].as_u64().unwrap_or(0))
        .sum()
}

/// The provider's counters once no refresh is in flight: the last requests may have started
/// renewals in the background, which are answered (or not) within a few seconds.
async fn settled_stats(provider: &Provider) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = provider.stats().await;
        if stat(&stats, "grants", "refresh_token") == answered_refreshes(&stats)
            || Instant::now() > deadline
        {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The WARN and ERROR lines of a replica's log, and its audit events of failed grants
/// (a refresh refused with `invalid_grant` is logged at INFO: the user must authorize again).
fn problems(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| {
            l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("action=\"grant_failed\"")
        })
        .collect()
}

/// Words of base64url characters in `text`: each issued token (opaque, base64url) is
/// looked up among them.
fn words(text: &str) -> HashSet<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| w.len() >= 16)
        .collect()
}

#[tokio::test]
#[ignore = "soak: about 75 s (200 logins, 60 s of traffic over three replicas); run with --include-ignored"]
async fn two_hundred_users_on_three_replicas_each_get_their_own_rotating_grant() {
    let began = Instant::now();
    let redis = RedisServer::start().await;
    let provider = Arc::new(Provider::start(REDIRECT_URI, ACCESS_TTL.as_secs()).await);
    let dir = tempfile::tempdir().unwrap();
    let admin_extra = format!("  public_url: {PUBLIC_URL}\n");
    let conn = connection(&provider, &CS_POST, None);
    let per_user = conn.replace("    pkce: true\n", "    pkce: true\n    grants: per_user\n");
    assert_ne!(conn, per_user, "grants: per_user inserted");
    let body = format!("{}{per_user}", redis_store(&redis, STORE_KEY, LEASE, POLL));
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        let r = SidecarProcess::spawn_logging(
            dir.path(),
            name,
            &admin_extra,
            &body,
            "info,tokenwarden=debug",
        )
        .await;
        replicas.push(r);
    }
    let urls: Arc<Vec<String>> = Arc::new(
        replicas
            .iter()
            .map(|r| r.url(&format!("/{KEY}/me")))
            .collect(),
    );
    let http = client();

    // Before any login: a subject without a grant gets the 503 that links its authorization.
    let r = http
        .get(&urls[0])
        .header(SUBJECT_HEADER, "user-0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let refusal: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(refusal["error"], "no_token", "{refusal}");
    assert!(
        refusal.to_string().contains("/authorize?subject=user-0"),
        "{refusal}"
    );
    // A per-user connection's authorization names one valid subject.
    let authorize = format!(
        "http://{}/api/v1/connection/{KEY}/authorize",
        replicas[0].admin
    );
    for (query, error) in [
        ("", "subject_required"),
        ("?subject=a%20b", "bad_subject"),
        ("?subject=a&subject=b", "bad_subject"),
    ] {
        let (status, body) = get_json(&format!("{authorize}{query}")).await;
        assert_eq!(
            (status, &body["error"]),
            (400, &serde_json::json!(error)),
            "{query}: {body}"
        );
    }

    // 1. 200 logins through the provider's pages.
    let login_start = Instant::now();
    let crossed = authorize_all(&replicas, &provider).await;
    let login_time = login_start.elapsed();
    let stats = provider.stats().await;
    assert_eq!(
        stat(&stats, "grants", "authorization_code"),
        SUBJECTS as u64,
        "{stats}"
    );
    for i in 0..SUBJECTS {
        let account = &stats["accounts"][subject(i)];
        assert_eq!(account["authorization_code"], 1, "{}: {stats}", subject(i));
    }
    assert_eq!(
        stats["accounts"].as_object().unwrap().len(),
        SUBJECTS,
        "{stats}"
    );
    let (status, listing) = get_json(&format!(
        "http://{}/api/v1/connection/{KEY}/grants?limit=1000",
        replicas[2].admin
    ))
    .await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["counts"]["total"], SUBJECTS, "{listing}");
    let refreshes_before = stat(&stats, "grants", "refresh_token");
    let requests_before = stats["token_requests"].as_u64().unwrap();
    let rejected_before = stat(&stats, "userinfo", "401");

    // 2. 60 s of traffic over every subject and replica.
    let start = Instant::now();
    let mut load = tokio::task::JoinSet::new();
    for i in 0..SUBJECTS {
        let (http, urls) = (http.clone(), Arc::clone(&urls));
        load.spawn(async move { (i, traffic(http, urls, i, start).await) });
    }
    let mut calls: BTreeMap<usize, Vec<Call>> = BTreeMap::new();
    while let Some(done) = load.join_next().await {
        let (i, c) = done.expect("traffic task");
        calls.insert(i, c);
    }
    let traffic_time = start.elapsed();

    // Every request answered with its own subject's identity.
    let (mut sent, mut mismatches, mut failures) = (0u64, Vec::new(), Vec::new());
    for (&i, c) in &calls {
        for call in c {
            sent += 1;
            match &call.outcome {
                Ok(sub) if *sub == subject(i) => {}
                Ok(sub) => mismatches.push(format!("{} got {sub}'s token", subject(i))),
                Err(e) => failures.push(format!(
                    "{} at {:?} on replica {}: {e}",
                    subject(i),
                    call.sent.duration_since(start),
                    call.replica
                )),
            }
        }
    }
    let stats = settled_stats(&provider).await;
    let refreshes = stat(&stats, "grants", "refresh_token") - refreshes_before;
    let rejected = stat(&stats, "userinfo", "401") - rejected_before;
    let latency_max = calls
        .values()
        .flatten()
        .map(|c| c.done.duration_since(c.sent))
        .max()
        .unwrap_or_default();
    let mut by_replica = [0u64; 3];
    for call in calls.values().flatten() {
        by_replica[call.replica] += 1;
    }
    let figures = format!(
        "{sent} requests in {traffic_time:?} ({by_replica:?} by replica, slowest {latency_max:?}), {} mismatches, {} failures, \
         {refreshes} refresh grants, {rejected} tokens rejected by /me; {SUBJECTS} logins in \
         {login_time:?} ({crossed} callbacks on another replica)",
        mismatches.len(),
        failures.len()
    );
    eprintln!("oidc_per_user: {figures}");
    // What the replicas logged as problems, to explain a failure.
    let diagnosis: String = replicas
        .iter()
        .map(|r| {
            let logs = r.logs();
            let lines = problems(&logs);
            format!(
                "\nreplica {} logged {} problems:\n{}",
                r.name,
                lines.len(),
                lines[..lines.len().min(10)].join("\n")
            )
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{figures}; a request carried another subject's token: {:?}{diagnosis}",
        &mismatches[..mismatches.len().min(10)]
    );
    assert!(
        failures.is_empty(),
        "{figures}; failed: {:?}{diagnosis}",
        &failures[..failures.len().min(10)]
    );
    let expected: u64 = (0..SUBJECTS)
        .map(|i| (TRAFFIC.as_secs_f64() / pace(i).as_secs_f64()).floor() as u64)
        .sum();
    assert!(sent >= expected, "{figures}: expected about {expected}");

    // Not one refresh with a rotated-out refresh token (it would have revoked the grant),
    // nor any other token-endpoint error; no token request but codes and refreshes.
    assert_eq!(stats["errors"], serde_json::json!({}), "{figures}: {stats}");
    assert_eq!(
        stats["token_requests"].as_u64().unwrap() - requests_before,
        refreshes,
        "{figures}: {stats}"
    );

    // Refresh grants match the refresh cycles of the subjects in use, per account.
    let (mut least, mut most) = (0, 0);
    let mut out_of_bounds = Vec::new();
    for (&i, c) in &mut calls {
        c.sort_by_key(|call| call.done);
        let user = subject(i);
        let got = stat(&stats["accounts"], &user, "refresh_token");
        // The code's token may serve the first request (it was issued before the traffic).
        let floor = tokens_needed(c).saturating_sub(1);
        let ceiling = refreshes_allowed(c);
        least += floor;
        most += ceiling;
        if got < floor || got > ceiling + rejected {
            out_of_bounds.push(format!(
                "{user}: {got} refreshes for {} requests (at least {floor}, at most {ceiling})",
                c.len()
            ));
        }
    }
    assert_eq!(
        stat(&stats, "grants", "refresh_token"),
        answered_refreshes(&stats),
        "every refresh grant answered for an account: {stats}"
    );
    assert!(
        out_of_bounds.is_empty(),
        "{figures}: {:?}",
        &out_of_bounds[..out_of_bounds.len().min(10)]
    );
    assert!(
        (least..=most + rejected).contains(&refreshes),
        "{figures}: between {least} and {most} (+{rejected}) expected"
    );
    // A rejected token is renewed and its request replayed, so it stays rare.
    assert!(rejected * 20 <= sent, "{figures}");
    eprintln!("oidc_per_user: refresh grants {refreshes} within [{least}, {most}]");

    // 3. No token in any replica's log, and nothing logged as a problem.
    let issued = provider.issued().await;
    for r in &mut replicas {
        r.stop();
    }
    for r in &replicas {
        let logs = r.logs();
        let found = words(&logs);
        for (what, tokens) in [
            ("access token", &issued.access_tokens),
            ("refresh token", &issued.refresh_tokens),
        ] {
            if let Some(t) = tokens.iter().find(|t| found.contains(t.as_str())) {
                panic!(
                    "an issued {what} ({}…) is in replica {}'s log",
                    &t[..6],
                    r.name
                );
            }
        }
        let problems = problems(&logs);
        assert!(
            problems.is_empty(),
            "replica {} logged problems:\n{}",
            r.name,
            problems[..problems.len().min(20)].join("\n")
        );
    }
    assert!(
        issued.access_tokens.len() as u64 >= SUBJECTS as u64 + refreshes,
        "{} access tokens issued",
        issued.access_tokens.len()
    );
    eprintln!("oidc_per_user: whole test {:?}", began.elapsed());
}

#[test]
fn issued_tokens_are_found_among_the_words_of_a_log() {
    let log = "2026-12-07T12:00:00Z DEBUG x: sent header=\"Bearer AbC-dEf_0123456789xyzAbC\" ok";
    assert!(words(log).contains("AbC-dEf_0123456789xyzAbC"));
    assert!(!words(log).contains("AbC-dEf_0123456789"));
}
