//! The mail queue: requests hand a message over and answer at once; one
//! background task delivers, a few at a time, and retries what failed.
//!
//! - Bounded: at most [`QUEUE_CAPACITY`] mails wait (queued, being sent, or
//!   waiting for a retry). Past it a mail is dropped, logged and counted
//!   (`reason="queue_full"`): a dead relay cannot grow the memory.
//! - Retried: a failure that may pass (a refused connection, a timeout, a
//!   4xx reply) is tried again after MAIL_RETRY_DELAY, then twice that,
//!   and so on, each with ±50 % jitter so instances do not retry in step,
//!   for [`MAX_ATTEMPTS`] attempts in all. A 5xx refusal is not retried.
//! - Counted: `slop_mail_sent_total{kind}`, `slop_mail_failures_total{kind,
//!   reason}` (each failed attempt under its class, and each mail given up
//!   once more: `gave_up`, `queue_full`, `shutdown`), and
//!   `slop_mail_queue_depth`.
//! - Drained at shutdown: what waits gets one more attempt within the time
//!   left; the rest is logged as not sent, by count only.
//!
//! A log line of a mail says its kind, the keyed hash of its recipient,
//! the attempt and the failure's class; never the address, the subject,
//! the body, a link or a token.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use lettre::Message;
use tokio::{
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
    time::Instant,
};

use super::{
    MailKind,
    transport::{Failure, Transport},
};

/// How many mails may wait at once.
pub const QUEUE_CAPACITY: usize = 1000;

/// How many attempts a mail gets.
pub const MAX_ATTEMPTS: u32 = 5;

/// How many deliveries run at once.
const MAX_IN_FLIGHT: usize = 4;

/// One mail on its way.
pub struct Job {
    /// The message.
    pub message: Message,
    /// What it is about.
    pub kind: MailKind,
    /// The keyed hash of its recipient: all a log says of who.
    pub recipient: String,
    /// Attempts made so far.
    pub attempts: u32,
}

/// Why a mail was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// [`QUEUE_CAPACITY`] mails are waiting already.
    Full,
    /// The queue has been drained: the server is stopping.
    Stopped,
}

/// The sending side of the queue, and the handle of its worker.
pub struct MailQueue {
    jobs: mpsc::Sender<Job>,
    pending: Arc<AtomicUsize>,
    capacity: usize,
    drain: watch::Sender<Option<Instant>>,
    worker: Mutex<Option<JoinHandle<usize>>>,
}

impl MailQueue {
    /// Starts the worker delivering through `transport`; the first retry
    /// waits `retry_delay`. At most `capacity` mails wait.
    pub fn start(transport: Transport, retry_delay: Duration, capacity: usize) -> Self {
        let (jobs, receiver) = mpsc::channel(capacity.max(1));
        let pending = Arc::new(AtomicUsize::new(0));
        let (drain, drain_order) = watch::channel(None);
        let worker = Worker {
            transport: Arc::new(transport),
            retry_delay,
            pending: pending.clone(),
            waiting: Vec::new(),
            in_flight: JoinSet::new(),
            deadline: None,
            not_sent: 0,
            held: [0; MailKind::ALL.len()],
        };
        let worker = tokio::spawn(worker.run(receiver, drain_order));
        set_depth(0);
        Self {
            jobs,
            pending,
            capacity,
            drain,
            worker: Mutex::new(Some(worker)),
        }
    }

