//! Token sets, the lock-free cache, the refresh schedule and the durable store. A leaf:
//! nothing here knows of OAuth requests, the proxy or the admin routes.
pub mod cache;
pub mod schedule;
pub mod set;
pub mod store;

pub use cache::{Cache, Replacement, State, Status};
pub use set::TokenSet;
