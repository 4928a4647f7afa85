//! Does login hashing starve the runtime? `me` runs at low concurrency
//! while the server is otherwise idle, then while bursts of concurrent
//! logins (argon2id each) are in flight; the p99 of the two are compared.

use std::{net::SocketAddr, ops::Range, sync::Arc, time::Duration};

use http::StatusCode;
use tokio::{sync::Barrier, time::Instant};

use crate::{
    client::{self, Http1, RestMe},
    load::{Load, Recording, Stats},
};

/// How the burst test runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `me` client tasks (one connection each).
    pub concurrency: usize,
    /// Each task's interval between requests; None for closed loop.
    pub pace: Option<Duration>,
    /// Before anything is measured.
    pub warmup: Duration,
    /// The idle window `me` is measured in.
    pub idle: Duration,
    /// Concurrent logins per burst.
    pub logins: usize,
    /// Bursts, one after the other.
    pub bursts: usize,
    /// Quiet time after each burst.
    pub gap: Duration,
}

/// What the burst test found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `me` while idle.
    pub idle: Stats,
    /// `me` requests that started while logins were in flight.
    pub during: Stats,
    /// The logins themselves.
    pub logins: Stats,
    /// How long the bursts lasted, first login sent to last answer.
    pub burst_lengths: Vec<Duration>,
}

/// Runs the plan against the server at `addr`: `me` as the holder of
/// `access_token`, logins as `email`/`password` (an account other than
/// the `me` user's, so the logins' sessions never displace its session).
pub async fn run(
    addr: SocketAddr,
    access_token: &str,
    email: &str,
    password: &str,
    plan: &Plan,
) -> Result<Outcome, String> {
    let callers = RestMe::many(addr, access_token, plan.concurrency).await?;
    let origin = Instant::now();
    let load = Load::start(callers, origin, plan.pace);
    let idle_window = plan.warmup..plan.warmup + plan.idle;
    tokio::time::sleep_until(origin + idle_window.end).await;

    let mut windows = Vec::new();
    let mut logins = Recording::default();
    for _ in 0..plan.bursts {
        let (window, recording) = burst(addr, origin, email, password, plan.logins).await;
        windows.push(window);
        logins.merge(recording);
        tokio::time::sleep(plan.gap).await;
    }
    let (_, recording) = load.finish().await?;

    let burst_lengths = windows
        .iter()
        .map(|window| window.end.saturating_sub(window.start))
        .collect();
    Ok(Outcome {
        idle: Stats::of(&recording, &[idle_window]),
        during: Stats::of(&recording, &windows),
        logins: Stats::of(&logins, &windows),
        burst_lengths,
    })
}

/// `count` logins at once, each on a connection opened beforehand; returns
/// the window from the moment they are released to the last answer.
async fn burst(
    addr: SocketAddr,
    origin: Instant,
    email: &str,
    password: &str,
    count: usize,
) -> (Range<Duration>, Recording) {
    let body = Arc::new(client::login_body(email, password));
    let release = Arc::new(Barrier::new(count + 1));
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let body = body.clone();
            let release = release.clone();
            tokio::spawn(async move {
                let connection = Http1::connect(addr).await;
                release.wait().await;
                let started = Instant::now();
                let outcome = match connection {
                    Ok(mut connection) => match connection.post_json(client::LOGIN, &body).await {
                        Ok((StatusCode::OK, _)) => Ok(()),
                        Ok((status, answer)) => {
                            Err(format!("POST {}: HTTP {status}: {answer}", client::LOGIN))
                        }
                        Err(error) => Err(error),
                    },
                    Err(error) => Err(error),
                };
                (started, started.elapsed(), outcome)
            })
        })
        .collect();
    release.wait().await;
    let start = origin.elapsed();
    let mut recording = Recording::default();
    for task in tasks {
        match task.await {
            Ok((started, latency, outcome)) => {
                recording.record(started.saturating_duration_since(origin), latency, outcome)
            }
            Err(error) => recording.record(start, Duration::ZERO, Err(error.to_string())),
        }
    }
    let end = origin.elapsed();
    // A login task may have been released a moment before the window's
    // start was read: start the window at the earliest login.
    let start = recording
        .samples
        .iter()
        .map(|sample| sample.at)
        .min()
        .unwrap_or(start)
        .min(start);
    (start..end, recording)
}
