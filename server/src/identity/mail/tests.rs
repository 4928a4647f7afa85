//! The outbox: allowances, the .eml directory, the queue's retries, drops
//! and drain, and what it counts.

use std::{path::PathBuf, sync::Arc, time::Duration};

use super::*;
use crate::infra::clock::ManualClock;

const THREE_AN_HOUR: Rate = Rate::new(3, Duration::from_secs(3600));

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("slop-outbox-{}", uuid::Uuid::new_v4().simple()))
}

fn delivery(dir: Option<PathBuf>) -> Delivery {
    Delivery {
        transport: dir.map(Transport::Directory),
        from: "Slop Studios <no-reply@example.com>".parse().unwrap(),
        retry_delay: Duration::from_millis(100),
    }
}

fn outbox(dir: Option<PathBuf>, limits: RateLimiter) -> Outbox {
    Outbox::new(
        delivery(dir),
        limits,
        THREE_AN_HOUR,
        Secret::from("outbox-test-key"),
    )
}

/// The files in `dir` once there are `count` (within a few seconds).
async fn settled(dir: &std::path::Path, count: usize) -> Vec<PathBuf> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mail_in(dir).len() < count && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    mail_in(dir)
}

fn mail_in(dir: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn directory_outbox_writes_one_private_eml_file_per_message() {
    let dir = temp_dir().join("mail");
    let outbox = outbox(
        Some(dir.clone()),
        RateLimiter::memory(ManualClock::starting_now()),
    );
    let reservation = outbox
        .reserve(" Ada@Example.com", MailKind::PasswordReset)
        .await
        .expect("within the allowance");
    outbox.send(
        reservation,
        "Reset your password",
        "https://app.example/reset?token=abc",
    );
    let files = settled(&dir, 1).await;
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("\r\nTo: ada@example.com\r\n"), "{text}");
    assert!(text.contains("\r\nMessage-ID: <"), "{text}");
    assert!(text.contains("token=abc"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files[0]), 0o600, "a reset link is a secret");
        assert_eq!(mode(&dir), 0o700);
    }
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn each_recipient_gets_its_allowance_and_it_refills() {
    let clock = ManualClock::starting_now();
    let dir = temp_dir();
    let outbox = outbox(Some(dir.clone()), RateLimiter::memory(clock.clone()));
    for kind in [
        MailKind::PasswordReset,
        MailKind::RegistrationAttempt,
        MailKind::PasswordReset,
    ] {
        let reservation = outbox.reserve("ada@example.com", kind).await;
        outbox.send(reservation.expect("within the allowance"), "s", "b");
    }
    // The address however written; any kind of mail.
    for (to, kind) in [
        ("ada@example.com", MailKind::PasswordReset),
        ("ADA@example.com ", MailKind::RegistrationAttempt),
    ] {
        assert!(outbox.reserve(to, kind).await.is_none(), "{to}");
    }
    assert!(
        outbox
            .reserve("grace@example.com", MailKind::PasswordReset)
            .await
            .is_some(),
        "another recipient has an allowance of its own"
    );
    clock.advance(Duration::from_secs(20 * 60));
    assert!(
        outbox
            .reserve("ada@example.com", MailKind::PasswordReset)
            .await
            .is_some()
    );
    assert_eq!(settled(&dir, 3).await.len(), 3);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn no_directory_drops_mail_but_still_counts_it() {
    let outbox = outbox(None, RateLimiter::memory(ManualClock::starting_now()));
    for _ in 0..3 {
        let reservation = outbox
            .reserve("ada@example.com", MailKind::PasswordReset)
            .await;
        outbox.send(reservation.unwrap(), "s", "b");
    }
    assert!(
        outbox
            .reserve("ada@example.com", MailKind::PasswordReset)
            .await
            .is_none()
    );
}

#[test]
fn recipient_hashes_are_keyed_and_say_nothing_of_the_address() {
    let limits = RateLimiter::memory(ManualClock::starting_now());
    let ours = outbox(None, limits.clone());
    let other = Outbox::new(
        delivery(None),
        limits,
        THREE_AN_HOUR,
        Secret::from("another-key"),
    );
    let hash = ours.recipient_hash("ada@example.com");
    assert_eq!(hash.len(), 16);
    assert_eq!(hash, ours.recipient_hash("ada@example.com"));
    assert_ne!(hash, ours.recipient_hash("grace@example.com"));
    assert_ne!(hash, other.recipient_hash("ada@example.com"));
    assert!(!hash.contains("ada"));
    let reservation = Reservation {
        to: "ada@example.com".into(),
        kind: MailKind::PasswordReset,
        recipient: hash,
    };
    assert!(!format!("{reservation:?}").contains("ada@"));
}

/// With Redis, instances share each recipient's allowance, and the keys
/// hold a keyed hash, not the address.
#[tokio::test]
async fn in_redis_the_allowance_is_shared_and_keys_hold_no_address() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("slop-test:{}:", uuid::Uuid::new_v4().simple());
    let clock = ManualClock::starting_now();
    // Two instances: a Redis context each.
    let connect = || {
        let context =
            crate::infra::redis_context::RedisContext::connect(&url, &prefix, clock.clone())
                .unwrap_or_else(|error| panic!("REDIS_URL {url}: {error}"));
        RateLimiter::redis(&context)
    };
    let (first, second) = (outbox(None, connect()), outbox(None, connect()));
    let outcome = tokio::spawn({
        let (first, second) = (first.clone(), second.clone());
        async move {
            for instance in [&first, &second, &first] {
                let reservation = instance
                    .reserve("ada@example.com", MailKind::PasswordReset)
                    .await;
                assert!(reservation.is_some());
            }
            assert!(
                second
                    .reserve("ada@example.com", MailKind::PasswordReset)
                    .await
                    .is_none(),
                "the allowance is shared by instances"
            );
        }
    })
    .await;

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    if !keys.is_empty() {
        let () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
    assert_eq!(keys.len(), 1, "{keys:?}");
    let hash = first.recipient_hash("ada@example.com");
    assert_eq!(keys[0], format!("{prefix}limit:mail-recipient:{hash}"));
    assert!(!keys[0].contains("ada") && !keys[0].contains("example"));
}

/// Counters and gauges as a Prometheus exporter would see them, for one
/// test: installed on its thread only (`metrics::with_local_recorder`).
#[derive(Default)]
struct Recorded(
    std::sync::Mutex<std::collections::HashMap<String, Arc<std::sync::atomic::AtomicU64>>>,
);

impl Recorded {
    fn cell(&self, key: &metrics::Key) -> Arc<std::sync::atomic::AtomicU64> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.0.lock().unwrap().entry(name).or_default().clone()
    }

    fn counter(&self, name: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |cell| cell.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn gauge(&self, name: &str) -> f64 {
        f64::from_bits(self.counter(name))
    }
}

impl metrics::Recorder for Recorded {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// Runs `test` on a runtime of this thread with `recorded` as the
/// metrics recorder, so the queue's task records into it too.
fn with_metrics<F: std::future::Future<Output = ()>>(recorded: &Recorded, test: F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(recorded, || runtime.block_on(test));
}

/// A directory that cannot be created until `unblock`: its parent is a
/// file. A real transport that fails for a while, as a relay that is down.
struct Blocked {
    base: PathBuf,
}

impl Blocked {
    fn new() -> Self {
        let base = temp_dir();
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("blocker"), b"").unwrap();
        Self { base }
    }

    fn dir(&self) -> PathBuf {
        self.base.join("blocker").join("mail")
    }

    fn unblock(&self) {
        std::fs::remove_file(self.base.join("blocker")).unwrap();
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn job(kind: MailKind) -> queue::Job {
    queue::Job {
        message: message::compose(
            &"no-reply@example.com".parse().unwrap(),
            "ada@example.com",
            "s",
            "b",
        )
        .unwrap(),
        kind,
        recipient: "hash".into(),
        attempts: 0,
    }
}

#[test]
fn a_failed_delivery_is_retried_with_back_off_and_counted() {
    let recorded = Recorded::default();
    with_metrics(&recorded, async {
        let blocked = Blocked::new();
        let outbox = outbox(
            Some(blocked.dir()),
            RateLimiter::memory(ManualClock::starting_now()),
        );
        let reservation = outbox
            .reserve("ada@example.com", MailKind::PasswordReset)
            .await
            .unwrap();
        let queued = std::time::Instant::now();
        outbox.send(reservation, "s", "b");
        assert!(
            queued.elapsed() < Duration::from_millis(50),
            "send returns at once"
        );
        // The first attempt fails at once; retries follow 100 ms, then
        // 200 ms, ... later (with jitter).
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(mail_in(&blocked.dir()).is_empty());
        blocked.unblock();
        assert_eq!(
            settled(&blocked.dir(), 1).await.len(),
            1,
            "delivered on a retry"
        );
        assert_eq!(outbox.drain(Duration::from_secs(1)).await, 0);
    });
    assert_eq!(
        recorded.counter("slop_mail_sent_total{kind=password_reset}"),
        1
    );
    let failures = recorded.counter("slop_mail_failures_total{kind=password_reset,reason=io}");
    assert!((1..5).contains(&failures), "{failures} failed attempts");
    assert_eq!(recorded.gauge("slop_mail_queue_depth{}"), 0.0);
}

#[test]
fn a_mail_is_given_up_after_five_attempts() {
    let recorded = Recorded::default();
    with_metrics(&recorded, async {
        let blocked = Blocked::new();
        let queue = queue::MailQueue::start(
            Transport::Directory(blocked.dir()),
            Duration::from_millis(10),
            10,
        );
        queue.push(job(MailKind::RegistrationAttempt)).unwrap();
        // 10 + 20 + 40 + 80 ms of back-off, at most 1.5 times that.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(queue.drain(Duration::from_secs(1)).await, 0, "nothing left");
    });
    let counter = |reason: &str| {
        recorded.counter(&format!(
            "slop_mail_failures_total{{kind=registration_attempt,reason={reason}}}"
        ))
    };
    assert_eq!(counter("io"), u64::from(queue::MAX_ATTEMPTS));
    assert_eq!(counter("gave_up"), 1);
}

#[test]
fn a_full_queue_drops_and_a_drained_one_refuses() {
    let recorded = Recorded::default();
    with_metrics(&recorded, async {
        let blocked = Blocked::new();
        let queue = queue::MailQueue::start(
            Transport::Directory(blocked.dir()),
            Duration::from_secs(3600),
            2,
        );
        assert_eq!(queue.push(job(MailKind::PasswordReset)), Ok(()));
        assert_eq!(queue.push(job(MailKind::PasswordReset)), Ok(()));
        assert_eq!(
            queue.push(job(MailKind::PasswordReset)),
            Err(queue::Refused::Full)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            queue.push(job(MailKind::PasswordReset)),
            Err(queue::Refused::Full),
            "mail waiting for a retry still takes its place"
        );
        // Drained: each gets one last attempt, which fails; both are left.
        assert_eq!(queue.drain(Duration::from_millis(500)).await, 2);
        assert_eq!(
            queue.push(job(MailKind::PasswordReset)),
            Err(queue::Refused::Stopped)
        );
    });
    assert_eq!(
        recorded.counter("slop_mail_failures_total{kind=password_reset,reason=shutdown}"),
        2
    );
    assert_eq!(recorded.gauge("slop_mail_queue_depth{}"), 0.0);
}

#[tokio::test]
async fn a_drain_delivers_what_waits_when_it_can() {
    let blocked = Blocked::new();
    let queue = queue::MailQueue::start(
        Transport::Directory(blocked.dir()),
        Duration::from_secs(3600),
        10,
    );
    for _ in 0..3 {
        queue.push(job(MailKind::PasswordReset)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        mail_in(&blocked.dir()).is_empty(),
        "waiting an hour to retry"
    );
    blocked.unblock();
    assert_eq!(queue.drain(Duration::from_secs(5)).await, 0);
    assert_eq!(mail_in(&blocked.dir()).len(), 3);
}

#[tokio::test]
async fn without_a_transport_mail_is_counted_as_not_sent() {
    let outbox = outbox(None, RateLimiter::memory(ManualClock::starting_now()));
    let reservation = outbox
        .reserve("ada@example.com", MailKind::PasswordReset)
        .await
        .unwrap();
    outbox.send(reservation, "s", "b");
    assert_eq!(outbox.drain(Duration::ZERO).await, 0);
}
