//! The fan-out report: a Markdown table with a row per backend, whether
//! each row meets issue #4's goals, each server row against the baseline's
//! (issue #13's ratios), and what the kernel alone costs an event's
//! fan-out; where Redis nodes were measured, a second table of
//! what Redis spent per event and per socket, node by node.

use std::time::Duration;

use super::{Outcome, RedisLoad};
use crate::redis_info::{Calls, Usage};

/// The report: one Markdown table row per backend, whether the goals
/// hold, and what the kernel alone costs an event's fan-out on `cpus` CPUs.
pub fn render(settings: &str, cpus: usize, outcomes: &[Outcome]) -> String {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let mut report = format!(
        "{settings}\n\n| Backend | Subscribers | Setup | RSS per idle socket | Events | Delivered | Messages/s | p50 | p99 | max | Lost | CPU per message: server (its user space) / client | Machine CPU per message: user / kernel |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for o in outcomes {
        let (p50, p99, max) = o.latency;
        report += &format!(
            "| {} | {} | {:.0}/s | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            o.backend,
            o.subscribers,
            o.setup_rate(),
            o.kib_per_socket()
                .map_or("n/a".into(), |kib| format!("{kib:.2} KiB")),
            o.published,
            o.delivered,
            o.delivery_rate(),
            ms(p50),
            ms(p99),
            ms(max),
            o.lost,
            {
                let micros = |cpu: Option<Duration>| {
                    cpu.map_or("n/a".into(), |cpu| {
                        format!("{:.1}", cpu.as_secs_f64() * 1e6)
                    })
                };
                let (server, client) = o.cpu_per_message();
                format!(
                    "{} ({}) / {} µs",
                    micros(server),
                    micros(o.server_user_per_message()),
                    micros(client)
                )
            },
            o.machine_per_message()
                .map_or("n/a".into(), |(user, kernel)| format!(
                    "{:.1} / {:.1} µs",
                    user.as_secs_f64() * 1e6,
                    kernel.as_secs_f64() * 1e6
                )),
        );
    }
    report += "\nGoals: ≤ 10 KiB RSS per idle socket, p99 ≤ 50 ms, none lost.\n";
    for o in outcomes {
        let verdict = |met: bool| if met { "met" } else { "NOT met" };
        match o.kib_per_socket().filter(|_| o.backend != "baseline") {
            Some(kib) => {
                report += &format!(
                    "- {}: memory {}, latency {}, loss {}\n",
                    o.backend,
                    verdict(kib <= 10.0),
                    verdict(o.latency.1 <= Duration::from_millis(50)),
                    verdict(o.lost == 0),
                );
            }
            None => {
                report += &format!(
                    "- {} (the floor on this machine, not held to the goals): p99 {:.1} ms, {} lost\n",
                    o.backend,
                    o.latency.1.as_secs_f64() * 1e3,
                    o.lost,
                );
            }
        }
        if let Some((_, kernel)) = o.machine_per_message() {
            // What the network stack alone costs one event's fan-out, in
            // every process and interrupt, before anyone's user space.
            let per_event = kernel * u32::try_from(o.subscribers).unwrap_or(u32::MAX);
            report += &format!(
                "  - {}: the kernel's work alone is {:.0} ms of CPU per event ({} subscribers × {:.1} µs), {:.0} ms on {cpus} CPUs\n",
                o.backend,
                per_event.as_secs_f64() * 1e3,
                o.subscribers,
                kernel.as_secs_f64() * 1e6,
                per_event.as_secs_f64() * 1e3 / cpus.max(1) as f64,
            );
        }
        if let Some(line) = against_baseline(o, outcomes) {
            report += &line;
        }
        let (errors, count) = &o.errors;
        if *count > 0 {
            report += &format!("  - {count} errors, first: {}\n", errors.join("; "));
        }
    }
    report += &redis_section(outcomes);
    report
}

