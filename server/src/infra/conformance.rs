//! The one way a backend conformance suite runs (tests only).
//!
//! A suite is a set of cases (async functions taking a fresh backend) and,
//! per backend, a runner: an async function that builds a backend of its
//! own (a fresh Redis key prefix, a fresh database, a manual clock), passes
//! it to the case, and cleans up afterwards, even when the case panics. The
//! macro writes one test per backend and case, named
//! `<suite module>::<backend>_backend::<case>`, so the cases stay plain functions
//! that read as sentences and every suite has the same shape.

/// Generates, in the invoking module (which holds the runners and the
/// cases), one `mod <backend>` per backend with one multi-threaded
/// `#[tokio::test]` per case that calls `<runner>(<case>)`. Name the
/// modules `<backend>_backend`: a module named `redis` or `memory` would
/// hide the crate or the module of that name in the invoking one.
///
/// ```ignore
/// crate::infra::conformance::backend_conformance! {
///     backends: [memory_backend => on_memory, redis_backend => on_redis],
///     cases: [create_then_get_round_trips, idle_sessions_expire],
/// }
/// ```
macro_rules! backend_conformance {
    (
        backends: [$($backend:ident => $run:ident),+ $(,)?],
        cases: $cases:tt $(,)?
    ) => {
        $(
            $crate::infra::conformance::backend_conformance!(@backend $backend => $run, $cases);
        )+
    };
    (@backend $backend:ident => $run:ident, [$($case:ident),+ $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$run(super::$case).await;
                }
            )+
        }
    };
}

pub(crate) use backend_conformance;
