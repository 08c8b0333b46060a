//! Integration tests: one binary, the real sidecar started in-process on `127.0.0.1:0`
//! with real sockets, against the shared kit in `support` (and, in `oidc`, panva's
//! oidc-provider started with Node).

mod support;

mod authcode;
mod browser;
mod config_errors;
mod fast_path;
mod fides;
mod first_steps;
mod forward;
mod foundation;
mod kubernetes;
mod oidc;
mod replicas;
mod shared_store;
mod status_page;
