//! The parts the benchmarks share: the `slop-server` child process
//! ([`server`]), its clients ([`client`]), closed-loop and paced load
//! ([`load`]) and CPU metering ([`cpu`]), what every run needs
//! ([`setup`]); the fan-out benchmark ([`fanout`]), with Redis and a Redis
//! Cluster of its own ([`redis_servers`]) and what their nodes spend
//! ([`redis_info`]); the soak ([`soak`]), which holds the fan-out's
//! sockets while the rest of the load runs for minutes.
//!
//! The binaries: `auth-hot-path` (src/main.rs), `fanout`
//! (src/bin/fanout.rs) and `soak` (src/bin/soak.rs).

/// The allocator of both binaries, and so of the comparison servers they
/// run, the same as slop-server's: the figures compare the work done, not
/// the allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod client;
pub mod cpu;
pub mod fanout;
pub mod load;
pub mod redis_info;
pub mod redis_servers;
pub mod server;
pub mod setup;
pub mod soak;
