//! CPU time, read from /proc (Linux): of the server process (every thread,
//! finished ones included), of the baseline's threads in this process, and
//! of the whole machine, split into user space and kernel. It tells what
//! each request costs whatever else the machine is doing, which req/s on a
//! shared machine cannot.

use std::{fs, time::Duration};

/// The kernel's USER_HZ, the unit of /proc CPU times: 100 on Linux.
const TICK: Duration = Duration::from_millis(10);

/// Whose CPU time to read.
#[derive(Debug, Clone)]
pub enum Meter {
    /// A process, by pid.
    Process(u32),
    /// This process's threads whose names start with this prefix.
    Threads(&'static str),
}

impl Meter {
    /// CPU time (user + system) used so far; None where /proc cannot be read.
    pub fn read(&self) -> Option<Duration> {
        let ticks = match self {
            Self::Process(pid) => ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?,
            Self::Threads(prefix) => {
                let mut total = 0;
                for task in fs::read_dir("/proc/self/task").ok()?.flatten() {
                    let path = task.path();
                    let named = fs::read_to_string(path.join("comm"))
                        .is_ok_and(|name| name.starts_with(prefix));
                    if named
                        && let Some(used) = fs::read_to_string(path.join("stat"))
                            .ok()
                            .and_then(|stat| ticks(&stat))
                    {
                        total += used;
                    }
                }
                total
            }
        };
        Some(TICK * u32::try_from(ticks).ok()?)
    }
}

/// The whole machine's CPU time since boot, over every CPU, from the first
/// line of /proc/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// user + nice.
    pub user: Duration,
    /// system + irq + softirq: system calls, and the network stack's work
    /// wherever the kernel accounts it.
    pub kernel: Duration,
    /// idle + iowait.
    pub idle: Duration,
}

impl Machine {
    /// Now; None where /proc/stat cannot be read.
    pub fn read() -> Option<Self> {
        Self::parse(&fs::read_to_string("/proc/stat").ok()?)
    }

    /// The time used from `earlier` to `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            user: self.user.saturating_sub(earlier.user),
            kernel: self.kernel.saturating_sub(earlier.kernel),
            idle: self.idle.saturating_sub(earlier.idle),
        }
    }

    /// `cpu  user nice system idle iowait irq softirq steal …`
    fn parse(stat: &str) -> Option<Self> {
        let mut fields = stat.lines().next()?.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let mut ticks = [0u32; 7];
        for tick in &mut ticks {
            *tick = fields.next()?.parse().ok()?;
        }
        let [user, nice, system, idle, iowait, irq, softirq] = ticks;
        Some(Self {
            user: TICK * (user + nice),
            kernel: TICK * (system + irq + softirq),
            idle: TICK * (idle + iowait),
        })
    }
}

/// utime + stime, fields 14 and 15 of a stat line (after the name, which
/// is in parentheses and may hold spaces).
fn ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_user_plus_system_ticks() {
        let line =
            "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 1 1 1";
        assert_eq!(ticks(line), Some(325));
        assert!(Meter::Process(std::process::id()).read().is_some());
    }

    #[test]
    fn the_machine_splits_into_user_kernel_and_idle() {
        let stat = "cpu  200 10 300 4000 5 6 70 0 0 0\ncpu0 100 5 150 2000 2 3 35 0 0 0\n";
        assert_eq!(
            Machine::parse(stat),
            Some(Machine {
                user: Duration::from_millis(2100),
                kernel: Duration::from_millis(3760),
                idle: Duration::from_millis(40050),
            })
        );
        assert_eq!(Machine::parse("intr 1 2 3"), None);
        let now = Machine::read().expect("/proc/stat");
        assert_eq!(now.since(&now).kernel, Duration::ZERO);
    }
}
