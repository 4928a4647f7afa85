//! The Markdown tables the run prints, ready to paste into BENCHMARKS.md,
//! and the verdict on each goal.

use std::fmt::Write as _;

pub use crate::load::ms;
use crate::{burst, load::Stats, server::Memory};

/// The least server throughput, as a share of the baseline's.
pub const THROUGHPUT_GOAL: f64 = 0.7;
/// The least server throughput, as a share of the floor's (issue #13).
pub const FLOOR_THROUGHPUT_GOAL: f64 = 0.7;
/// The most server p99, as a multiple of the floor's (issue #13).
pub const FLOOR_P99_GOAL: f64 = 1.5;
/// The most `me` p99 may grow while logins are in flight.
pub const STARVATION_GOAL: f64 = 2.0;

/// One hot path on one backend: the server, the same-work baseline and the
/// floor.
#[derive(Debug, Clone)]
pub struct HotPath {
    /// What was called.
    pub scenario: &'static str,
    /// Where sessions lived.
    pub backend: &'static str,
    /// slop-server's numbers.
    pub server: Stats,
    /// The same-work baseline's numbers.
    pub baseline: Stats,
    /// The floor's numbers.
    pub floor: Stats,
}

impl HotPath {
    /// Server requests/s ÷ baseline requests/s.
    pub fn ratio(&self) -> f64 {
        share(self.server.per_second, self.baseline.per_second)
    }

    /// Server requests/s ÷ floor requests/s.
    pub fn floor_ratio(&self) -> f64 {
        share(self.server.per_second, self.floor.per_second)
    }

    /// Server p99 ÷ `of`'s p99.
    pub fn p99_ratio(&self, of: &Stats) -> f64 {
        share(self.server.p99.as_secs_f64(), of.p99.as_secs_f64())
    }
}

/// `part ÷ whole`, or 0 when there is no whole to compare with.
fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
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
            "| scenario | backend | target | req/s | p50 | p99 | max | errors | CPU per request | ratio vs baseline | ratio vs floor |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in hot_paths {
            let targets = [
                ("slop-server", &row.server),
                ("baseline", &row.baseline),
                ("floor", &row.floor),
            ];
            for (target, stats) in targets {
                let versus = |of: &Stats| share(stats.per_second, of.per_second);
                let (baseline, floor) = (versus(&row.baseline), versus(&row.floor));
                let (baseline, floor) = if target == "slop-server" {
                    (format!("**{baseline:.2}**"), format!("**{floor:.2}**"))
                } else {
                    (format!("{baseline:.2}"), format!("{floor:.2}"))
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {target} | {} | {} | {baseline} | {floor} |",
                    row.scenario,
                    row.backend,
                    cells(stats),
                    cpu_cell(stats),
                );
                if let Some(error) = &stats.first_error {
                    errors.push(format!(
                        "{} ({}, {target}): {} errors, first: {error}",
                        row.scenario, row.backend, stats.errors
                    ));
                }
            }
        }
        let _ = writeln!(
            out,
            "\n| slop-server ÷ | backend | req/s ÷ floor | p99 ÷ floor | req/s ÷ baseline | p99 ÷ baseline |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
        for row in hot_paths {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                row.scenario,
                row.backend,
                row.floor_ratio(),
                row.p99_ratio(&row.floor),
                row.ratio(),
                row.p99_ratio(&row.baseline),
            );
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
        let (floor, p99) = (row.floor_ratio(), row.p99_ratio(&row.floor));
        let _ = writeln!(
            out,
            "- {}, {}: {floor:.2}× the floor's req/s (goal ≥ {FLOOR_THROUGHPUT_GOAL}), p99 {p99:.2}× the floor's (goal ≤ {FLOOR_P99_GOAL}): {}",
            row.scenario,
            row.backend,
            verdict(floor >= FLOOR_THROUGHPUT_GOAL && p99 <= FLOOR_P99_GOAL)
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
    use std::time::Duration;

    use super::*;

    fn stats(per_second: f64, p99_micros: u64) -> Stats {
        Stats {
            ok: 100,
            per_second,
            p99: Duration::from_micros(p99_micros),
            ..Stats::default()
        }
    }

    #[test]
    fn the_server_is_set_against_the_baseline_and_the_floor() {
        let row = HotPath {
            scenario: "REST me",
            backend: "redis",
            server: stats(3_000.0, 6_000),
            baseline: stats(4_000.0, 4_000),
            floor: stats(12_000.0, 2_000),
        };
        assert!((row.ratio() - 0.75).abs() < 1e-9);
        assert!((row.floor_ratio() - 0.25).abs() < 1e-9);
        assert!((row.p99_ratio(&row.floor) - 3.0).abs() < 1e-9);
        assert!((row.p99_ratio(&row.baseline) - 1.5).abs() < 1e-9);
        let (report, clean) = render("settings", &[row], &[]);
        assert!(clean);
        assert!(report.contains("| REST me | redis | slop-server | 3000 |"));
        assert!(report.contains("| **0.75** | **0.25** |"), "{report}");
        assert!(report.contains("| REST me | redis | floor | 12000 |"));
        assert!(report.contains("| 1.00 | 0.33 |"), "the baseline's row");
        assert!(report.contains("| 3.00 | 1.00 |"), "the floor's row");
        assert!(report.contains("| REST me | redis | 0.25 | 3.00 | 0.75 | 1.50 |"));
        assert!(report.contains(
            "0.25× the floor's req/s (goal ≥ 0.7), p99 3.00× the floor's (goal ≤ 1.5): **not met**"
        ));
    }

    #[test]
    fn no_floor_measured_is_no_ratio() {
        assert_eq!(share(1.0, 0.0), 0.0);
    }

    #[test]
    fn memory_is_in_mebibytes() {
        assert_eq!(mebibytes(Some(675_840)), "660 MiB");
        assert_eq!(mebibytes(Some(19_967)), "19 MiB");
        assert_eq!(mebibytes(None), "—");
    }
}
