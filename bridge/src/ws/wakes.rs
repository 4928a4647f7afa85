//! Which of a socket task's rarely ready sources woke it.
//!
//! A socket's task is woken for every event of its subscriptions, and then
//! has nothing to read, no timer due and no shutdown. Polling those anyway
//! (re-registering read interest with the I/O driver, the timer and the
//! shutdown token) was about a tenth of the server's CPU per delivered
//! event. So each of them is polled with a waker of its own, which marks
//! its source before waking the task: a pass polls a source only when it
//! woke, when it has never been polled, or when it was ready last time (it
//! may have more).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Wake, Waker},
};

use futures_util::task::AtomicWaker;

/// A source of wake-ups other than the subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The server shutting down.
    Shutdown = 0,
    /// The client's side of the socket.
    Read = 1,
    /// The ping interval and the sign-in deadline.
    Timers = 2,
}

const SOURCES: usize = 3;

impl Source {
    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The task's wakers, one per source, and which sources are due.
pub(super) struct Wakes {
    shared: Arc<Shared>,
    wakers: [Waker; SOURCES],
}

struct Shared {
    /// A bit per source that is due a poll.
    due: AtomicU8,
    /// The task, woken after a source's bit is set.
    task: AtomicWaker,
}

/// The waker handed to one source.
struct SourceWaker {
    shared: Arc<Shared>,
    bit: u8,
}

impl Wake for SourceWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.due.fetch_or(self.bit, Ordering::AcqRel);
        self.shared.task.wake();
    }
}

impl Wakes {
    /// Every source due: none has been polled yet.
    pub(super) fn new() -> Self {
        let shared = Arc::new(Shared {
            due: AtomicU8::new(u8::MAX),
            task: AtomicWaker::new(),
        });
        let waker = |source: Source| {
            Waker::from(Arc::new(SourceWaker {
                shared: shared.clone(),
                bit: source.bit(),
            }))
        };
        let wakers = [
            waker(Source::Shutdown),
            waker(Source::Read),
            waker(Source::Timers),
        ];
        Self { shared, wakers }
    }

    /// The task's waker of this pass; first thing in every pass, before any
    /// source is polled, so no wake-up falls between the two.
    pub(super) fn register(&self, task: &Waker) {
        self.shared.task.register(task);
    }

    /// Whether `source` is due a poll; it is no longer, until it wakes or
    /// is marked [`Wakes::again`].
    pub(super) fn take(&self, source: Source) -> bool {
        self.shared.due.fetch_and(!source.bit(), Ordering::AcqRel) & source.bit() != 0
    }

    /// Marks `source` due again: it was ready, and may be again at once.
    pub(super) fn again(&self, source: Source) {
        self.shared.due.fetch_or(source.bit(), Ordering::AcqRel);
    }

    /// The context to poll `source` with.
    pub(super) fn context(&self, source: Source) -> Context<'_> {
        Context::from_waker(&self.wakers[source as usize])
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future::Future as _,
        pin::pin,
        sync::atomic::AtomicUsize,
        task::Poll,
        time::{Duration, Instant},
    };

    use super::*;

    /// Counts the task's wake-ups.
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_source_is_due_until_polled_then_again_when_it_wakes() {
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let wakes = Wakes::new();
        wakes.register(&task_waker);
        for source in [Source::Shutdown, Source::Read, Source::Timers] {
            assert!(wakes.take(source), "{source:?} is due at first");
            assert!(!wakes.take(source), "{source:?} was taken");
        }
        wakes.context(Source::Read).waker().wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(wakes.take(Source::Read));
        assert!(!wakes.take(Source::Timers) && !wakes.take(Source::Shutdown));
        wakes.again(Source::Timers);
        assert!(wakes.take(Source::Timers));
    }

    #[tokio::test]
    async fn a_timer_polled_with_its_sources_waker_marks_that_source() {
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let wakes = Wakes::new();
        wakes.register(&task_waker);
        for source in [Source::Shutdown, Source::Read, Source::Timers] {
            assert!(wakes.take(source));
        }
        let mut sleep = pin!(tokio::time::sleep(Duration::from_millis(10)));
        assert!(
            sleep
                .as_mut()
                .poll(&mut wakes.context(Source::Timers))
                .is_pending()
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while task.0.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken once");
        assert!(!wakes.take(Source::Read), "only the timer's source");
        assert!(wakes.take(Source::Timers));
        assert_eq!(
            sleep.as_mut().poll(&mut wakes.context(Source::Timers)),
            Poll::Ready(())
        );
    }
}
