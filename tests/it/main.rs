//! Integration tests: one binary, the real sidecar started in-process on `127.0.0.1:0`
//! with real sockets, against the shared kit in `support` (and, in `oidc`, panva's
//! oidc-provider started with Node).

mod support;

mod admin_access;
mod authcode;
mod browser;
mod cli;
mod config_errors;
mod crash;
mod demo;
mod fast_path;
mod fides;
mod first_steps;
mod forward;
mod hidden_values;
mod injection;
mod intercept;
mod intercept_cli;
mod kubernetes;
mod lifecycle;
mod limits;
mod metrics;
mod oidc;
mod paths;
mod private_network;
mod reload;
mod reload_grants;
mod replicas;
mod shared_store;
mod status_page;
mod store_integrity;
mod unauthorized;
