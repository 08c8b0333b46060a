//! Micro-benchmarks of the in-memory part of the request path (target: < 100 ns per request
//! for the token work): the token cache load (`token_cache_header` as the hyper path does
//! it, `token_cache_borrow` as the fast path does), and on the fast path the whole request head
//! (parse, route, rewrite the target, hygiene, inject) and response head translations, as
//! bytes into reused buffers. `hyper_path/*` measures the same request on the hyper path
//! (parsed into a `HeaderMap` by hyper), which the fast path replaced for ordinary requests.
//! `cargo bench --bench hot_path` (~1 min).
//!
//! `hot_path/record_request_duration` is what a request adds for `/metrics`.
//!
//! `parts/*` splits `token_cache_header` into its clock read, `ArcSwap` load and
//! `HeaderValue` clone.
#![allow(
    clippy::too_many_lines,
    reason = "a benchmark is a scenario read top to bottom; the 80-line rule is for src"
)]

#[path = "support/mod.rs"]
mod support;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use http::header::HeaderValue;
use std::time::Duration;

/// Short runs: the whole file finishes in about a minute.
const WARM_UP: Duration = Duration::from_millis(500);
const MEASUREMENT: Duration = Duration::from_secs(2);
const SAMPLES: usize = 50;

fn hot_path(c: &mut Criterion) {
    let (_dir, state, proxy) = support::loaded_state();
    support::install_token(&state, 1200);
    let raw = support::raw_request();
    let absolute = String::from_utf8(raw.clone()).unwrap().replacen(
        &format!("GET /{}/", support::KEY),
        "GET http://api.example.com/",
        1,
    );

    let mut g = c.benchmark_group("hot_path");
    g.warm_up_time(WARM_UP)
        .measurement_time(MEASUREMENT)
        .sample_size(SAMPLES);
    g.bench_function("token_cache_header", |b| {
        b.iter(|| black_box(state.tokens.header()))
    });
    // What the fast path does per request: borrow the token set, check it at the
    // request's clock reading (taken once per request), copy the bytes out.
    let now = tokio::time::Instant::now();
    g.bench_function("token_cache_borrow", |b| {
        b.iter(|| {
            let token = state.tokens.current();
            let header = token.as_deref().and_then(|t| t.header_at(black_box(now)));
            black_box(header.map(|h| h.as_bytes().len()))
        })
    });
    let mut out = Vec::new();
    g.bench_function("translate_request_reverse", |b| {
        b.iter(|| {
            black_box(support::translate_request(
                &proxy,
                black_box(&raw),
                &mut out,
            ))
        })
    });
    g.bench_function("translate_request_forward", |b| {
        b.iter(|| {
            black_box(support::translate_request(
                &proxy,
                black_box(absolute.as_bytes()),
                &mut out,
            ))
        })
    });
    g.bench_function("translate_response", |b| {
        b.iter(|| {
            black_box(support::translate_response(
                black_box(support::RAW_RESPONSE),
                &mut out,
            ))
        })
    });
    // What a request adds for `/metrics` (`proxy::measure::answered`): the clock read that
    // ends it and the record into the worker's histogram shard.
    let started = tokio::time::Instant::now();
    g.bench_function("record_request_duration", |b| {
        b.iter(|| {
            let took = tokio::time::Instant::now().saturating_duration_since(started);
            state.counters.requests.answered(black_box(200), took)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("hyper_path");
    g.warm_up_time(WARM_UP)
        .measurement_time(MEASUREMENT)
        .sample_size(SAMPLES);
    g.bench_function("prepare_request", |b| {
        b.iter_batched(
            support::parsed_request,
            |req| black_box(support::prepare(&proxy, req)),
            BatchSize::SmallInput,
        )
    });
    // The cost of the input itself, to read the one above against.
    g.bench_function("baseline_clone_headers", |b| {
        let h = support::realistic_headers();
        b.iter(|| black_box(h.clone()))
    });
    g.finish();

    // What `token_cache_header` is made of.
    let mut g = c.benchmark_group("parts");
    g.warm_up_time(WARM_UP)
        .measurement_time(MEASUREMENT)
        .sample_size(SAMPLES);
    g.bench_function("instant_now", |b| b.iter(tokio::time::Instant::now));
    let swap = arc_swap::ArcSwapOption::from_pointee(0u64);
    g.bench_function("arc_swap_load", |b| {
        b.iter(|| black_box(swap.load().is_some()))
    });
    let mut value = HeaderValue::try_from(format!("Bearer {}", "t".repeat(1200))).unwrap();
    value.set_sensitive(true);
    g.bench_function("header_value_clone_drop", |b| {
        b.iter(|| black_box(black_box(&value).clone()))
    });
    g.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
