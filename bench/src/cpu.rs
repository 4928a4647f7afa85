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
        self.read_split().map(|used| used.user + used.system)
    }

    /// CPU time used so far, in user space and in the kernel on the
    /// threads' behalf; None where /proc cannot be read.
    pub fn read_split(&self) -> Option<Used> {
        let (user, system) = match self {
            Self::Process(pid) => ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?,
            Self::Threads(prefix) => {
                let mut total = (0, 0);
                for task in fs::read_dir("/proc/self/task").ok()?.flatten() {
                    let path = task.path();
                    let named = fs::read_to_string(path.join("comm"))
                        .is_ok_and(|name| name.starts_with(prefix));
                    if named
                        && let Some((user, system)) = fs::read_to_string(path.join("stat"))
                            .ok()
                            .and_then(|stat| ticks(&stat))
                    {
                        total.0 += user;
                        total.1 += system;
                    }
                }
                total
            }
        };
        Some(Used {
            user: TICK * u32::try_from(user).ok()?,
            system: TICK * u32::try_from(system).ok()?,
        })
    }
}

/// CPU time of a process or threads, split as /proc splits it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Used {
    /// In user space: the process's own code.
    pub user: Duration,
    /// In the kernel on its behalf (system calls; on loopback, much of the
    /// receiving side's network stack too, run in the sender's context).
    pub system: Duration,
}

impl Used {
    /// Both.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The time used from `earlier` to `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

impl std::iter::Sum for Used {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |sum, used| Self {
            user: sum.user + used.user,
            system: sum.system + used.system,
        })
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

/// utime and stime, fields 14 and 15 of a stat line (after the name, which
/// is in parentheses and may hold spaces).
fn ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user, system))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_user_and_system_ticks() {
        let line =
            "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 1 1 1";
        assert_eq!(ticks(line), Some((250, 75)));
        let me = Meter::Process(std::process::id());
        let used = me.read_split().expect("/proc/self/stat");
        assert!(me.read().expect("/proc/self/stat") >= used.total());
        let later = Used {
            user: used.user + Duration::from_millis(30),
            system: used.system + Duration::from_millis(20),
        };
        assert_eq!(
            later.since(&used),
            Used {
                user: Duration::from_millis(30),
                system: Duration::from_millis(20),
            }
        );
        assert_eq!(
            [later.since(&used), later.since(&used)]
                .into_iter()
                .sum::<Used>()
                .total(),
            Duration::from_millis(100)
        );
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
