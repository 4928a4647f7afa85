//! The soak of issue #13: the server held for a long while at half its
//! measured capacity, with everything a deployment does at once, to see
//! whether anything grows or slows with time.
//!
//! With the server started and its users signed in (`src/bin/soak.rs`), it
//! opens the WebSocket subscribers ([`subscribers`]) and holds them for the
//! whole run; measures the capacity, closed-loop `GET /api/v1/auth/me` for
//! a few seconds ([`crate::load::compare`]); then runs, all at once and
//! paced ([`crate::load::Load`]): `me` at a fraction of that capacity, a
//! backend service publishing over gRPC to the users' channels and to the
//! topic every socket follows ([`publisher`]), and logins of an account of
//! their own. Every interval it reads the server's RSS and CPU time and
//! cuts each kind of request's recording, to print a row of the table
//! ([`intervals`]) as it goes; at the end, the verdict on the goal
//! ([`verdict`]).
//!
//! A paced kind of request is cut by stopping its tasks and starting them
//! again at once: a task stops at its next tick without making the request
//! of that tick, and its successor makes it, so the pace goes on.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    client::{Login, RestMe, SignedIn},
    cpu::Meter,
    fanout::{self, Target, spread, ws::Socket},
    load::{self, Caller, Load, Recording, Stats, ms},
    server::ServerProcess,
};

pub mod intervals;
mod publisher;
mod subscribers;
pub mod verdict;

pub use intervals::Interval;
pub use verdict::Verdict;

use intervals::Recordings;
use publisher::Publisher;
use subscribers::{Deliveries, Followed, Readers};

/// Closed-loop `me` before the capacity is measured: connections warm.
const CAPACITY_WARMUP: Duration = Duration::from_secs(1);

/// The shortest period of a paced `me` task: well above the p99 of a
/// loaded server here, so that a slow answer seldom pushes a task's next
/// request back and the pace holds.
const PACED_PERIOD: Duration = Duration::from_millis(25);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// WebSocket subscribers, held for the whole run.
    pub sockets: usize,
    /// Sockets connect from 127.0.0.1 up to this many loopback addresses.
    pub addresses: u8,
    /// Sockets being opened at once.
    pub connect_concurrency: usize,
    /// `me` client tasks, one connection each, closed loop to measure the
    /// capacity; at least as many paced in the soak ([`me_tasks`]).
    pub concurrency: usize,
    /// How long the capacity is measured.
    pub capacity_duration: Duration,
    /// The share of the capacity `me` is paced at.
    pub fraction: f64,
    /// Events per second published to the users' own channels, one user
    /// after the other.
    pub user_rate: u32,
    /// Events per second published to the topic every socket follows.
    pub topic_rate: u32,
    /// Logins per minute.
    pub logins_per_minute: u32,
    /// Load before the first measured interval, reported as a row of its
    /// own and left out of the verdict.
    pub warmup: Duration,
    /// The measured intervals, each this long.
    pub interval: Duration,
    /// How many.
    pub intervals: u32,
    /// How long to wait after the last publish for deliveries.
    pub drain: Duration,
    /// The topic, `topic:<name>`.
    pub topic: String,
}

/// Who takes part, signed in on the server.
pub struct Parties<'a> {
    /// The server.
    pub server: &'a ServerProcess,
    /// The `me` caller.
    pub me: &'a SignedIn,
    /// The sockets' users: socket i is user i mod their count's.
    pub users: &'a [SignedIn],
    /// A key of SERVICE_KEYS, to publish with.
    pub service_key: &'a str,
    /// The account the logins sign in to (email, password): one whose
    /// sessions nothing else needs, as the server ends the least recently
    /// used beyond 100.
    pub login: (&'a str, &'a str),
}

/// What a soak found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Closed-loop `me`, before the soak.
    pub capacity: Stats,
    /// Every interval, the warm-up first.
    pub intervals: Vec<Interval>,
    /// The verdict over the measured intervals.
    pub verdict: Verdict,
}

