//! Events encoded once per instance rather than once per socket.
//!
//! Every subscriber of a channel on this instance receives the same
//! `Arc<Event>` (see [`crate::Delivery`]), one after the other as the
//! sockets' tasks run. The adapter keeps the JSON of the last few events it
//! encoded, keyed by that allocation, so ten thousand sockets following a
//! topic cost one encoding per event, not ten thousand.

use std::sync::{Arc, Mutex, PoisonError};

use slop_api::notification::Event;

/// How many recent events keep their encoding: enough for a few channels
/// publishing at once; each holds its event (at most 64 KiB of payload).
const SLOTS: usize = 8;

/// A recent event and its canonical JSON. Holding the event keeps its
/// allocation alive, so no other event can take its address meanwhile.
type Slot = Option<(Arc<Event>, Arc<str>)>;

/// The encodings of recent events.
#[derive(Default)]
pub(super) struct EncodedEvents {
    slots: Mutex<([Slot; SLOTS], usize)>,
}

impl EncodedEvents {
    /// The canonical JSON of `event`, encoded at most once while it is
    /// among the recent ones.
    pub(super) fn json(&self, event: &Arc<Event>) -> Arc<str> {
        if let Some(json) = self.find(event) {
            return json;
        }
        let json: Arc<str> = serde_json::to_string(event.as_ref())
            .unwrap_or_else(|error| {
                // Only maps with non-string keys fail, which no event has.
                tracing::error!(%error, "an event did not encode as JSON");
                "{}".to_owned()
            })
            .into();
        let mut guard = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let (slots, next) = &mut *guard;
        if !slots.iter().flatten().any(|(e, _)| Arc::ptr_eq(e, event)) {
            slots[*next] = Some((event.clone(), json.clone()));
            *next = (*next + 1) % SLOTS;
        }
        json
    }

    fn find(&self, event: &Arc<Event>) -> Option<Arc<str>> {
        let guard = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .0
            .iter()
            .flatten()
            .find(|(e, _)| Arc::ptr_eq(e, event))
            .map(|(_, json)| json.clone())
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
        assert_eq!(*json, serde_json::to_string(first.as_ref()).unwrap());
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
}
