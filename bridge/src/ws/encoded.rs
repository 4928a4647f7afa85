//! Events encoded once per worker thread rather than once per socket.
//!
//! Every subscriber of a channel on this instance receives the same
//! `Arc<Event>` (see [`slop_context::Delivery`]), one after the other as the
//! sockets' tasks run. The adapter keeps the JSON of the last few events it
//! encoded, keyed by that allocation, and the whole event frame for the
//! subscription ids it was sent under (sockets of one app tend to use the
//! same ids), so ten thousand sockets following a topic cost one encoding
//! per event and thread, and each socket's frame is a shared buffer, not a
//! copy.
//!
//! Each thread keeps its own: a socket's task reads the encodings of the
//! thread it runs on, so a frame takes no lock and its buffer's reference
//! count is not shared between CPUs (one mutex for every socket was a
//! lock and two shared atomics per frame).

use std::{cell::RefCell, collections::VecDeque, sync::Arc};

use axum::extract::ws::Utf8Bytes;
use slop_api::notification::Event;
use thread_local::ThreadLocal;

use super::frames::ServerFrame;

/// How many recent events each thread keeps the encoding of, at most.
/// Sockets that fall behind are spread over the events still queued for
/// them, and a cache smaller than that spread encodes nearly every frame
/// again, which makes them fall further behind: with 8, a fan-out that
/// fell 2 s behind (20 events at 10 a second) never caught up.
const EVENTS: usize = 64;
/// How many bytes of JSON and frames each thread keeps, at most (the
/// newest event is kept whatever its size): large events do not pile up.
const BYTES: usize = 1 << 20;
/// How many subscription ids an event keeps a ready frame for.
const FRAMES_PER_EVENT: usize = 4;

/// A recent event, its canonical JSON, and its frames by subscription id.
/// Holding the event keeps its allocation alive, so no other event can take
/// its address meanwhile.
struct Encoded {
    event: Arc<Event>,
    json: Box<str>,
    frames: Vec<(Option<Box<str>>, Utf8Bytes)>,
}

impl Encoded {
    /// The bytes of its JSON and frames.
    fn bytes(&self) -> usize {
        self.json.len()
            + self
                .frames
                .iter()
                .map(|(_, frame)| frame.as_str().len())
                .sum::<usize>()
    }
}

/// One thread's recent events, oldest first, and their bytes.
#[derive(Default)]
struct Recent {
    events: VecDeque<Encoded>,
    bytes: usize,
}

impl Recent {
    /// Where the encoding of `event` is, made (the event encoded as JSON,
    /// the oldest ones let go past [`EVENTS`] or [`BYTES`]) if it is not
    /// among the recent ones. Looked for newest first: the common case.
    fn index_of(&mut self, event: &Arc<Event>) -> usize {
        if let Some(index) = self
            .events
            .iter()
            .rposition(|e| Arc::ptr_eq(&e.event, event))
        {
            return index;
        }
        let json = slop_api::json::to_string(event.as_ref())
            .unwrap_or_else(|error| {
                tracing::error!(%error, "an event did not encode as JSON");
                "{}".to_owned()
            })
            .into_boxed_str();
        self.bytes += json.len();
        self.events.push_back(Encoded {
            event: event.clone(),
            json,
            frames: Vec::new(),
        });
        self.trim();
        self.events.len() - 1
    }

    /// Lets the oldest events go until at most [`EVENTS`] and [`BYTES`]
    /// are kept, or only the newest.
    fn trim(&mut self) {
        while self.events.len() > EVENTS || (self.bytes > BYTES && self.events.len() > 1) {
            if let Some(oldest) = self.events.pop_front() {
                self.bytes -= oldest.bytes();
            }
        }
    }
}

/// The encodings of recent events, per thread.
#[derive(Default)]
pub(super) struct EncodedEvents {
    recent: ThreadLocal<RefCell<Recent>>,
}

