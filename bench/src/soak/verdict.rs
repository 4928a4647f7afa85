//! The verdict on issue #13's soak goal, from the measured intervals (the
//! warm-up left out): RSS flat within 5 %, p99 flat, no error.
//!
//! Flat is judged against the first measured interval. RSS: the last
//! reading and the highest are at most [`RSS_GROWTH`] above the first. A
//! p99: the last interval's is at most [`P99_LAST`]× the first's, and the
//! line through every interval's p99 rises by at most [`P99_TREND`]× from
//! the first interval to the last. The line is Theil–Sen's (the median of
//! the slopes between every pair of intervals): one noisy interval on a
//! shared machine does not tilt it, a steady climb does.

use std::time::Duration;

use super::intervals::{Interval, mebibytes};
use crate::load::ms;

/// How far above the first reading the server's RSS may be, last or at
/// its highest.
pub const RSS_GROWTH: f64 = 0.05;
/// The most the last interval's p99 may be, as a multiple of the first's.
pub const P99_LAST: f64 = 1.5;
/// The most the p99 trend line may rise from the first interval to the
/// last, as a multiple.
pub const P99_TREND: f64 = 1.25;

/// The server's resident memory at the end of each measured interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rss {
    /// After the first interval, in KiB.
    pub first: u64,
    /// After the last, in KiB.
    pub last: u64,
    /// The lowest reading, in KiB.
    pub min: u64,
    /// The highest reading, in KiB.
    pub max: u64,
}

impl Rss {
    /// Of the readings, in order; None without any.
    fn of(readings: &[u64]) -> Option<Self> {
        Some(Self {
            first: *readings.first()?,
            last: *readings.last()?,
            min: *readings.iter().min()?,
            max: *readings.iter().max()?,
        })
    }

    /// `kib` relative to the first reading: 0.02 is 2 % above it.
    fn above_first(&self, kib: u64) -> f64 {
        kib as f64 / self.first.max(1) as f64 - 1.0
    }

    /// Whether the last and the highest reading are within
    /// [`RSS_GROWTH`] of the first.
    pub fn flat(&self) -> bool {
        self.above_first(self.last) <= RSS_GROWTH && self.above_first(self.max) <= RSS_GROWTH
    }
}

/// One kind of request's p99, interval by interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    /// What was measured.
    pub name: &'static str,
    /// In the first measured interval.
    pub first: Duration,
    /// In the last.
    pub last: Duration,
    /// The trend line's value at the first interval and at the last, in
    /// milliseconds.
    pub trend: (f64, f64),
}

impl Latency {
    /// Of the p99s, in order; None when nothing was measured (every p99
    /// zero, as when this kind of request was not made).
    fn of(name: &'static str, p99s: &[Duration]) -> Option<Self> {
        if p99s.iter().all(Duration::is_zero) {
            return None;
        }
        let millis: Vec<f64> = p99s.iter().map(|p99| p99.as_secs_f64() * 1e3).collect();
        Some(Self {
            name,
            first: *p99s.first()?,
            last: *p99s.last()?,
            trend: theil_sen(&millis),
        })
    }

    /// The last interval's p99 over the first's.
    fn last_ratio(&self) -> f64 {
        self.last.as_secs_f64() / self.first.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Whether the last p99 is within [`P99_LAST`]× the first and the
    /// trend line rises by at most [`P99_TREND`]×.
    pub fn flat(&self) -> bool {
        let (start, end) = self.trend;
        self.last_ratio() <= P99_LAST && end <= P99_TREND * start
    }
}

/// The verdict of one soak.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The server's RSS; None if /proc could not be read.
    pub rss: Option<Rss>,
    /// The p99s judged: `me`, Publish, delivery.
    pub latencies: Vec<Latency>,
    /// Failures of every kind, over the whole run.
    pub errors: usize,
    /// The first of them.
    pub first_error: Option<String>,
    /// Messages the sockets should have received, and did not.
    pub lost: u64,
    /// Messages the sockets should have received.
    pub expected: u64,
}