/// A server row against the baseline's of the same run (issue #13's
/// ratios): CPU per message, its user-space part, and p99. None for the
/// baseline itself, or when there is none or a figure is missing.
fn against_baseline(o: &Outcome, outcomes: &[Outcome]) -> Option<String> {
    if o.backend == "baseline" {
        return None;
    }
    let baseline = outcomes.iter().find(|b| b.backend == "baseline")?;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(f64::EPSILON);
    let cpu = ratio(o.cpu_per_message().0?, baseline.cpu_per_message().0?);
    let user = ratio(
        o.server_user_per_message()?,
        baseline.server_user_per_message()?,
    );
    let p99 = ratio(o.latency.1, baseline.latency.1);
    Some(format!(
        "  - {} ÷ baseline: CPU per message {cpu:.2}× (user space {user:.2}×), p99 {p99:.2}×\n",
        o.backend
    ))
}

/// The Redis table and its notes, for the rows whose nodes were
/// measured; empty when none were.
fn redis_section(outcomes: &[Outcome]) -> String {
    let measured: Vec<_> = outcomes
        .iter()
        .filter_map(|o| Some((o, o.redis.as_ref()?)))
        .collect();
    if measured.is_empty() {
        return String::new();
    }
    let micros = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
    let mut section = String::from(
        "\nRedis, from `INFO` of each node before and after each window (CPU: `used_cpu_sys` + `used_cpu_user` of the process; commands: `INFO commandstats`, where a script and each command it runs count once each). Per event: from the first publish to the end of delivery, ÷ events published; above idle: less the node's CPU while the sockets sat idle before, for as long.\n\n| Backend | Redis nodes | Redis CPU per event, all nodes: measured / above idle | Busiest node | Its CPU per event: measured / above idle | Redis commands per event: all nodes / busiest | Per socket opened: Redis CPU / commands | Redis CPU while idle, all nodes | Server CPU by instance |\n|---|---:|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for (o, redis) in &measured {
        let events = u32::try_from(o.published.max(1)).unwrap_or(u32::MAX);
        let (publishing, _) = &redis.publishing;
        let above = above_idle(redis);
        let above_total: Duration = above.iter().map(|(_, cpu)| *cpu).sum();
        let (busiest_name, busiest) = publishing
            .busiest()
            .map_or(("n/a", None), |(name, counters)| {
                (name.as_str(), Some(counters))
            });
        let busiest_cpu = busiest.map_or(Duration::ZERO, |c| c.cpu);
        let busiest_above = above
            .iter()
            .find(|(name, _)| name == busiest_name)
            .map_or(Duration::ZERO, |(_, cpu)| *cpu);
        let share = 100.0 * busiest_cpu.as_secs_f64() / publishing.cpu().as_secs_f64().max(1e-9);
        let (idle, idle_for) = &redis.idle;
        let instances = if o.instance_cpu.is_empty() {
            "n/a".to_owned()
        } else {
            let total: Duration = o.instance_cpu.iter().sum();
            let shares: Vec<String> = o
                .instance_cpu
                .iter()
                .map(|cpu| {
                    format!(
                        "{:.0}",
                        100.0 * cpu.as_secs_f64() / total.as_secs_f64().max(1e-9)
                    )
                })
                .collect();
            format!("{} %", shares.join(" / "))
        };
        section += &format!(
            "| {} | {} | {} / {} µs | {busiest_name} ({share:.0} % of all) | {} / {} µs | {:.2} / {:.2} | {} µs / {:.2} | {:.1} ms/s | {instances} |\n",
            o.backend,
            publishing.nodes.len(),
            micros(publishing.cpu() / events),
            micros(above_total / events),
            micros(busiest_cpu / events),
            micros(busiest_above / events),
            publishing.calls() as f64 / f64::from(events),
            busiest.map_or(0, |c| c.calls()) as f64 / f64::from(events),
            micros(redis.setup.cpu() / u32::try_from(o.subscribers.max(1)).unwrap_or(u32::MAX)),
            redis.setup.calls() as f64 / o.subscribers.max(1) as f64,
            idle.cpu().as_secs_f64() * 1e3 / idle_for.as_secs_f64().max(1e-9),
        );
    }
    for (o, redis) in &measured {
        let name = &o.backend;
        let (publishing, _) = &redis.publishing;
        if !redis.topics_per_primary.is_empty() {
            let spread: Vec<String> = redis
                .topics_per_primary
                .iter()
                .map(|(primary, topics)| format!("{topics} on {primary}"))
                .collect();
            section += &format!("- {name}: topics per primary: {}\n", spread.join(", "));
        }
        section += &format!(
            "- {name}: commands per event, all nodes (Redis's wall-clock time per call): {}\n",
            commands_per(publishing, o.published)
        );
        section += &format!(
            "- {name}: commands per socket opened, all nodes: {}\n",
            commands_per(&redis.setup, o.subscribers as u64)
        );
        if publishing.nodes.len() > 1 {
            let events = u32::try_from(o.published.max(1)).unwrap_or(u32::MAX);
            let nodes: Vec<String> = publishing
                .nodes
                .iter()
                .zip(above_idle(redis))
                .map(|((node, counters), (_, above))| {
                    format!(
                        "{node} {} µs ({} above idle), {:.2} commands",
                        micros(counters.cpu / events),
                        micros(above / events),
                        counters.calls() as f64 / f64::from(events),
                    )
                })
                .collect();
            section += &format!("- {name}: per event, by node: {}\n", nodes.join("; "));
        }
    }
    section
}

