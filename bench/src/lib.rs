//! The parts the benchmarks share: the `slop-server` child process
//! ([`server`]), its clients ([`client`]), closed-loop load ([`load`]) and
//! CPU metering ([`cpu`]), what every run needs ([`setup`]); and the
//! fan-out benchmark ([`fanout`]).
//!
//! The binaries: `auth-hot-path` (src/main.rs) and `fanout`
//! (src/bin/fanout.rs).

pub mod client;
pub mod cpu;
pub mod fanout;
pub mod load;
pub mod server;
pub mod setup;
