//! What the subscribers received, matched against what was published:
//! by (topic, offset), since each topic numbers its events on its own.
//! From the match come the figures of a row: messages delivered, lost,
//! latencies and the errors seen (events out of order, of another topic,
//! or never published).

use std::{
    collections::{HashMap, hash_map::Entry},
    time::Duration,
};

use super::spread::topic_of;

/// What was published: when each event's `Publish` call started (since
/// the run's base), by (topic index, offset).
#[derive(Debug, Clone, Default)]
pub(super) struct Published {
    sent: HashMap<(usize, u64), Duration>,
    per_topic: Vec<u64>,
}

impl Published {
    pub(super) fn new(topics: usize, capacity: usize) -> Self {
        Self {
            sent: HashMap::with_capacity(capacity),
            per_topic: vec![0; topics],
        }
    }

    /// Event `offset` of topic `topic`, whose publish started at `sent`;
    /// an event already known keeps its first time.
    pub(super) fn insert(&mut self, topic: usize, offset: u64, sent: Duration) {
        if let Entry::Vacant(entry) = self.sent.entry((topic, offset)) {
            entry.insert(sent);
            if let Some(count) = self.per_topic.get_mut(topic) {
                *count += 1;
            }
        }
    }

    /// Events published, over every topic.
    pub(super) fn len(&self) -> u64 {
        self.per_topic.iter().sum()
    }

    /// The first publish's start.
    pub(super) fn first(&self) -> Duration {
        self.sent.values().min().copied().unwrap_or_default()
    }

    /// Messages the subscribers should receive: each topic's events times
    /// its subscribers (subscriber i has topic i mod the topics).
    pub(super) fn expected(&self, subscribers: usize) -> u64 {
        let topics = self.per_topic.len().max(1);
        let mut listeners = vec![0u64; topics];
        for i in 0..subscribers {
            listeners[topic_of(i, topics)] += 1;
        }
        self.per_topic
            .iter()
            .zip(listeners)
            .map(|(events, listeners)| events * listeners)
            .sum()
    }
}

/// What one socket received: its topic's index, (offset, when since the
/// run's base) per event of that topic, and why it stopped early or what
/// it received that it should not have.
#[derive(Debug, Clone, Default)]
pub(super) struct Read {
    pub(super) topic: usize,
    pub(super) events: Vec<(u64, Duration)>,
    pub(super) errors: Vec<String>,
}

/// The subscribers' receipts, matched.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Tally {
    /// Events received that were published to the socket's topic.
    pub(super) delivered: u64,
    /// Publish→receive of each, sorted.
    pub(super) latencies: Vec<Duration>,
    /// The last receipt, since the run's base.
    pub(super) last_delivery: Duration,
    pub(super) errors: Vec<String>,
}

impl Tally {
    /// Adds one socket's receipts: each must be a published offset of its
    /// topic, above the one before.
    pub(super) fn add(&mut self, read: Read, published: &Published) {
        self.errors.extend(read.errors);
        let mut previous = 0;
        for (offset, at) in read.events {
            if offset <= previous {
                self.errors
                    .push(format!("offset {offset} came after {previous}"));
            }
            previous = offset;
            let Some(sent) = published.sent.get(&(read.topic, offset)) else {
                // Published before this run's window (none are) or unknown.
                self.errors.push(format!(
                    "an event with unknown offset {offset} of topic {}",
                    read.topic
                ));
                continue;
            };
            self.delivered += 1;
            self.last_delivery = self.last_delivery.max(at);
            self.latencies.push(at.saturating_sub(*sent));
        }
    }

    /// p50, p99 and max of the latencies.
    pub(super) fn percentiles(&mut self) -> (Duration, Duration, Duration) {
        self.latencies.sort_unstable();
        let percentile = |q: f64| {
            self.latencies
                .get(((self.latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        (
            percentile(0.5),
            percentile(0.99),
            self.latencies.last().copied().unwrap_or_default(),
        )
    }
}

/// The offset of an event frame (`{"type":"event",…,"offset":"42",…}`);
/// None for other frames.
pub(crate) fn event_offset(frame: &[u8]) -> Option<u64> {
    let digits = field(frame, br#""offset":""#)?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The channel of an event frame (`…"event":{"channel":"topic:x",…`).
pub(crate) fn event_channel(frame: &[u8]) -> Option<&[u8]> {
    let name = field(frame, br#""channel":""#)?;
    Some(&name[..name.iter().position(|&b| b == b'"')?])
}

/// What follows `name` in an event frame.
fn field<'a>(frame: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if !frame.starts_with(br#"{"type":"event""#) {
        return None;
    }
    let at = frame.windows(name.len()).position(|w| w == name)? + name.len();
    Some(&frame[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &[u8] = br#"{"type":"event","id":"t","event":{"channel":"topic:b-7","namespace":"NAMESPACE_NOTIFICATIONS","offset":"4217","epoch":"e"}}"#;

    #[test]
    fn offsets_and_channels_are_read_from_event_frames_only() {
        assert_eq!(event_offset(EVENT), Some(4217));
        assert_eq!(event_channel(EVENT), Some(&b"topic:b-7"[..]));
        let subscribed =
            br#"{"type":"subscribed","id":"t","subscribed":{"offset":"3","channel":"topic:b"}}"#;
        assert_eq!(event_offset(subscribed), None);
        assert_eq!(event_channel(subscribed), None);
        assert_eq!(event_offset(br#"{"type":"event","event":{}}"#), None);
        assert_eq!(
            event_channel(br#"{"type":"event","event":{"channel":"x"#),
            None
        );
    }

    #[test]
    fn deliveries_are_matched_by_topic_and_offset() {
        let ms = Duration::from_millis;
        // Two topics number their events from 1 each, at other times.
        let mut published = Published::new(2, 4);
        published.insert(0, 1, ms(100));
        published.insert(0, 2, ms(200));
        published.insert(1, 1, ms(150));
        published.insert(1, 1, ms(999)); // the same event again: kept once, as first seen
        assert_eq!(published.len(), 3);
        assert_eq!(published.first(), ms(100));
        // 3 subscribers: two of topic 0, one of topic 1.
        assert_eq!(published.expected(3), 2 * 2 + 1);

        let mut tally = Tally::default();
        tally.add(
            Read {
                topic: 0,
                events: vec![(1, ms(110)), (2, ms(230))],
                errors: Vec::new(),
            },
            &published,
        );
        tally.add(
            Read {
                topic: 1,
                events: vec![(1, ms(190)), (2, ms(300))],
                errors: vec!["closed: 1001 going away".into()],
            },
            &published,
        );
        assert_eq!(tally.delivered, 3);
        assert_eq!(tally.last_delivery, ms(230));
        assert_eq!(tally.percentiles(), (ms(30), ms(40), ms(40)));
        assert_eq!(
            tally.errors,
            [
                "closed: 1001 going away",
                "an event with unknown offset 2 of topic 1"
            ]
        );

        let mut out_of_order = Tally::default();
        out_of_order.add(
            Read {
                topic: 0,
                events: vec![(2, ms(210)), (1, ms(220))],
                errors: Vec::new(),
            },
            &published,
        );
        assert_eq!(out_of_order.delivered, 2);
        assert_eq!(out_of_order.errors, ["offset 1 came after 2"]);
    }
}
