//! The Markdown tables the run prints, ready to paste into BENCHMARKS.md,
//! and the verdict on each goal.

use std::{fmt::Write as _, time::Duration};

use crate::{burst, load::Stats, server::Memory};

/// The least server throughput, as a share of the baseline's.
pub const THROUGHPUT_GOAL: f64 = 0.7;
/// The most `me` p99 may grow while logins are in flight.
pub const STARVATION_GOAL: f64 = 2.0;

/// One hot path on one backend: the server and the baseline.
#[derive(Debug, Clone)]
pub struct HotPath {
    /// What was called.
    pub scenario: &'static str,
    /// Where sessions lived.
    pub backend: &'static str,
    /// slop-server's numbers.
    pub server: Stats,
    /// The baseline's numbers.
    pub baseline: Stats,
}

impl HotPath {
    /// Server requests/s ÷ baseline requests/s.
    pub fn ratio(&self) -> f64 {
        if self.baseline.per_second > 0.0 {
            self.server.per_second / self.baseline.per_second
        } else {
            0.0
        }
    }
}

/// One run of the burst test.
#[derive(Debug, Clone)]
pub struct Burst {
    /// How `me` was driven, e.g. "closed loop, 4 tasks".
    pub load: String,
    /// Logins per burst.
    pub logins: usize,
    /// What was found.
    pub outcome: burst::Outcome,
    /// The server's memory before this run's bursts, where /proc says.
    pub memory_before: Option<Memory>,
    /// And after them.
    pub memory_after: Option<Memory>,
}

impl Burst {
    /// `me` p99 during the bursts ÷ idle p99.
    pub fn ratio(&self) -> f64 {
        let idle = self.outcome.idle.p99.as_secs_f64();
        if idle > 0.0 {
            self.outcome.during.p99.as_secs_f64() / idle
        } else {
            0.0
        }
    }
}

/// KiB as MiB, or a dash when unknown.
fn mebibytes(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "—".to_owned(),
        |kib| format!("{} MiB", (kib + 512) / 1024),
    )
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

fn cells(stats: &Stats) -> String {
    format!(
        "{:.0} | {} | {} | {} | {}",
        stats.per_second,
        ms(stats.p50),
        ms(stats.p99),
        ms(stats.max),
        stats.errors
    )
}

/// CPU time per request in microseconds, or a dash.
fn cpu_cell(stats: &Stats) -> String {
    stats.cpu_per_request().map_or_else(
        || "—".into(),
        |cpu| format!("{:.0} µs", cpu.as_secs_f64() * 1e6),
    )
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

/// The report: settings, tables, goals, and any errors seen. Returns it
/// with whether every request succeeded.
pub fn render(settings: &str, hot_paths: &[HotPath], bursts: &[Burst]) -> (String, bool) {
    let mut out = String::new();
    let mut errors = Vec::new();
    let _ = writeln!(out, "{settings}\n");

    if !hot_paths.is_empty() {
        let _ = writeln!(
            out,
            "| scenario | backend | target | req/s | p50 | p99 | max | errors | CPU per request | ratio vs baseline |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for row in hot_paths {
            let _ = writeln!(
                out,
                "| {} | {} | slop-server | {} | {} | **{:.2}** |",
                row.scenario,
                row.backend,
                cells(&row.server),
                cpu_cell(&row.server),
                row.ratio()
            );
            let _ = writeln!(
                out,
                "| {} | {} | baseline | {} | {} | 1.00 |",
                row.scenario,
                row.backend,
                cells(&row.baseline),
                cpu_cell(&row.baseline)
            );
            for (target, stats) in [("slop-server", &row.server), ("baseline", &row.baseline)] {
                if let Some(error) = &stats.first_error {
                    errors.push(format!(
                        "{} ({}, {target}): {} errors, first: {error}",
                        row.scenario, row.backend, stats.errors
                    ));
                }
            }
        }
    }

    if !bursts.is_empty() {
        let _ = writeln!(
            out,
            "\n| `me` load (memory backend) | phase | requests | req/s | p50 | p99 | max | errors | p99 ÷ idle p99 |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for burst in bursts {
            let outcome = &burst.outcome;
            let lengths: Vec<String> = outcome
                .burst_lengths
                .iter()
                .map(|length| format!("{:.1} s", length.as_secs_f64()))
                .collect();
            let _ = writeln!(
                out,
                "| {} | idle | {} | {} | 1.00 |",
                burst.load,
                outcome.idle.ok,
                cells(&outcome.idle)
            );
            let _ = writeln!(
                out,
                "| {} | during {} × {} concurrent logins ({}) | {} | {} | **{:.2}** |",
                burst.load,
                outcome.burst_lengths.len(),
                burst.logins,
                lengths.join(", "),
                outcome.during.ok,
                cells(&outcome.during),
                burst.ratio()
            );
            let _ = writeln!(
                out,
                "| ↳ the logins themselves (`POST /api/v1/auth/login`) | during | {} | {} | — |",
                outcome.logins.ok,
                cells(&outcome.logins)
            );
            for (phase, stats) in [
                ("idle", &outcome.idle),
                ("during", &outcome.during),
                ("logins", &outcome.logins),
            ] {
                if let Some(error) = &stats.first_error {
                    errors.push(format!(
                        "burst, {} ({phase}): {} errors, first: {error}",
                        burst.load, stats.errors
                    ));
                }
            }
        }
    }

    if bursts
        .iter()
        .any(|burst| burst.memory_before.is_some() || burst.memory_after.is_some())
    {
        let _ = writeln!(
            out,
            "\n| server memory (`/proc/<pid>/status`) | VmRSS before the bursts | VmRSS after | VmHWM (peak) after |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for burst in bursts {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                burst.load,
                mebibytes(burst.memory_before.map(|memory| memory.resident_kib)),
                mebibytes(burst.memory_after.map(|memory| memory.resident_kib)),
                mebibytes(burst.memory_after.map(|memory| memory.peak_kib)),
            );
        }
    }

    let _ = writeln!(out, "\nGoals:\n");
    for row in hot_paths {
        let ratio = row.ratio();
        let _ = writeln!(
            out,
            "- {}, {}: {ratio:.2}× the baseline's req/s (goal ≥ {THROUGHPUT_GOAL}): {}",
            row.scenario,
            row.backend,
            verdict(ratio >= THROUGHPUT_GOAL)
        );
    }
    for burst in bursts {
        let ratio = burst.ratio();
        let _ = writeln!(
            out,
            "- `me` p99 during {} concurrent logins, {}: {} vs {} idle = {ratio:.2}× (goal ≤ {STARVATION_GOAL}×): {}",
            burst.logins,
            burst.load,
            ms(burst.outcome.during.p99),
            ms(burst.outcome.idle.p99),
            verdict(ratio <= STARVATION_GOAL)
        );
    }
    if !errors.is_empty() {
        let _ = writeln!(out, "\nErrors:\n");
        for error in &errors {
            let _ = writeln!(out, "- {error}");
        }
    }
    (out, errors.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_keep_three_significant_figures_or_so() {
        assert_eq!(ms(Duration::from_micros(412)), "0.412 ms");
        assert_eq!(ms(Duration::from_micros(12_345)), "12.35 ms");
        assert_eq!(ms(Duration::from_millis(1234)), "1234 ms");
    }

    #[test]
    fn memory_is_in_mebibytes() {
        assert_eq!(mebibytes(Some(675_840)), "660 MiB");
        assert_eq!(mebibytes(Some(19_967)), "19 MiB");
        assert_eq!(mebibytes(None), "—");
    }
}