/// Runs the plan, printing the table to stdout row by row and progress to
/// stderr; `settings` (the command, the machine) heads the table.
pub async fn run(plan: &Plan, parties: &Parties<'_>, settings: &str) -> Result<Outcome, String> {
    if parties.users.is_empty() {
        return Err("no users to open sockets for".into());
    }
    let addr = parties.server.addr;
    let origin = Instant::now();
    let deliveries = Arc::new(Deliveries::default());
    let started = Instant::now();
    let sockets = open_sockets(plan, parties).await?;
    eprintln!(
        "soak: {} sockets open and subscribed in {:.1}s",
        sockets.len(),
        started.elapsed().as_secs_f64()
    );
    let readers = Readers::start(sockets, origin, &deliveries);

    let outcome = async {
        let capacity = load::compare(
            vec![(
                RestMe::many(addr, &parties.me.access_token, plan.concurrency).await?,
                parties.server.meter(),
            )],
            CAPACITY_WARMUP,
            plan.capacity_duration,
            1,
        )
        .await?
        .pop()
        .ok_or("the capacity was not measured")?;
        let rate = capacity.per_second * plan.fraction;
        eprintln!(
            "soak: capacity {:.0} req/s closed loop (p99 {}, {} errors): `me` paced at {rate:.0} req/s",
            capacity.per_second,
            ms(capacity.p99),
            capacity.errors
        );
        if rate < 1.0 {
            return Err(format!(
                "`me` would be paced at {rate:.2} req/s: the capacity measured is {:.1} req/s ({})",
                capacity.per_second,
                capacity.first_error.as_deref().unwrap_or("no error")
            ));
        }
        let me = me_tasks(rate, plan.concurrency);
        println!(
            "{settings}\n\nCapacity: {:.0} `me` req/s closed loop ({} tasks, {}s after a {}s warm-up, p99 {}, {} errors) with the sockets open and idle; the soak paces `me` at {} of it, {rate:.0} req/s, from {} tasks each every {}.\n\n{}",
            capacity.per_second,
            plan.concurrency,
            plan.capacity_duration.as_secs_f64(),
            CAPACITY_WARMUP.as_secs_f64(),
            ms(capacity.p99),
            capacity.errors,
            plan.fraction,
            me.0,
            ms(me.1),
            Interval::HEADER,
        );
        // What the sockets met while the capacity was measured.
        let before = failures(&deliveries.take());
        let soak = soak(plan, parties, origin, me, &deliveries).await?;
        Ok::<_, String>((capacity, before, soak))
    }
    .await;
    eprintln!("soak: closing the sockets");
    readers.stop().await;
    let (capacity, before, (intervals, expected, after)) = outcome?;
    let leftover = failures(&deliveries.take());
    let warmup = intervals.first().map_or((0, None), |warmup| {
        (warmup.errors(), warmup.first_error().map(str::to_owned))
    });
    let outside = [failures_of(&capacity), before, warmup, after, leftover];
    let errors = (
        outside.iter().map(|(count, _)| count).sum(),
        outside.into_iter().find_map(|(_, first)| first),
    );
    let verdict = Verdict::judge(
        intervals.get(1..).unwrap_or_default(),
        errors,
        expected,
        deliveries.delivered(),
    );
    println!("\n{}", verdict.render(intervals.len().saturating_sub(1)));
    if let Some(memory) = parties.server.memory() {
        println!(
            "The server's peak RSS (VmHWM) over the run: {}.",
            intervals::mebibytes(memory.peak_kib)
        );
    }
    Ok(Outcome {
        capacity,
        intervals,
        verdict,
    })
}

/// How many of a recording's requests failed, and the first failure.
fn failures(recording: &Recording) -> (usize, Option<String>) {
    let count = recording.samples.iter().filter(|sample| !sample.ok).count();
    (count, recording.first_error.clone().filter(|_| count > 0))
}

/// How many requests failed, and the first failure.
fn failures_of(stats: &Stats) -> (usize, Option<String>) {
    (stats.errors, stats.first_error.clone())
}