/// Each node's CPU time while publishing less its idle rate over as long
/// (none below zero), in the order of the publishing window's nodes.
fn above_idle(redis: &RedisLoad) -> Vec<(String, Duration)> {
    let (publishing, publishing_for) = &redis.publishing;
    let (idle, idle_for) = &redis.idle;
    let scale = publishing_for.as_secs_f64() / idle_for.as_secs_f64().max(1e-9);
    publishing
        .nodes
        .iter()
        .map(|(name, counters)| {
            let background = idle
                .nodes
                .iter()
                .find(|(idle_name, _)| idle_name == name)
                .map_or(Duration::ZERO, |(_, idle)| idle.cpu.mul_f64(scale));
            (name.clone(), counters.cpu.saturating_sub(background))
        })
        .collect()
}

/// `usage`'s commands per one of `count` (events, sockets), the most
/// frequent first, with Redis's time per call: `1.00 evalsha (41.3 µs),
/// …`.
fn commands_per(usage: &Usage, count: u64) -> String {
    let mut commands: Vec<(&str, Calls)> = usage
        .commands()
        .into_iter()
        .filter(|(_, calls)| calls.calls > 0)
        .collect();
    if commands.is_empty() {
        return "none".into();
    }
    commands.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(b.0)));
    commands
        .iter()
        .map(|(name, calls)| {
            format!(
                "{:.2} {name} ({:.1} µs)",
                calls.calls as f64 / count.max(1) as f64,
                calls.micros as f64 / calls.calls as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_info::Counters;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn outcome(backend: &str, p99: u64) -> Outcome {
        Outcome {
            backend: backend.into(),
            subscribers: 1000,
            setup: Duration::from_secs(1),
            resident_kib: Some((1000, 9000)),
            published: 10,
            delivered: 10_000,
            lost: 0,
            delivery_window: Duration::from_secs(1),
            latency: (ms(10), ms(p99), ms(70)),
            server_cpu: Some(ms(100)),
            server_user_cpu: Some(ms(20)),
            instance_cpu: Vec::new(),
            client_cpu: Some(ms(50)),
            machine_cpu: Some(crate::cpu::Machine {
                user: ms(30),
                kernel: ms(120),
                idle: ms(1850),
            }),
            redis: None,
            errors: (Vec::new(), 0),
        }
    }

    #[test]
    fn the_report_gives_each_row_its_goals_and_the_kernels_share() {
        let mut baseline = outcome("baseline", 60);
        baseline.server_cpu = Some(ms(80));
        baseline.server_user_cpu = Some(ms(10));
        let report = render("settings", 2, &[outcome("memory", 40), baseline]);
        assert!(
            report.contains("| memory | 1000 | 1000/s | 8.00 KiB | 10 | 10000 | 10000 | 10.0 ms | 40.0 ms | 70.0 ms | 0 | 10.0 (2.0) / 5.0 µs | 3.0 / 12.0 µs |"),
            "{report}"
        );
        assert!(
            report.contains(
                "  - memory ÷ baseline: CPU per message 1.25× (user space 2.00×), p99 0.67×\n"
            ),
            "{report}"
        );
        assert!(!report.contains("- baseline ÷ baseline"), "{report}");
        assert!(
            report.contains("- memory: memory met, latency met, loss met"),
            "{report}"
        );
        assert!(
            report.contains(
                "- baseline (the floor on this machine, not held to the goals): p99 60.0 ms, 0 lost"
            ),
            "{report}"
        );
        assert!(
            report.contains("  - baseline: the kernel's work alone is 12 ms of CPU per event (1000 subscribers × 12.0 µs), 6 ms on 2 CPUs"),
            "{report}"
        );
        // Without Redis readings, no Redis table.
        assert!(!report.contains("Redis CPU"), "{report}");
    }

    #[test]
    fn measured_redis_gets_a_table_per_event_per_socket_and_per_node() {
        let node = |cpu, evalsha, spublish| Counters {
            cpu: ms(cpu),
            commands: [
                (
                    "evalsha".to_owned(),
                    Calls {
                        calls: evalsha,
                        micros: evalsha * 40,
                    },
                ),
                (
                    "spublish".to_owned(),
                    Calls {
                        calls: spublish,
                        micros: spublish * 2,
                    },
                ),
            ]
            .into(),
        };
        let usage = |nodes: Vec<(&str, Counters)>| Usage {
            nodes: nodes
                .into_iter()
                .map(|(name, counters)| (name.to_owned(), counters))
                .collect(),
        };
        let mut one = outcome("redis ×3", 40);
        one.instance_cpu = vec![ms(50), ms(25), ms(25)];
        one.redis = Some(RedisLoad {
            setup: usage(vec![("127.0.0.1:6379", node(20, 2000, 0))]),
            idle: (usage(vec![("127.0.0.1:6379", node(3, 0, 0))]), ms(3000)),
            publishing: (usage(vec![("127.0.0.1:6379", node(1, 10, 10))]), ms(1000)),
            topics_per_primary: Vec::new(),
        });
        let mut cluster = outcome("cluster ×3", 40);
        cluster.redis = Some(RedisLoad {
            setup: usage(vec![("primary :1", node(10, 1000, 0))]),
            idle: (
                usage(vec![
                    ("primary :1", node(6, 0, 0)),
                    ("primary :2", node(3, 0, 0)),
                ]),
                ms(3000),
            ),
            publishing: (
                usage(vec![
                    ("primary :1", node(1, 6, 6)),
                    ("primary :2", node(3, 4, 4)),
                ]),
                ms(1500),
            ),
            topics_per_primary: vec![("primary :1".into(), 6), ("primary :2".into(), 4)],
        });
        let report = render("settings", 2, &[outcome("memory", 40), one, cluster]);
        assert!(
            report.contains("| redis ×3 | 1 | 100.0 / 0.0 µs | 127.0.0.1:6379 (100 % of all) | 100.0 / 0.0 µs | 2.00 / 2.00 | 20.0 µs / 2.00 | 1.0 ms/s | 50 / 25 / 25 % |"),
            "{report}"
        );
        assert!(
            report.contains("| cluster ×3 | 2 | 400.0 / 150.0 µs | primary :2 (75 % of all) | 300.0 / 150.0 µs | 2.00 / 0.80 | 10.0 µs / 1.00 | 3.0 ms/s | n/a |"),
            "{report}"
        );
        assert!(!report.contains("| memory | 1 |"), "{report}");
        assert!(
            report.contains("- cluster ×3: topics per primary: 6 on primary :1, 4 on primary :2\n"),
            "{report}"
        );
        assert!(
            report.contains(
                "- redis ×3: commands per event, all nodes (Redis's wall-clock time per call): 1.00 evalsha (40.0 µs), 1.00 spublish (2.0 µs)\n"
            ),
            "{report}"
        );
        assert!(
            report.contains(
                "- redis ×3: commands per socket opened, all nodes: 2.00 evalsha (40.0 µs)\n"
            ),
            "{report}"
        );
        assert!(
            report.contains("- cluster ×3: per event, by node: primary :1 100.0 µs (0.0 above idle), 1.20 commands; primary :2 300.0 µs (150.0 above idle), 0.80 commands\n"),
            "{report}"
        );
    }
}
