//! The fan-out report: a Markdown table with a row per backend, whether
//! each row meets issue #4's goals, and what the kernel alone costs an
//! event's fan-out.

use std::time::Duration;

use super::Outcome;

/// The report: one Markdown table row per backend, whether the goals
/// hold, and what the kernel alone costs an event's fan-out on `cpus` CPUs.
pub fn render(settings: &str, cpus: usize, outcomes: &[Outcome]) -> String {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let mut report = format!(
        "{settings}\n\n| Backend | Subscribers | Setup | RSS per idle socket | Events | Delivered | Messages/s | p50 | p99 | max | Lost | CPU per message: server / client | Machine CPU per message: user / kernel |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
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
                format!("{} / {} µs", micros(server), micros(client))
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
        let (errors, count) = &o.errors;
        if *count > 0 {
            report += &format!("  - {count} errors, first: {}\n", errors.join("; "));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_gives_each_row_its_goals_and_the_kernels_share() {
        let ms = Duration::from_millis;
        let outcome = |backend, p99| Outcome {
            backend,
            subscribers: 1000,
            setup: Duration::from_secs(1),
            resident_kib: Some((1000, 9000)),
            published: 10,
            delivered: 10_000,
            lost: 0,
            delivery_window: Duration::from_secs(1),
            latency: (ms(10), ms(p99), ms(70)),
            server_cpu: Some(ms(100)),
            client_cpu: Some(ms(50)),
            machine_cpu: Some(crate::cpu::Machine {
                user: ms(30),
                kernel: ms(120),
                idle: ms(1850),
            }),
            errors: (Vec::new(), 0),
        };
        let report = render(
            "settings",
            2,
            &[outcome("memory", 40), outcome("baseline", 60)],
        );
        assert!(
            report.contains("| memory | 1000 | 1000/s | 8.00 KiB | 10 | 10000 | 10000 | 10.0 ms | 40.0 ms | 70.0 ms | 0 | 10.0 / 5.0 µs | 3.0 / 12.0 µs |"),
            "{report}"
        );
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
    }
}
