//! `slop-server`: reads the configuration, binds HOST:PORT and serves until
//! SIGTERM or SIGINT, then shuts down gracefully (the last spans sent to
//! the trace collector, when there is one) and exits 0.

use std::process::ExitCode;

use slop_server::{Config, run, termination_signal, transport::telemetry};

/// mimalloc rather than glibc's malloc: a request allocates and frees a
/// few dozen small blocks, often on different worker threads, and glibc's
/// arenas spent 13-19 % of the auth hot path's CPU on that (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::load();
    let traces = match telemetry::init(&config) {
        Ok(traces) => traces,
        Err(error) => {
            // As a bad setting is reported: no log subscriber yet.
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };

    let listener = match tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(
                host = %config.host,
                port = config.port,
                %error,
                "cannot listen on HOST:PORT"
            );
            return ExitCode::from(1);
        }
    };
    let outcome = run(config, listener, termination_signal()).await;
    let code = match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            ExitCode::from(1)
        }
    };
    traces.shutdown().await;
    code
}