/// Opens every socket (as the fan-out benchmark does: socket i is user i
/// mod the users', following the topic too), each with the channels it
/// follows.
async fn open_sockets(
    plan: &Plan,
    parties: &Parties<'_>,
) -> Result<Vec<(Socket, Followed)>, String> {
    let opening = fanout::Plan {
        subscribers: plan.sockets,
        addresses: plan.addresses,
        connect_concurrency: plan.connect_concurrency,
        rate: plan.topic_rate,
        duration: plan.interval * plan.intervals,
        drain: plan.drain,
        payload_bytes: 0,
        topics: vec![plan.topic.clone()],
    };
    let target = Target::Server {
        processes: std::slice::from_ref(parties.server),
        users: parties.users,
        service_key: parties.service_key,
        redis: None,
    };
    let tokens: Vec<String> = parties
        .users
        .iter()
        .map(|user| user.access_token.clone())
        .collect();
    let sockets = fanout::open_sockets(&opening, &target, &tokens).await?;
    Ok(sockets
        .into_iter()
        .map(|(i, socket)| {
            let user = &parties.users[spread::topic_of(i, parties.users.len())];
            let followed = Followed {
                own: format!("user:{}", user.user_id),
                topic: plan.topic.clone(),
            };
            (socket, followed)
        })
        .collect())
}

/// The soak proper, from `origin`'s clock (the sockets' too): every kind
/// of request paced (`me` from `tasks` tasks, each every `period`), the
/// warm-up and then each interval measured and printed. Answers the intervals, the messages the sockets should have
/// received, and the failures after the last interval.
async fn soak(
    plan: &Plan,
    parties: &Parties<'_>,
    origin: Instant,
    (tasks, period): (usize, Duration),
    deliveries: &Deliveries,
) -> Result<(Vec<Interval>, u64, (usize, Option<String>)), String> {
    let addr = parties.server.addr;
    let begin = origin.elapsed();
    let expected = Arc::new(AtomicU64::new(0));
    let grpc = publisher::connect(addr).await?;
    let publisher = |channels| {
        Publisher::new(
            grpc.clone(),
            parties.service_key,
            channels,
            origin,
            expected.clone(),
        )
        .map(|publisher| vec![publisher])
    };
    let per_second = |rate: u32| Duration::from_secs(1) / rate.max(1);

    let mut me = Paced::start(
        RestMe::many(addr, &parties.me.access_token, tasks).await?,
        origin,
        period,
    );
    let mut to_users = if plan.user_rate > 0 {
        Paced::start(
            publisher(followers_of_users(parties.users, plan.sockets))?,
            origin,
            per_second(plan.user_rate),
        )
    } else {
        Paced::none()
    };
    let mut to_topic = if plan.topic_rate > 0 {
        Paced::start(
            publisher(vec![(plan.topic.clone(), plan.sockets as u64)])?,
            origin,
            per_second(plan.topic_rate),
        )
    } else {
        Paced::none()
    };
    let mut logins = if plan.logins_per_minute > 0 {
        let (email, password) = parties.login;
        Paced::start(
            vec![Login::new(addr, email, password)],
            origin,
            Duration::from_secs(60) / plan.logins_per_minute,
        )
    } else {
        Paced::none()
    };

    let meters = (parties.server.meter(), Meter::Process(std::process::id()));
    let mut cpu = (meters.0.read(), meters.1.read());
    let mut intervals = Vec::new();
    let mut start = Duration::ZERO;
    let ends = std::iter::once(plan.warmup)
        .chain((1..=plan.intervals).map(|n| plan.warmup + plan.interval * n));
    for (n, end) in ends.enumerate() {
        tokio::time::sleep_until(origin + begin + end).await;
        let delivered = deliveries.take();
        let rss_kib = parties.server.memory().map(|memory| memory.resident_kib);
        let cpu_now = (meters.0.read(), meters.1.read());
        let used = |before: Option<Duration>, after: Option<Duration>| {
            Some(after?.saturating_sub(before?))
        };
        let cpu_used = (used(cpu.0, cpu_now.0), used(cpu.1, cpu_now.1));
        cpu = cpu_now;
        let again = n < plan.intervals as usize;
        let (me_cut, users_cut, topic_cut, logins_cut) = tokio::join!(
            me.cut(origin, again),
            to_users.cut(origin, again),
            to_topic.cut(origin, again),
            logins.cut(origin, again),
        );
        let mut publish = users_cut?;
        publish.merge(topic_cut?);
        let recordings = Recordings {
            me: me_cut?,
            publish,
            deliveries: delivered,
            logins: logins_cut?,
        };
        let name = if n == 0 {
            "warm-up".to_owned()
        } else {
            n.to_string()
        };
        let interval = Interval::of(name, start..end, &recordings, rss_kib, cpu_used);
        println!("{}", interval.row());
        eprintln!(
            "soak: {} of {}: RSS {}, `me` {:.0} req/s p99 {}, Publish p99 {}, delivery p99 {}, {} errors{}",
            interval.name,
            plan.intervals,
            rss_kib.map_or("n/a".into(), intervals::mebibytes),
            interval.me.per_second,
            ms(interval.me.p99),
            ms(interval.publish.p99),
            ms(interval.deliveries.p99),
            interval.errors(),
            interval
                .first_error()
                .map_or_else(String::new, |error| format!(" (first: {error})")),
        );
        intervals.push(interval);
        start = end;
    }

    let expected = expected.load(std::sync::atomic::Ordering::Relaxed);
    let drain_until = Instant::now() + plan.drain;
    while deliveries.delivered() < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((intervals, expected, failures(&deliveries.take())))
}

