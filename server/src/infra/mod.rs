//! What every layer stands on: the configuration, the clock, and the
//! connection to Redis.
//!
//! - [`config`]: the typed configuration (flags, environment, `.env`).
//! - [`clock`]: the time every expiry reads, so tests can move it.
//! - [`redis_connection`]: connecting to Redis, and the back-off between
//!   reconnects.

pub mod clock;
pub mod config;
pub mod redis_connection;
