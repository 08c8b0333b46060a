//! Building and sending authorization, token and refresh requests; reading token
//! responses; authorization states and PKCE.
pub mod client;
pub mod flow;
pub mod pending;
pub mod pkce;
pub mod request;
pub mod response;

pub use client::{TokenClient, TokenError};