/// How many paced tasks make `rate` requests per second, and each one's
/// period: at least `concurrency` tasks, and enough that none has a period
/// under [`PACED_PERIOD`].
fn me_tasks(rate: f64, concurrency: usize) -> (usize, Duration) {
    let tasks = ((rate * PACED_PERIOD.as_secs_f64()).ceil() as usize).max(concurrency.max(1));
    (tasks, Duration::from_secs_f64(tasks as f64 / rate))
}

/// The users' channels, each with how many sockets follow it: socket i is
/// user i mod the users'.
fn followers_of_users(users: &[SignedIn], sockets: usize) -> Vec<(String, u64)> {
    users
        .iter()
        .enumerate()
        .map(|(u, user)| {
            let followers = (0..sockets)
                .filter(|&i| spread::topic_of(i, users.len()) == u)
                .count();
            (format!("user:{}", user.user_id), followers as u64)
        })
        .filter(|(_, followers)| *followers > 0)
        .collect()
}

/// One kind of request made at a steady pace by client tasks, or none.
struct Paced<C> {
    load: Option<Load<C>>,
    pace: Duration,
}

impl<C: Caller> Paced<C> {
    /// `callers`, each making a request every `pace`.
    fn start(callers: Vec<C>, origin: Instant, pace: Duration) -> Self {
        Self {
            load: Some(Load::start(callers, origin, Some(pace))),
            pace,
        }
    }

    /// No requests.
    fn none() -> Self {
        Self {
            load: None,
            pace: Duration::ZERO,
        }
    }

    /// Stops the tasks and answers what they recorded; with `again`,
    /// starts them again at once.
    async fn cut(&mut self, origin: Instant, again: bool) -> Result<Recording, String> {
        let Some(load) = self.load.take() else {
            return Ok(Recording::default());
        };
        let (callers, recording) = load.finish().await?;
        if again {
            self.load = Some(Load::start(callers, origin, Some(self.pace)));
        }
        Ok(recording)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> SignedIn {
        SignedIn {
            user_id: id.into(),
            session_id: String::new(),
            access_token: String::new(),
        }
    }

    #[test]
    fn paced_me_has_enough_tasks_to_keep_the_pace() {
        assert_eq!(
            me_tasks(6_500.0, 32),
            (163, Duration::from_secs_f64(163.0 / 6_500.0))
        );
        assert_eq!(me_tasks(100.0, 32), (32, Duration::from_millis(320)));
        let (tasks, period) = me_tasks(6_532.0, 32);
        assert!(period >= PACED_PERIOD);
        assert!((tasks as f64 / period.as_secs_f64() - 6_532.0).abs() < 0.01);
    }

    #[test]
    fn each_users_channel_reaches_that_users_sockets() {
        let users = [user("a"), user("b"), user("c")];
        assert_eq!(
            followers_of_users(&users, 7),
            [
                ("user:a".to_owned(), 3),
                ("user:b".to_owned(), 2),
                ("user:c".to_owned(), 2)
            ]
        );
        assert_eq!(followers_of_users(&users, 2).len(), 2, "c has no socket");
    }
}
