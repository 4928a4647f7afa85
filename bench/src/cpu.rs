//! CPU time, read from /proc (Linux): of the server process (every thread,
//! finished ones included), and of the baseline's threads in this process.
//! It tells what each request costs whatever else the machine is doing,
//! which req/s on a shared machine cannot.

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
}
