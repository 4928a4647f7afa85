//! Events encoded once per instance rather than once per socket.
//!
//! Every subscriber of a channel on this instance receives the same
//! `Arc<Event>` (see [`slop_context::Delivery`]), one after the other as the
//! sockets' tasks run. The adapter keeps the JSON of the last few events it
//! encoded, keyed by that allocation, and the whole event frame for the
//! subscription ids it was sent under (sockets of one app tend to use the
//! same ids), so ten thousand sockets following a topic cost one encoding
//! per event, and each socket's frame is a shared buffer, not a copy.

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::ws::Utf8Bytes;
use slop_api::notification::Event;

use super::frames::ServerFrame;

/// How many recent events keep their encoding: enough for a few channels
/// publishing at once; each holds its event (at most 64 KiB of payload).
const SLOTS: usize = 8;
/// How many subscription ids an event keeps a ready frame for.
const FRAMES_PER_EVENT: usize = 4;

/// A recent event, its canonical JSON, and its frames by subscription id.
/// Holding the event keeps its allocation alive, so no other event can take
/// its address meanwhile.
struct Encoded {
    event: Arc<Event>,
    json: Arc<str>,
    frames: Vec<(Option<Box<str>>, Utf8Bytes)>,
}

/// The encodings of recent events.
#[derive(Default)]
pub(super) struct EncodedEvents {
    slots: Mutex<([Option<Encoded>; SLOTS], usize)>,
}

impl EncodedEvents {
    /// The canonical JSON of `event`, encoded at most once while it is
    /// among the recent ones.
    fn json(&self, event: &Arc<Event>) -> Arc<str> {
        if let Some(json) = self
            .lock()
            .0
            .iter()
            .flatten()
            .find(|e| Arc::ptr_eq(&e.event, event))
        {
            return json.json.clone();
        }
        let json: Arc<str> = slop_api::json::to_string(event.as_ref())
            .unwrap_or_else(|error| {
                // Only maps with non-string keys fail, which no event has.
                tracing::error!(%error, "an event did not encode as JSON");
                "{}".to_owned()
            })
            .into();
        let mut guard = self.lock();
        let (slots, next) = &mut *guard;
        if !slots.iter().flatten().any(|e| Arc::ptr_eq(&e.event, event)) {
            slots[*next] = Some(Encoded {
                event: event.clone(),
                json: json.clone(),
                frames: Vec::new(),
            });
            *next = (*next + 1) % SLOTS;
        }
        json
    }

    /// The event frame of `event` for the subscription `id`: the text of
    /// [`ServerFrame::Event`], built at most once per recent event and id.
    pub(super) fn frame(&self, event: &Arc<Event>, id: Option<&str>) -> Utf8Bytes {
        // Every socket but the first: one lock, a shared buffer.
        if let Some(frame) = self.lock().0.iter().flatten().find_map(|e| {
            Arc::ptr_eq(&e.event, event)
                .then(|| e.frames.iter().find(|(i, _)| i.as_deref() == id))
                .flatten()
                .map(|(_, frame)| frame.clone())
        }) {
            return frame;
        }
        let frame = Utf8Bytes::from(ServerFrame::event_json(id, &self.json(event)));
        let mut guard = self.lock();
        if let Some(encoded) = guard
            .0
            .iter_mut()
            .flatten()
            .find(|e| Arc::ptr_eq(&e.event, event))
            && encoded.frames.len() < FRAMES_PER_EVENT
            && !encoded.frames.iter().any(|(i, _)| i.as_deref() == id)
        {
            encoded.frames.push((id.map(Box::from), frame.clone()));
        }
        frame
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ([Option<Encoded>; SLOTS], usize)> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
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

    #[test]
    fn an_event_is_encoded_once_and_equal_events_are_not_confused() {
        let encoded = EncodedEvents::default();
        let first = event(1);
        let json = encoded.json(&first);
        assert_eq!(*json, slop_api::json::to_string(first.as_ref()).unwrap());
        assert!(Arc::ptr_eq(&json, &encoded.json(&first)), "encoded again");
        // An equal event in another allocation is another event.
        let twin = event(1);
        assert!(!Arc::ptr_eq(&json, &encoded.json(&twin)));
    }

    #[test]
    fn old_events_make_room_for_new_ones() {
        let encoded = EncodedEvents::default();
        let events: Vec<_> = (0..=SLOTS as u64).map(event).collect();
        let first = encoded.json(&events[0]);
        for event in &events[1..] {
            encoded.json(event);
        }
        let again = encoded.json(&events[0]);
        assert_eq!(first, again);
        assert!(
            !Arc::ptr_eq(&first, &again),
            "still held after {SLOTS} others"
        );
        let guard = encoded.slots.lock().unwrap();
        assert_eq!(guard.0.iter().flatten().count(), SLOTS);
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
        assert_eq!(
            frame.as_str().as_ptr(),
            again.as_str().as_ptr(),
            "the same buffer"
        );
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
        let guard = encoded.slots.lock().unwrap();
        let kept = guard.0.iter().flatten().next().unwrap().frames.len();
        assert_eq!(kept, FRAMES_PER_EVENT);
    }
}
