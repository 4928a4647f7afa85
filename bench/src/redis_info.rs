//! What Redis spends on a run, node by node, from `INFO`: CPU time
//! (`used_cpu_sys` + `used_cpu_user`, the whole redis-server process) and
//! commands by name with the time Redis spent in them (`INFO
//! commandstats`, where a script counts once and each command it runs
//! counts too, and a script's time includes its commands'). Read before
//! and after a window, the difference is what the window cost each node,
//! whoever caused it: the nodes should be the run's own, or other clients'
//! work counts as ours.

use std::{collections::BTreeMap, time::Duration};

use redis::aio::MultiplexedConnection;

/// The Redis nodes a run uses, each with a connection kept open, so that
/// a reading costs each node one `INFO` and nothing else.
pub struct RedisNodes {
    nodes: Vec<(String, MultiplexedConnection)>,
}

impl RedisNodes {
    /// Connects to each `(name, redis:// URL)`.
    pub async fn connect(nodes: Vec<(String, String)>) -> Result<Self, String> {
        let mut connected = Vec::with_capacity(nodes.len());
        for (name, url) in nodes {
            let connection = redis::Client::open(url.as_str())
                .map_err(|error| format!("{name} ({url}): {error}"))?
                .get_multiplexed_async_connection()
                .await
                .map_err(|error| format!("{name} ({url}): {error}"))?;
            connected.push((name, connection));
        }
        Ok(Self { nodes: connected })
    }

    /// Every node's counters now, in the order given.
    pub async fn read(&self) -> Result<Reading, String> {
        let mut counters = Vec::with_capacity(self.nodes.len());
        for (name, connection) in &self.nodes {
            let info: String = redis::cmd("INFO")
                .arg("cpu")
                .arg("commandstats")
                .query_async(&mut connection.clone())
                .await
                .map_err(|error| format!("INFO of {name}: {error}"))?;
            counters.push(
                Counters::parse(&info)
                    .ok_or_else(|| format!("INFO of {name} has no used_cpu_sys/user"))?,
            );
        }
        Ok(Reading {
            names: self.nodes.iter().map(|(name, _)| name.clone()).collect(),
            counters,
        })
    }
}

/// One node's counters, or what a window added to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// CPU time, user + system, of the whole process.
    pub cpu: Duration,
    /// Calls by command name (`evalsha`, `spublish`, `client|setinfo`).
    pub commands: BTreeMap<String, Calls>,
}

/// A command's calls and the time Redis spent in them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    /// How many.
    pub calls: u64,
    /// Their time, in microseconds (`usec`): wall clock, so it grows
    /// when Redis waits for a CPU.
    pub micros: u64,
}

impl std::ops::AddAssign for Calls {
    fn add_assign(&mut self, other: Self) {
        self.calls += other.calls;
        self.micros += other.micros;
    }
}

impl Counters {
    /// From the text of `INFO cpu commandstats`.
    fn parse(info: &str) -> Option<Self> {
        let mut system = None;
        let mut user = None;
        let mut commands = BTreeMap::new();
        for line in info.lines() {
            let Some((field, value)) = line.trim_end().split_once(':') else {
                continue;
            };
            let seconds = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64)
            };
            match field {
                "used_cpu_sys" => system = seconds(),
                "used_cpu_user" => user = seconds(),
                _ => {
                    // cmdstat_<name>:calls=<n>,usec=<µs>,…
                    let number = |key: &str| {
                        value
                            .split(',')
                            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
                            .and_then(|number| number.parse().ok())
                    };
                    if let Some(name) = field.strip_prefix("cmdstat_")
                        && let (Some(calls), Some(micros)) = (number("calls"), number("usec"))
                    {
                        commands.insert(name.to_owned(), Calls { calls, micros });
                    }
                }
            }
        }
        Some(Self {
            cpu: system? + user?,
            commands,
        })
    }

    /// What happened from `earlier` to `self`, less the `INFO` that read
    /// `earlier` (it counts itself only once it has answered).
    fn since(&self, earlier: &Self) -> Self {
        let mut commands = BTreeMap::new();
        for (name, now) in &self.commands {
            let before = earlier.commands.get(name).copied().unwrap_or_default();
            let mut added = Calls {
                calls: now.calls.saturating_sub(before.calls),
                micros: now.micros.saturating_sub(before.micros),
            };
            if name == "info" {
                // Its time is not known apart from the scripts' INFO calls;
                // one INFO of a few sections is a few µs among them.
                added.calls = added.calls.saturating_sub(1);
            }
            if added.calls > 0 {
                commands.insert(name.clone(), added);
            }
        }
        Self {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            commands,
        }
    }

    /// Calls of every command.
    pub fn calls(&self) -> u64 {
        self.commands.values().map(|calls| calls.calls).sum()
    }
}