    /// Queues `job`, unless the queue is full or stopped.
    pub fn push(&self, job: Job) -> Result<(), Refused> {
        let before = self.pending.fetch_add(1, Ordering::SeqCst);
        if before >= self.capacity {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(Refused::Full);
        }
        match self.jobs.try_send(job) {
            Ok(()) => {
                set_depth(before + 1);
                Ok(())
            }
            Err(error) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                Err(match error {
                    mpsc::error::TrySendError::Full(_) => Refused::Full,
                    mpsc::error::TrySendError::Closed(_) => Refused::Stopped,
                })
            }
        }
    }

    /// Gives what waits one more attempt within `budget`, then stops the
    /// worker; answers how many mails were not sent (logged, by count).
    pub async fn drain(&self, budget: Duration) -> usize {
        let Some(worker) = self
            .worker
            .lock()
            .map(|mut worker| worker.take())
            .unwrap_or_default()
        else {
            return 0;
        };
        let _ = self.drain.send(Some(Instant::now() + budget));
        // The worker stops itself at the deadline; the margin covers a
        // loaded machine.
        match tokio::time::timeout(budget + Duration::from_secs(1), worker).await {
            Ok(Ok(left)) => left,
            Ok(Err(error)) => {
                tracing::error!(%error, "the mail queue's worker failed");
                self.pending.load(Ordering::SeqCst)
            }
            Err(_) => self.pending.load(Ordering::SeqCst),
        }
    }
}

/// The background task's state.
struct Worker {
    transport: Arc<Transport>,
    retry_delay: Duration,
    pending: Arc<AtomicUsize>,
    /// Mails waiting for their next attempt, with when it is due.
    waiting: Vec<(Instant, Job)>,
    in_flight: JoinSet<(Job, Result<(), Failure>)>,
    /// Set when the drain begins.
    deadline: Option<Instant>,
    /// Mails given up during the drain.
    not_sent: usize,
    /// Mails taken from the channel and not done with, by kind.
    held: [usize; MailKind::ALL.len()],
}

impl Worker {
    async fn run(
        mut self,
        mut jobs: mpsc::Receiver<Job>,
        mut drain: watch::Receiver<Option<Instant>>,
    ) -> usize {
        let mut open = true;
        loop {
            let draining = self.deadline.is_some();
            if draining && self.in_flight.is_empty() && self.waiting.is_empty() && jobs.is_empty() {
                break;
            }
            self.start_due();
            let next_due = self.waiting.iter().map(|(due, _)| *due).min();
            let room = self.in_flight.len() < MAX_IN_FLIGHT;
            tokio::select! {
                job = jobs.recv(), if room && open => match job {
                    Some(job) => {
                        self.held[job.kind.index()] += 1;
                        self.start(job);
                    }
                    None => open = false,
                },
                Some(done) = self.in_flight.join_next() => match done {
                    Ok((job, outcome)) => self.finish(job, outcome),
                    // A panic in a delivery: its mail stays counted as
                    // waiting, and is reported as not sent at shutdown.
                    Err(error) => tracing::error!(%error, "a mail delivery task failed"),
                },
                () = sleep_until(next_due), if next_due.is_some() && !draining => {}
                changed = drain.changed(), if !draining => {
                    let deadline = changed.ok().and_then(|()| *drain.borrow()).unwrap_or_else(Instant::now);
                    self.deadline = Some(deadline);
                    // Every mail waiting for a retry gets its last attempt now.
                    for (due, _) in &mut self.waiting {
                        *due = Instant::now();
                    }
                }
                () = sleep_until(self.deadline), if draining => break,
            }
        }
        // Stopped: nothing more is taken, and what is left is not sent.
        jobs.close();
        while let Ok(job) = jobs.try_recv() {
            self.held[job.kind.index()] += 1;
        }
        self.in_flight.abort_all();
        let mut left = self.not_sent;
        for kind in MailKind::ALL {
            let unsent = self.held[kind.index()];
            if unsent > 0 {
                metrics::counter!("slop_mail_failures_total", "kind" => kind.as_str(), "reason" => "shutdown")
                    .increment(unsent as u64);
                self.forget(unsent);
                left += unsent;
            }
        }
        if left > 0 {
            tracing::warn!(
                not_sent = left,
                "mail not sent: the server stopped before it could be delivered"
            );
        }
        left
    }

