//! The load generator: client tasks that each make one kind of request over
//! and over (closed loop, or paced at a fixed interval), recording when
//! every request started and how long it took, and the statistics of the
//! requests that started inside chosen time windows.

use std::{
    future::Future,
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use crate::cpu::Meter;

/// The longest one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// After a failed request a task waits this long, so a dead connection does
/// not turn into a busy loop of errors.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// One kind of request, made over and over by one client task.
pub trait Caller: Send + 'static {
    /// Makes one request. `Err` describes a failure: a transport error, a
    /// non-2xx status, a gRPC error, or an answer that is not the expected
    /// one.
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// One request's outcome.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it started, from the origin of the run.
    pub at: Duration,
    /// How long it took, to the last byte of the answer.
    pub latency: Duration,
    /// Whether it succeeded.
    pub ok: bool,
}

/// What tasks recorded.
#[derive(Debug, Default)]
pub struct Recording {
    /// Every request, in no particular order.
    pub samples: Vec<Sample>,
    /// The first failure seen, to report.
    pub first_error: Option<String>,
}

impl Recording {
    /// Adds another recording's samples to this one.
    pub fn merge(&mut self, other: Recording) {
        self.samples.extend(other.samples);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Records one outcome.
    pub fn record(&mut self, at: Duration, latency: Duration, outcome: Result<(), String>) {
        let ok = match outcome {
            Ok(()) => true,
            Err(error) => {
                self.first_error.get_or_insert(error);
                false
            }
        };
        self.samples.push(Sample { at, latency, ok });
    }
}

/// Tells running client tasks to stop after their current request.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Asks the tasks to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Client tasks running; each hands its caller back when stopped, so
/// connections can be reused by the next window.
pub struct Load<C> {
    tasks: Vec<JoinHandle<(C, Recording)>>,
    stop: Stop,
}

impl<C: Caller> Load<C> {
    /// Starts one task per caller; sample times are measured from `origin`.
    /// With `pace`, each task starts a request every `pace` (the tasks'
    /// ticks spread evenly over one period; a late request is not made up
    /// for); without, each starts its next request as soon as the last one
    /// has answered (closed loop).
    pub fn start(callers: Vec<C>, origin: Instant, pace: Option<Duration>) -> Self {
        let stop = Stop::default();
        let count = callers.len().max(1) as u32;
        let tasks = callers
            .into_iter()
            .zip(0u32..)
            .map(|(mut caller, index)| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut recording = Recording::default();
                    let mut ticker = pace.map(|period| {
                        let first = Instant::now() + period * index / count;
                        let mut ticker = tokio::time::interval_at(first, period);
                        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        ticker
                    });
                    while !stop.stopped() {
                        if let Some(ticker) = ticker.as_mut() {
                            ticker.tick().await;
                            if stop.stopped() {
                                break;
                            }
                        }
                        let started = Instant::now();
                        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, caller.call())
                            .await
                            .unwrap_or_else(|_| {
                                Err(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()))
                            });
                        let latency = started.elapsed();
                        let failed = outcome.is_err();
                        recording.record(
                            started.saturating_duration_since(origin),
                            latency,
                            outcome,
                        );
                        if failed {
                            tokio::time::sleep(ERROR_BACKOFF).await;
                        }
                    }
                    (caller, recording)
                })
            })
            .collect();
        Self { tasks, stop }
    }

    /// Stops the tasks; answers their callers and what they recorded.
    pub async fn finish(self) -> Result<(Vec<C>, Recording), String> {
        self.stop.stop();
        let mut callers = Vec::with_capacity(self.tasks.len());
        let mut all = Recording::default();
        for task in self.tasks {
            let (caller, recording) = task
                .await
                .map_err(|error| format!("a client task failed: {error}"))?;
            callers.push(caller);
            all.merge(recording);
        }
        Ok((callers, all))
    }
}

/// One target of a comparison: its client tasks' callers, and what was
/// recorded in its measurement windows.
struct Target<C> {
    callers: Vec<C>,
    meter: Meter,
    recording: Recording,
    windows: Vec<Range<Duration>>,
    cpu: Option<Duration>,
}

impl<C: Caller> Target<C> {
    fn new(callers: Vec<C>, meter: Meter) -> Self {
        Self {
            callers,
            meter,
            recording: Recording::default(),
            windows: Vec::new(),
            cpu: Some(Duration::ZERO),
        }
    }

    /// Runs the callers closed loop for `settle + length`, measuring the
    /// last `length`.
    async fn window(
        &mut self,
        origin: Instant,
        settle: Duration,
        length: Duration,
    ) -> Result<(), String> {
        let begin = Instant::now();
        let load = Load::start(std::mem::take(&mut self.callers), origin, None);
        let from = (begin + settle).saturating_duration_since(origin);
        tokio::time::sleep_until(begin + settle).await;
        let cpu_before = self.meter.read();
        tokio::time::sleep_until(begin + settle + length).await;
        let cpu_used = cpu_before
            .zip(self.meter.read())
            .map(|(before, after)| after.saturating_sub(before));
        self.cpu = self.cpu.zip(cpu_used).map(|(sum, used)| sum + used);
        let (callers, recording) = load.finish().await?;
        self.callers = callers;
        self.recording.merge(recording);
        self.windows.push(from..from + length);
        Ok(())
    }