/// Every node's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    names: Vec<String>,
    counters: Vec<Counters>,
}

impl Reading {
    /// What each node did from `earlier` (a reading of the same nodes) to
    /// `self`.
    pub fn since(&self, earlier: &Self) -> Usage {
        Usage {
            nodes: self
                .names
                .iter()
                .zip(self.counters.iter().zip(&earlier.counters))
                .map(|(name, (now, before))| (name.clone(), now.since(before)))
                .collect(),
        }
    }
}

/// What each node did in a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Per node, by name, in the order the nodes were given.
    pub nodes: Vec<(String, Counters)>,
}

impl Usage {
    /// CPU time over every node.
    pub fn cpu(&self) -> Duration {
        self.nodes.iter().map(|(_, counters)| counters.cpu).sum()
    }

    /// Command calls over every node.
    pub fn calls(&self) -> u64 {
        self.nodes
            .iter()
            .map(|(_, counters)| counters.calls())
            .sum()
    }

    /// The node that spent the most CPU time.
    pub fn busiest(&self) -> Option<&(String, Counters)> {
        self.nodes.iter().max_by_key(|(_, counters)| counters.cpu)
    }

    /// Calls by command name over every node.
    pub fn commands(&self) -> BTreeMap<&str, Calls> {
        let mut all = BTreeMap::new();
        for (_, counters) in &self.nodes {
            for (name, calls) in &counters.commands {
                *all.entry(name.as_str()).or_default() += *calls;
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:0.500000\r\nused_cpu_sys_children:9.000000\r\nused_cpu_user_children:9.000000\r\nused_cpu_sys_main_thread:1.000000\r\n\r\n# Commandstats\r\ncmdstat_evalsha:calls=120,usec=9000,usec_per_call=75.00,rejected_calls=0,failed_calls=0\r\ncmdstat_client|setinfo:calls=2,usec=3,usec_per_call=1.50,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=4,usec=400,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn info_gives_the_process_cpu_and_calls_by_command() {
        let counters = Counters::parse(INFO).unwrap();
        assert_eq!(counters.cpu, Duration::from_millis(1750));
        let calls = |calls, micros| Calls { calls, micros };
        assert_eq!(
            counters.commands,
            [
                ("client|setinfo".to_owned(), calls(2, 3)),
                ("evalsha".to_owned(), calls(120, 9000)),
                ("info".to_owned(), calls(4, 400))
            ]
            .into()
        );
        assert_eq!(counters.calls(), 126);
        assert_eq!(Counters::parse("# CPU\r\nused_cpu_sys:1.0\r\n"), None);
        assert_eq!(
            Counters::parse("used_cpu_sys:x\r\nused_cpu_user:1\r\n"),
            None
        );
    }

    #[test]
    fn a_window_leaves_out_the_info_that_opened_it() {
        let before = Counters::parse(INFO).unwrap();
        let after = Counters::parse(
            "used_cpu_sys:1.5\r\nused_cpu_user:0.75\r\ncmdstat_evalsha:calls=130,usec=9800\r\ncmdstat_spublish:calls=10,usec=20\r\ncmdstat_info:calls=5,usec=410\r\ncmdstat_client|setinfo:calls=2,usec=3\r\n",
        )
        .unwrap();
        let window = after.since(&before);
        assert_eq!(window.cpu, Duration::from_millis(500));
        assert_eq!(
            window.commands,
            [
                (
                    "evalsha".to_owned(),
                    Calls {
                        calls: 10,
                        micros: 800
                    }
                ),
                (
                    "spublish".to_owned(),
                    Calls {
                        calls: 10,
                        micros: 20
                    }
                )
            ]
            .into()
        );
    }

    #[test]
    fn usage_sums_the_nodes_and_names_the_busiest() {
        let calls = |calls| Calls { calls, micros: 10 };
        let node = |cpu_ms, evalsha| Counters {
            cpu: Duration::from_millis(cpu_ms),
            commands: [
                ("evalsha".to_owned(), calls(evalsha)),
                ("spublish".to_owned(), calls(1)),
            ]
            .into(),
        };
        let usage = Usage {
            nodes: vec![
                ("primary :1".into(), node(30, 3)),
                ("primary :2".into(), node(50, 5)),
                ("replica :3".into(), node(20, 0)),
            ],
        };
        assert_eq!(usage.cpu(), Duration::from_millis(100));
        assert_eq!(usage.calls(), 11);
        assert_eq!(
            usage.busiest().map(|(name, _)| name.as_str()),
            Some("primary :2")
        );
        let all = |calls, micros| Calls { calls, micros };
        assert_eq!(
            usage.commands(),
            [("evalsha", all(8, 30)), ("spublish", all(3, 30))].into()
        );
        assert_eq!(Usage::default().busiest(), None);
    }
}
