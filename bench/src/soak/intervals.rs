//! One interval of the soak, as measured and as a row of the Markdown
//! table: the server's resident memory at its end, each kind of request's
//! statistics over it, and the CPU time used in it.

use std::{ops::Range, time::Duration};

use crate::load::{Recording, Stats, ms};

/// What was recorded in one interval, by kind.
#[derive(Debug, Default)]
pub(super) struct Recordings {
    pub(super) me: Recording,
    pub(super) publish: Recording,
    pub(super) deliveries: Recording,
    pub(super) logins: Recording,
}

/// One interval's figures.
#[derive(Debug, Clone)]
pub struct Interval {
    /// `warm-up`, or the interval's number from 1.
    pub name: String,
    /// From the start of the soak's load (after the capacity was measured).
    pub window: Range<Duration>,
    /// The server's `VmRSS` at the interval's end, in KiB.
    pub rss_kib: Option<u64>,
    /// `GET /api/v1/auth/me`, paced.
    pub me: Stats,
    /// `Publish` calls, to the users' channels and to the topic.
    pub publish: Stats,
    /// Events received by the sockets (at their receipt, from the start of
    /// their `Publish` call), and the sockets' failures.
    pub deliveries: Stats,
    /// Logins.
    pub logins: Stats,
    /// The server's CPU time over the interval.
    pub server_cpu: Option<Duration>,
    /// This benchmark's own CPU time over it: what the server did not get.
    pub bench_cpu: Option<Duration>,
}

impl Interval {
    /// The interval `name` over `window`, from what was recorded in it:
    /// every sample of `recordings` counts (each is cut at the interval's
    /// end, so none is left out for starting a moment late), and rates are
    /// over the window's length.
    pub(super) fn of(
        name: String,
        window: Range<Duration>,
        recordings: &Recordings,
        rss_kib: Option<u64>,
        (server_cpu, bench_cpu): (Option<Duration>, Option<Duration>),
    ) -> Self {
        let seconds = window.end.saturating_sub(window.start).as_secs_f64();
        let stats = |recording| {
            let stats = Stats::of(recording, &[Duration::ZERO..Duration::MAX]);
            Stats {
                per_second: if seconds > 0.0 {
                    stats.ok as f64 / seconds
                } else {
                    0.0
                },
                ..stats
            }
        };
        Self {
            name,
            me: stats(&recordings.me),
            publish: stats(&recordings.publish),
            deliveries: stats(&recordings.deliveries),
            logins: stats(&recordings.logins),
            window,
            rss_kib,
            server_cpu,
            bench_cpu,
        }
    }

    /// Failures of every kind.
    pub fn errors(&self) -> usize {
        self.me.errors + self.publish.errors + self.deliveries.errors + self.logins.errors
    }

    /// The first failure seen, if any.
    pub fn first_error(&self) -> Option<&str> {
        [&self.me, &self.publish, &self.deliveries, &self.logins]
            .into_iter()
            .find_map(|stats| stats.first_error.as_deref())
    }

    /// CPU time as a share of one CPU over the interval, in percent.
    fn percent(&self, cpu: Option<Duration>) -> String {
        let length = self.window.end.saturating_sub(self.window.start);
        match cpu {
            Some(cpu) if !length.is_zero() => {
                format!("{:.0} %", 100.0 * cpu.as_secs_f64() / length.as_secs_f64())
            }
            _ => "n/a".into(),
        }
    }

    /// The table's header, then its alignment row.
    pub const HEADER: &str = "| Interval | End | Server RSS | `me` req/s | `me` p50 | `me` p99 | Publish p50 | Publish p99 | Deliveries/s | Delivery p50 | Delivery p99 | Logins | Errors | Server CPU | Bench CPU |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

    /// The interval as a row of the table under [`Interval::HEADER`].
    pub fn row(&self) -> String {
        let end = self.window.end.as_secs();
        format!(
            "| {} | {}:{:02} | {} | {:.0} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            self.name,
            end / 60,
            end % 60,
            self.rss_kib.map_or("n/a".into(), mebibytes),
            self.me.per_second,
            ms(self.me.p50),
            ms(self.me.p99),
            ms(self.publish.p50),
            ms(self.publish.p99),
            self.deliveries.per_second,
            ms(self.deliveries.p50),
            ms(self.deliveries.p99),
            self.logins.ok,
            self.errors(),
            self.percent(self.server_cpu),
            self.percent(self.bench_cpu),
        )
    }
}

/// KiB as MiB with one decimal: a 5 % change of a 100 MiB server shows.
pub(super) fn mebibytes(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_counts_each_kind_it_recorded_and_renders_a_row() {
        let secs = Duration::from_secs;
        let mut recordings = Recordings::default();
        // One started a moment after the interval's end counts too.
        for at in 30..41 {
            recordings
                .me
                .record(secs(at), Duration::from_micros(800 + at * 10), Ok(()));
        }
        recordings
            .publish
            .record(secs(31), Duration::from_millis(2), Ok(()));
        recordings
            .deliveries
            .record(secs(35), Duration::from_millis(40), Ok(()));
        recordings
            .deliveries
            .record(secs(36), Duration::ZERO, Err("closed: 1001 x".into()));
        recordings
            .logins
            .record(secs(33), Duration::from_millis(90), Ok(()));
        let interval = Interval::of(
            "2".into(),
            secs(30)..secs(40),
            &recordings,
            Some(102_400),
            (Some(Duration::from_secs(5)), None),
        );
        assert_eq!(interval.me.ok, 11);
        assert_eq!(interval.errors(), 1);
        assert_eq!(interval.first_error(), Some("closed: 1001 x"));
        assert_eq!(
            interval.row(),
            "| 2 | 0:40 | 100.0 MiB | 1 | 1.15 ms | 1.20 ms | 2.00 ms | 2.00 ms | 0 | 40.00 ms | 40.00 ms | 1 | 1 | 50 % | n/a |"
        );
        assert_eq!(
            Interval::HEADER
                .lines()
                .next()
                .unwrap()
                .matches('|')
                .count(),
            interval.row().matches('|').count()
        );
    }
}
