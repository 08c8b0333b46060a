//! Integration tests: one binary, the real sidecar started in-process on `127.0.0.1:0`
//! with real sockets, against the shared kit in `support` (and, in `oidc`, panva's
//! oidc-provider started with Node).
//!
//! Two tiers. Plain `cargo test` runs the quick default tier. The soak tier is the tests
//! marked `#[ignore = "soak: …"]` (the replicas' 60 s run, the oidc refresh-and-restart
//! runs, the 200 users of `oidc_per_user`, the 200 SIGKILLs of `crash`, and in the library
//! the exhaustive byte-flip test of the file store); `cargo test -- --include-ignored` runs
//! both tiers, as README's test command and `.ci/run` do.
#![allow(
    clippy::too_many_lines,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "clippy.toml's rules are for src: a test is a scenario read top to bottom, measures wall time and builds its own HTTP clients"
)]
// The sidecar's futures (its Redis store's in particular) are deeper than the default 128.
#![recursion_limit = "256"]

mod support;

mod admin_access;
mod authcode;
mod browser;
mod cli;
mod client_auth;
mod config_errors;
mod crash;
mod credentials;
mod demo;
mod fast_path;
mod fides;
mod file_secrets;
mod first_steps;
mod forward;
mod google_service_account;
mod grants_api;
mod hidden_values;
mod http2;
mod injection;
mod intercept;
mod intercept_cli;
mod jwt_bearer;
mod kubernetes;
mod lifecycle;
mod limits;
mod metrics;
mod oidc;
mod oidc_per_user;
mod paths;
mod per_user;
mod placeholders;
mod private_network;
mod redis_cluster;
mod redis_definitions;
mod redis_failover;
mod redis_modes;
mod redis_topology;
mod reload;
mod reload_grants;
mod replicas;
mod runtime;
mod runtime_grants;
mod runtime_scale;
mod shared_host;
mod shared_store;
mod status_page;
mod store_integrity;
mod unauthorized;