    fn stats(&self) -> Stats {
        Stats {
            cpu: self.cpu,
            ..Stats::of(&self.recording, &self.windows)
        }
    }
}

/// Runs each target's callers closed loop, one target after the other, in
/// `rounds` windows of `duration / rounds` each, so all see the same
/// machine when other work on it comes and goes. Each target is warmed up
/// for `warmup` before its first window and settles for [`SETTLE`] before
/// every later one; only the windows are measured. Answers each target's
/// statistics, in the order given, with the CPU time its meter read during
/// its windows.
pub async fn compare<C: Caller>(
    targets: Vec<(Vec<C>, Meter)>,
    warmup: Duration,
    duration: Duration,
    rounds: u32,
) -> Result<Vec<Stats>, String> {
    let rounds = rounds.max(1);
    let length = duration / rounds;
    let origin = Instant::now();
    let mut targets: Vec<Target<C>> = targets
        .into_iter()
        .map(|(callers, meter)| Target::new(callers, meter))
        .collect();
    for round in 0..rounds {
        let settle = if round == 0 { warmup } else { SETTLE };
        for target in &mut targets {
            target.window(origin, settle, length).await?;
        }
    }
    Ok(targets.iter().map(Target::stats).collect())
}

/// Load before each measurement window after the first, so the window does
/// not start with connections that were idle.
const SETTLE: Duration = Duration::from_millis(200);

/// Throughput and latency of the requests that started inside some windows.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Successful requests.
    pub ok: usize,
    /// Failed requests.
    pub errors: usize,
    /// Successful requests per second of window.
    pub per_second: f64,
    /// Median latency of the successful requests.
    pub p50: Duration,
    /// 99th percentile latency of the successful requests.
    pub p99: Duration,
    /// Highest latency of the successful requests.
    pub max: Duration,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// CPU time the target used over the windows, when measured.
    pub cpu: Option<Duration>,
}

impl Stats {
    /// CPU time per successful request, when measured.
    pub fn cpu_per_request(&self) -> Option<Duration> {
        let requests = u32::try_from(self.ok).ok().filter(|ok| *ok > 0)?;
        Some(self.cpu? / requests)
    }

    /// The statistics of the requests of `recording` that started inside
    /// any of `windows` (times from the origin of the run).
    pub fn of(recording: &Recording, windows: &[Range<Duration>]) -> Self {
        let inside = |sample: &&Sample| windows.iter().any(|window| window.contains(&sample.at));
        let mut latencies: Vec<Duration> = recording
            .samples
            .iter()
            .filter(inside)
            .filter(|sample| sample.ok)
            .map(|sample| sample.latency)
            .collect();
        latencies.sort_unstable();
        let errors = recording
            .samples
            .iter()
            .filter(inside)
            .filter(|sample| !sample.ok)
            .count();
        let seconds: f64 = windows
            .iter()
            .map(|window| window.end.saturating_sub(window.start).as_secs_f64())
            .sum();
        Self {
            ok: latencies.len(),
            errors,
            per_second: if seconds > 0.0 {
                latencies.len() as f64 / seconds
            } else {
                0.0
            },
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or_default(),
            first_error: if errors > 0 {
                recording.first_error.clone()
            } else {
                None
            },
            cpu: None,
        }
    }
}

/// A latency in milliseconds, with the precision it deserves.
pub fn ms(duration: Duration) -> String {
    let millis = duration.as_secs_f64() * 1000.0;
    if millis < 1.0 {
        format!("{millis:.3} ms")
    } else if millis < 100.0 {
        format!("{millis:.2} ms")
    } else {
        format!("{millis:.0} ms")
    }
}

/// The nearest-rank percentile `q` (0 to 1) of sorted values.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&values, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&values[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn latencies_keep_three_significant_figures_or_so() {
        assert_eq!(ms(Duration::from_micros(412)), "0.412 ms");
        assert_eq!(ms(Duration::from_micros(12_345)), "12.35 ms");
        assert_eq!(ms(Duration::from_millis(1234)), "1234 ms");
    }

    #[test]
    fn only_samples_inside_the_windows_count() {
        let mut recording = Recording::default();
        for at in 0..10u64 {
            recording.record(
                Duration::from_secs(at),
                Duration::from_millis(at + 1),
                Ok(()),
            );
        }
        recording.record(Duration::from_secs(3), Duration::ZERO, Err("boom".into()));
        let stats = Stats::of(
            &recording,
            &[
                Duration::from_secs(2)..Duration::from_secs(4),
                Duration::from_secs(8)..Duration::from_secs(9),
            ],
        );
        assert_eq!(stats.ok, 3);
        assert_eq!(stats.errors, 1);
        assert_eq!(stats.first_error.as_deref(), Some("boom"));
        assert!((stats.per_second - 1.0).abs() < 1e-9);
        assert_eq!(stats.max, Duration::from_millis(9));
    }
}
