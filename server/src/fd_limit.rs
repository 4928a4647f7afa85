//! The limit on open files, which bounds the connections the server can
//! hold: every socket is a file descriptor, and so are the server's own
//! files (the database, Redis, logs).

/// The most connections by default when the limit is not known.
const UNKNOWN_LIMIT_CONNECTIONS: usize = 10_000;

/// The most descriptors kept for the server's own files: the database
/// pool, Redis, the mail outbox, logs, refused sockets lingering, tokio's
/// own.
const HEADROOM: u64 = 128;

/// The soft limit on open files; None where it is not known (other systems
/// than Linux) or there is none.
pub fn open_files_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
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
