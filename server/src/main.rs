//! `slop-server`: reads the configuration, binds HOST:PORT and serves until
//! SIGTERM or SIGINT, then shuts down gracefully and exits 0.

use std::process::ExitCode;

use slop_server::{Config, run, termination_signal, transport::telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::load();
    telemetry::init_logging(&config);

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
    match run(config, listener, termination_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            ExitCode::from(1)
        }
    }
}
