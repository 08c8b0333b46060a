//! Token sets, the lock-free cache, the refresh schedule and loop, and the durable store.
pub mod cache;
pub mod refresher;
pub mod schedule;
pub mod set;
pub mod store;

pub use cache::{ConnectionState, State, Status};
pub use set::TokenSet;