impl EncodedEvents {
    /// The event frame of `event` for the subscription `id` (None: the
    /// automatic one), built once per event, id and thread while the event
    /// is among the recent ones (for at most [`FRAMES_PER_EVENT`] ids).
    pub(super) fn frame(&self, event: &Arc<Event>, id: Option<&str>) -> Utf8Bytes {
        let mut recent = self.recent.get_or_default().borrow_mut();
        let index = recent.index_of(event);
        let encoded = &mut recent.events[index];
        if let Some((_, frame)) = encoded.frames.iter().find(|(i, _)| i.as_deref() == id) {
            return frame.clone();
        }
        let frame = Utf8Bytes::from(ServerFrame::event_json(id, &encoded.json));
        if encoded.frames.len() < FRAMES_PER_EVENT {
            encoded.frames.push((id.map(Box::from), frame.clone()));
            recent.bytes += frame.as_str().len();
            recent.trim();
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(offset: u64) -> Arc<Event> {
        Arc::new(Event {
            channel: "topic:news".into(),
            offset,
            r#type: "story.published".into(),
            ..Default::default()
        })
    }

    fn same_buffer(a: &Utf8Bytes, b: &Utf8Bytes) -> bool {
        a.as_str().as_ptr() == b.as_str().as_ptr()
    }

    /// How many events this thread keeps, and the frames kept for each.
    fn kept(encoded: &EncodedEvents) -> Vec<usize> {
        let recent = encoded.recent.get().expect("this thread's").borrow();
        recent.events.iter().map(|e| e.frames.len()).collect()
    }

    #[test]
    fn an_event_is_encoded_once_and_equal_events_are_not_confused() {
        let encoded = EncodedEvents::default();
        let first = event(1);
        let frame = encoded.frame(&first, None);
        assert!(
            same_buffer(&frame, &encoded.frame(&first, None)),
            "built again"
        );
        // An equal event in another allocation is another event.
        let twin = event(1);
        let other = encoded.frame(&twin, None);
        assert_eq!(frame.as_str(), other.as_str());
        assert!(!same_buffer(&frame, &other));
    }

    #[test]
    fn old_events_make_room_for_new_ones() {
        let encoded = EncodedEvents::default();
        let events: Vec<_> = (0..=EVENTS as u64).map(event).collect();
        let first = encoded.frame(&events[0], None);
        for event in &events[1..] {
            encoded.frame(event, None);
        }
        let again = encoded.frame(&events[0], None);
        assert_eq!(first.as_str(), again.as_str());
        assert!(
            !same_buffer(&first, &again),
            "still held after {EVENTS} others"
        );
        assert_eq!(kept(&encoded).len(), EVENTS);
    }

    #[test]
    fn sockets_spread_over_the_events_of_seconds_share_every_frame() {
        // Sockets up to 3 s behind a channel publishing 10 events a
        // second, each taking the next one of its own, round after round:
        // nothing is built twice.
        let encoded = EncodedEvents::default();
        let events: Vec<_> = (0..30).map(event).collect();
        let first: Vec<_> = events.iter().map(|e| encoded.frame(e, None)).collect();
        for (event, frame) in events.iter().zip(&first) {
            assert!(same_buffer(frame, &encoded.frame(event, None)));
        }
    }

    #[test]
    fn large_events_are_kept_within_the_byte_bound() {
        let encoded = EncodedEvents::default();
        let large = |offset| {
            let mut event = Event::clone(&event(offset));
            event.r#type = "x".repeat(200 * 1024);
            Arc::new(event)
        };
        let events: Vec<_> = (1..=10).map(large).collect();
        for event in &events {
            encoded.frame(event, None);
        }
        let recent = encoded.recent.get().expect("this thread's").borrow();
        let bytes: usize = recent.events.iter().map(Encoded::bytes).sum();
        assert_eq!(recent.bytes, bytes, "counted as kept");
        assert!(bytes <= BYTES, "{bytes} bytes kept");
        assert!(
            (1..10).contains(&recent.events.len()),
            "{} kept",
            recent.events.len()
        );
        assert!(Arc::ptr_eq(
            &recent.events.back().expect("one").event,
            &events[9]
        ));
        drop(recent);
        // One larger than the bound alone is still kept, until the next.
        let huge = Arc::new(Event {
            r#type: "y".repeat(BYTES + 1),
            ..Event::clone(&events[0])
        });
        let frame = encoded.frame(&huge, None);
        assert!(same_buffer(&frame, &encoded.frame(&huge, None)));
    }

    #[test]
    fn frames_are_built_once_per_event_and_id_and_say_the_same_as_the_event_frame() {
        let encoded = EncodedEvents::default();
        let news = event(7);
        let frame = encoded.frame(&news, Some("n"));
        let expected = ServerFrame::Event {
            id: Some("n"),
            event: &news,
        }
        .to_json();
        assert_eq!(frame.as_str(), expected);
        let again = encoded.frame(&news, Some("n"));
        assert!(same_buffer(&frame, &again), "the same buffer");
        let automatic = encoded.frame(&news, None);
        assert!(
            !automatic.as_str().contains(r#""id""#),
            "{}",
            automatic.as_str()
        );
        // Past the ids kept, frames are still right, just not kept.
        for id in ["a", "b", "c", "d", "e"] {
            let frame = encoded.frame(&news, Some(id));
            assert!(frame.as_str().contains(&format!(r#""id":"{id}""#)));
        }
        assert_eq!(kept(&encoded), vec![FRAMES_PER_EVENT]);
    }

    #[test]
    fn each_thread_keeps_its_own_and_they_say_the_same() {
        let encoded = EncodedEvents::default();
        let news = event(3);
        let here = encoded.frame(&news, Some("n"));
        let there = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let there = encoded.frame(&news, Some("n"));
                    assert!(same_buffer(&there, &encoded.frame(&news, Some("n"))));
                    there
                })
                .join()
                .expect("the other thread")
        });
        assert_eq!(here.as_str(), there.as_str());
        assert!(!same_buffer(&here, &there), "the other thread's own");
        assert!(same_buffer(&here, &encoded.frame(&news, Some("n"))));
    }
}