    /// Starts the waiting mails that are due, while there is room.
    fn start_due(&mut self) {
        let now = Instant::now();
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let Some(at) = self.waiting.iter().position(|(due, _)| *due <= now) else {
                return;
            };
            let (_, job) = self.waiting.swap_remove(at);
            self.start(job);
        }
    }

    fn start(&mut self, mut job: Job) {
        job.attempts += 1;
        let transport = self.transport.clone();
        self.in_flight.spawn(async move {
            let outcome = transport.deliver(&job.message).await;
            (job, outcome)
        });
    }

    fn finish(&mut self, job: Job, outcome: Result<(), Failure>) {
        let kind = job.kind.as_str();
        let recipient = &job.recipient;
        let attempt = job.attempts;
        let failure = match outcome {
            Ok(()) => {
                self.done_with(job.kind);
                metrics::counter!("slop_mail_sent_total", "kind" => kind).increment(1);
                tracing::info!(kind, %recipient, attempt, "mail sent");
                return;
            }
            Err(failure) => failure,
        };
        metrics::counter!("slop_mail_failures_total", "kind" => kind, "reason" => failure.reason)
            .increment(1);
        let Failure {
            reason,
            code,
            detail,
            retry,
        } = &failure;
        let draining = self.deadline.is_some();
        if *retry && attempt < MAX_ATTEMPTS && !draining {
            let delay = jittered(self.retry_delay * 2u32.saturating_pow(attempt - 1));
            tracing::warn!(
                kind,
                %recipient,
                attempt,
                reason,
                code,
                detail,
                retry_in_ms = delay.as_millis() as u64,
                "mail delivery failed; it will be retried"
            );
            self.waiting.push((Instant::now() + delay, job));
            return;
        }
        self.done_with(job.kind);
        let why = if draining {
            self.not_sent += 1;
            "shutdown"
        } else if *retry {
            "gave_up"
        } else {
            "rejected"
        };
        if why != "rejected" {
            metrics::counter!("slop_mail_failures_total", "kind" => kind, "reason" => why)
                .increment(1);
        }
        // At shutdown the count that follows is what matters.
        if draining {
            tracing::warn!(kind, %recipient, attempt, reason, code, detail, "mail not sent: the server is stopping");
        } else {
            tracing::error!(
                kind,
                %recipient,
                attempt,
                reason,
                code,
                detail,
                "mail not sent: {}",
                if *retry { "every attempt failed" } else { "the relay refused it for good" }
            );
        }
    }

    /// A mail of `kind` is done with, sent or not.
    fn done_with(&mut self, kind: MailKind) {
        self.held[kind.index()] -= 1;
        self.forget(1);
    }

    /// `count` mails are done with, sent or not.
    fn forget(&self, count: usize) {
        let before = self.pending.fetch_sub(count, Ordering::SeqCst);
        set_depth(before.saturating_sub(count));
    }
}

/// Resolves at `at`; never when None.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `delay` times a random factor in [0.5, 1.5).
fn jittered(delay: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    let random = match getrandom::fill(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes),
        Err(_) => u32::MAX / 2,
    };
    delay.mul_f64(0.5 + f64::from(random) / (f64::from(u32::MAX) + 1.0))
}

fn set_depth(depth: usize) {
    metrics::gauge!("slop_mail_queue_depth").set(depth as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_jitter_over_about_ten_minutes() {
        let base = Duration::from_secs(30);
        let mut total = Duration::ZERO;
        for attempt in 1..MAX_ATTEMPTS {
            let nominal = base * 2u32.pow(attempt - 1);
            let delay = jittered(nominal);
            assert!(delay >= nominal / 2 && delay < nominal * 3 / 2, "{delay:?}");
            total += nominal;
        }
        // 30 s + 1 min + 2 min + 4 min between the five attempts.
        assert_eq!(total, Duration::from_secs(450));
        let spread: std::collections::HashSet<_> =
            (0..20).map(|_| jittered(base).as_millis()).collect();
        assert!(spread.len() > 10, "jitter varies: {spread:?}");
    }
}
