//! Token sets, the lock-free cache, the refresh schedule and the durable store. Nothing
//! here knows of OAuth requests, the proxy, the registry or the admin routes: it imports
//! only `config` (the Redis settings), `telemetry` and `instrument` (the type of the
//! token instruments a cache carries), and none of those imports `token`.
pub mod cache;
pub mod schedule;
pub mod set;
pub mod store;

pub use cache::{Cache, Replacement, Signals, State, Status};
pub use set::TokenSet;
