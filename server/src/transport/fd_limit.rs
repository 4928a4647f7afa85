//! The limit on open files, which bounds the connections the server can
//! hold: every socket is a file descriptor, and so are the server's own
//! files (the database, Redis, logs).
//!
//! At start the soft limit is raised to the hard one (1024 soft is a common
//! default under a hard limit of 500,000 or more), once per process, and
//! the result logged. Connections are then capped below it
//! ([`default_max_connections`]), so that they alone never exhaust it. If
//! it is exhausted all the same (a cap set too high, descriptors used
//! elsewhere), the accept loop closes idle connections to get descriptors
//! back, and uses a [`Reserve`] descriptor to answer one waiting client
//! instead of leaving every one hanging.

use std::sync::OnceLock;

/// The most connections by default when the limit is not known.
const UNKNOWN_LIMIT_CONNECTIONS: usize = 10_000;

/// The most descriptors kept for the server's own files: the database
/// pool, Redis, the mail outbox, logs, refused sockets lingering, tokio's
/// own.
const HEADROOM: u64 = 128;

/// Raises the soft limit on open files to the hard one, the first time it
/// is called in the process, and logs what it did; answers the limit in
/// force, None where it is not known (other systems than Linux).
pub fn raise_open_files_limit() -> Option<u64> {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    *LIMIT.get_or_init(raise)
}

#[cfg(target_os = "linux")]
fn raise() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // No hard limit: the kernel's ceiling for one process is the most the
    // soft limit may be set to.
    let ceiling = limit.maximum.or_else(|| {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok())
    });
    match (limit.current, ceiling) {
        (Some(current), Some(ceiling)) if current < ceiling => {
            let raised = rustix::process::Rlimit {
                current: Some(ceiling),
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    tracing::info!(from = current, to = ceiling, "open files limit raised");
                    Some(ceiling)
                }
                Err(error) => {
                    tracing::warn!(
                        limit = current,
                        hard_limit = ceiling,
                        %error,
                        "cannot raise the open files limit to the hard limit"
                    );
                    Some(current)
                }
            }
        }
        (current, _) => {
            tracing::info!(limit = current, "open files limit (already the hard limit)");
            current
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn raise() -> Option<u64> {
    None
}

/// Whether an accept failed for want of file descriptors (EMFILE: this
/// process's limit; ENFILE: the system's).
pub fn is_exhaustion(error: &std::io::Error) -> bool {
    // The same numbers on Linux, the BSDs and macOS.
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(error.raw_os_error(), Some(EMFILE | ENFILE))
}

/// One descriptor held in reserve: given back when the process is out of
/// them, so one more socket can be accepted and answered, then taken again.
#[derive(Debug)]
pub struct Reserve(Option<std::fs::File>);

impl Reserve {
    /// Takes the reserve (a handle on /dev/null; none where there is none).
    pub fn new() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }

    /// Gives the descriptor back.
    pub fn release(&mut self) {
        self.0 = None;
    }

    /// Takes a descriptor again, if one is free.
    pub fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = std::fs::File::open("/dev/null").ok();
        }
    }
}

impl Default for Reserve {
    fn default() -> Self {
        Self::new()
    }
}

/// HTTP_MAX_CONNECTIONS by default: the limit on open files less a headroom
/// for the server's own (128, or a quarter of a small limit), so that
/// connections alone never exhaust the limit.
pub fn default_max_connections(limit: Option<u64>) -> usize {
    match limit {
        Some(limit) => {
            let headroom = (limit / 4).min(HEADROOM);
            usize::try_from(limit - headroom)
                .unwrap_or(usize::MAX)
                .clamp(1, 10_000_000)
        }
        None => UNKNOWN_LIMIT_CONNECTIONS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_headroom_below_the_limit() {
        assert_eq!(default_max_connections(Some(1024)), 896);
        assert_eq!(default_max_connections(Some(256)), 192);
        assert_eq!(default_max_connections(Some(1_048_576)), 1_048_448);
        assert_eq!(default_max_connections(Some(2)), 2);
        assert_eq!(default_max_connections(None), UNKNOWN_LIMIT_CONNECTIONS);
    }
}