impl Verdict {
    /// Judges the `measured` intervals; `errors` are the failures outside
    /// them (how many, the first), `expected` and `delivered` the messages
    /// over the whole run.
    pub fn judge(
        measured: &[Interval],
        errors: (usize, Option<String>),
        expected: u64,
        delivered: u64,
    ) -> Self {
        let readings: Option<Vec<u64>> = measured.iter().map(|i| i.rss_kib).collect();
        let p99s = |stats: fn(&Interval) -> Duration| -> Vec<Duration> {
            measured.iter().map(stats).collect()
        };
        let latencies = [
            Latency::of("`me`", &p99s(|i| i.me.p99)),
            Latency::of("Publish", &p99s(|i| i.publish.p99)),
            Latency::of("delivery", &p99s(|i| i.deliveries.p99)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let (outside, first_outside) = errors;
        Self {
            rss: readings.as_deref().and_then(Rss::of),
            latencies,
            errors: outside + measured.iter().map(Interval::errors).sum::<usize>(),
            first_error: measured
                .iter()
                .find_map(|i| i.first_error().map(str::to_owned))
                .or(first_outside),
            lost: expected.saturating_sub(delivered),
            expected,
        }
    }

    /// Nothing failed and nothing was lost.
    pub fn clean(&self) -> bool {
        self.errors == 0 && self.lost == 0
    }

    /// Every part of the goal holds.
    pub fn met(&self) -> bool {
        self.clean()
            && self.rss.is_some_and(|rss| rss.flat())
            && self.latencies.iter().all(Latency::flat)
    }

    /// The verdict in Markdown: a line per part of the goal, how it is
    /// judged, and the outcome.
    pub fn render(&self, intervals: usize) -> String {
        let mark = |met: bool| if met { "met" } else { "**not met**" };
        let mut out = format!(
            "Verdict against issue #13's soak goal (RSS flat within 5 %, p99 flat, no error), over the {intervals} measured intervals:\n\n"
        );
        match &self.rss {
            Some(rss) => {
                out += &format!(
                    "- Server RSS: {} after interval 1, {} after the last ({:+.1} %), at most {} ({:+.1} %), at least {}: {}\n",
                    mebibytes(rss.first),
                    mebibytes(rss.last),
                    100.0 * rss.above_first(rss.last),
                    mebibytes(rss.max),
                    100.0 * rss.above_first(rss.max),
                    mebibytes(rss.min),
                    mark(rss.flat()),
                );
            }
            None => out += "- Server RSS: could not be read: **not met**\n",
        }
        for latency in &self.latencies {
            let (start, end) = latency.trend;
            out += &format!(
                "- {} p99: {} in interval 1, {} in the last ({:.2}×); trend line {start:.2} → {end:.2} ms ({:.2}×): {}\n",
                latency.name,
                ms(latency.first),
                ms(latency.last),
                latency.last_ratio(),
                end / start,
                mark(latency.flat()),
            );
        }
        out += &format!(
            "- Errors: {}{}; messages lost: {} of {}: {}\n",
            self.errors,
            self.first_error
                .as_ref()
                .map_or_else(String::new, |error| format!(" (the first: {error})")),
            self.lost,
            self.expected,
            mark(self.clean()),
        );
        out += &format!(
            "\nRSS is flat when the last and the highest reading are at most {:.0} % above the first; a p99 is flat when the last interval's is at most {P99_LAST}× the first's and the Theil–Sen line through every interval's p99 (the median of the slopes between each pair of intervals, which one noisy interval does not tilt) rises by at most {P99_TREND}× from the first interval to the last.\n\n**Goal {}.**\n",
            100.0 * RSS_GROWTH,
            if self.met() { "met" } else { "not met" },
        );
        out
    }
}

/// The Theil–Sen line through `values` (at 0, 1, 2…): its value at the
/// first point and at the last. The slope is the median of the slopes
/// between every pair of points, the intercept the median of what each
/// point leaves beside it.
fn theil_sen(values: &[f64]) -> (f64, f64) {
    let mut slopes = Vec::with_capacity(values.len() * values.len().saturating_sub(1) / 2);
    for (i, a) in values.iter().enumerate() {
        for (j, b) in values.iter().enumerate().skip(i + 1) {
            slopes.push((b - a) / (j - i) as f64);
        }
    }
    let slope = median(&mut slopes).unwrap_or(0.0);
    let mut intercepts: Vec<f64> = values
        .iter()
        .enumerate()
        .map(|(i, value)| value - slope * i as f64)
        .collect();
    let start = median(&mut intercepts).unwrap_or(0.0);
    (start, start + slope * values.len().saturating_sub(1) as f64)
}

/// The median (the mean of the middle two of an even count); None of none.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_unstable_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Stats;

    fn ms(millis: f64) -> Duration {
        Duration::from_secs_f64(millis / 1e3)
    }

    fn interval(rss_kib: u64, me_p99: f64, errors: usize) -> Interval {
        Interval {
            name: String::new(),
            window: Duration::ZERO..Duration::from_secs(30),
            rss_kib: Some(rss_kib),
            me: Stats {
                p99: ms(me_p99),
                errors,
                first_error: (errors > 0).then(|| "HTTP 401".to_owned()),
                ..Stats::default()
            },
            publish: Stats::default(),
            deliveries: Stats::default(),
            logins: Stats::default(),
            server_cpu: None,
            bench_cpu: None,
        }
    }

    #[test]
    fn the_trend_line_follows_a_climb_and_ignores_one_spike() {
        let (start, end) = theil_sen(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!((start - 1.0).abs() < 1e-9 && (end - 5.0).abs() < 1e-9);
        let (start, end) = theil_sen(&[2.0, 2.1, 9.0, 1.9, 2.0, 2.1]);
        assert!(
            (start - 2.0).abs() < 0.1 && (end - 2.0).abs() < 0.15,
            "{start} {end}"
        );
        assert_eq!(theil_sen(&[3.0]), (3.0, 3.0));
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn rss_is_flat_within_five_percent_of_the_first_reading_last_and_at_its_highest() {
        let flat = Rss::of(&[100_000, 103_000, 104_900, 101_000]).unwrap();
        assert!(flat.flat());
        assert_eq!((flat.min, flat.max), (100_000, 104_900));
        assert!(!Rss::of(&[100_000, 102_000, 105_100]).unwrap().flat());
        assert!(
            !Rss::of(&[100_000, 106_000, 101_000]).unwrap().flat(),
            "a peak"
        );
        assert!(
            Rss::of(&[100_000, 90_000]).unwrap().flat(),
            "memory returned"
        );
        assert_eq!(Rss::of(&[]), None);
    }

    #[test]
    fn a_p99_is_flat_unless_the_last_interval_or_the_trend_climbs() {
        let p99s = |values: &[f64]| values.iter().map(|v| ms(*v)).collect::<Vec<_>>();
        let flat = Latency::of("me", &p99s(&[2.0, 2.4, 1.8, 6.0, 2.1, 2.2])).unwrap();
        assert!(flat.flat(), "one noisy interval: {flat:?}");
        // Each step small, the last within 1.5× of the first, but a climb.
        let climb = Latency::of("me", &p99s(&[2.0, 2.2, 2.4, 2.6, 2.8, 2.95])).unwrap();
        assert!(climb.last_ratio() <= P99_LAST);
        assert!(!climb.flat(), "{climb:?}");
        let jump = Latency::of("me", &p99s(&[2.0, 2.0, 2.0, 2.0, 3.1])).unwrap();
        assert!(!jump.flat());
        assert_eq!(Latency::of("publish", &p99s(&[0.0, 0.0])), None);
    }

    #[test]
    fn the_goal_needs_flat_memory_flat_p99s_no_error_and_no_loss() {
        let good = [interval(100_000, 2.0, 0), interval(101_000, 2.1, 0)];
        let verdict = Verdict::judge(&good, (0, None), 1_000, 1_000);
        assert!(verdict.met() && verdict.clean());
        assert_eq!(
            verdict.latencies.len(),
            1,
            "publish and delivery unmeasured"
        );
        let rendered = verdict.render(2);
        assert!(rendered.contains("+1.0 %"), "{rendered}");
        assert!(rendered.contains("**Goal met.**"), "{rendered}");

        let lost = Verdict::judge(&good, (0, None), 1_000, 998);
        assert_eq!(lost.lost, 2);
        assert!(!lost.clean() && !lost.met());

        let failed = [interval(100_000, 2.0, 0), interval(100_000, 2.0, 3)];
        let verdict = Verdict::judge(&failed, (1, Some("closed".into())), 0, 0);
        assert_eq!(verdict.errors, 4);
        assert_eq!(verdict.first_error.as_deref(), Some("HTTP 401"));
        assert!(verdict.render(2).contains("**Goal not met.**"));

        let grew = [interval(100_000, 2.0, 0), interval(110_000, 2.0, 0)];
        let verdict = Verdict::judge(&grew, (0, None), 0, 0);
        assert!(verdict.clean() && !verdict.met());
    }
}
