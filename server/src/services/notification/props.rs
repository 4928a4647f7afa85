//! Property tests of publish payloads (issue #8): [`publication`] over
//! arbitrary `google.protobuf.Struct` payloads — nested up to twice
//! [`MAX_PAYLOAD_DEPTH`], with NaN, infinities, huge and tiny doubles, any
//! text, lists, nulls and values of no kind.
//!
//! What must hold: checking a request never panics; it refuses with
//! INVALID_ARGUMENT and a message, or it gives an event that every reader
//! reads back exactly: protobuf (alone, as history stores it, and inside a
//! stream message) and canonical JSON (the REST, SSE and WebSocket form).
//! And a payload JSON could have carried is accepted exactly when it is
//! within the size and depth limits. Payload doubles are compared bit for
//! bit, so NaN is itself and -0 is not 0. Cases: `PROPTEST_CASES` (256
//! unless set); docs/testing.md has the long run.

use pbjson_types::{ListValue, Struct, Timestamp, Value, value::Kind};
use proptest::{prelude::*, test_runner::TestCaseError};

use super::{requests::*, *};
use tonic::Code;

/// Doubles of every kind: any bit pattern, the edges, and integers.
fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::EPSILON,
            5e-324,
            -0.0,
            9_007_199_254_740_992.0,
            9_007_199_254_740_994.0,
            1e300,
        ]),
        any::<i64>().prop_map(|n| n as f64),
    ]
}

/// Doubles JSON has a literal for.
fn finite_number() -> impl Strategy<Value = f64> {
    use prop::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO,
        any::<i64>().prop_map(|n| n as f64),
    ]
}

fn value_of(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

/// A leaf JSON could carry (`json`), or any leaf protobuf can: also
/// NaN and the infinities, a `null_value` other than NULL_VALUE, and a
/// Value with no kind set.
fn leaf(json: bool) -> BoxedStrategy<Value> {
    let common = prop_oneof![
        Just(value_of(Kind::NullValue(0))),
        any::<bool>().prop_map(|b| value_of(Kind::BoolValue(b))),
        any::<String>().prop_map(|s| value_of(Kind::StringValue(s))),
    ];
    if json {
        prop_oneof![
            common,
            finite_number().prop_map(|n| value_of(Kind::NumberValue(n))),
        ]
        .boxed()
    } else {
        prop_oneof![
            6 => common,
            6 => number().prop_map(|n| value_of(Kind::NumberValue(n))),
            1 => Just(Value { kind: None }),
            1 => (1..i32::MAX).prop_map(|n| value_of(Kind::NullValue(n))),
        ]
        .boxed()
    }
}

fn object(fields: Vec<(String, Value)>) -> Struct {
    Struct {
        fields: fields.into_iter().collect(),
    }
}

/// A tree of objects and lists, a few levels deep, under a chain of up to
/// 64 more (past the 32-level limit, and past what decoders read).
fn value(json: bool) -> impl Strategy<Value = Value> {
    let tree = leaf(json).prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(|values| value_of(Kind::ListValue(ListValue { values }))),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|fields| value_of(Kind::StructValue(object(fields)))),
        ]
    });
    (
        tree,
        prop::collection::vec((any::<bool>(), "[a-z]{0,3}"), 0..64),
    )
        .prop_map(|(tree, chain)| {
            chain.into_iter().fold(tree, |inner, (list, key)| {
                value_of(if list {
                    Kind::ListValue(ListValue {
                        values: vec![inner],
                    })
                } else {
                    Kind::StructValue(object(vec![(key, inner)]))
                })
            })
        })
}

fn payload(json: bool) -> impl Strategy<Value = Struct> {
    prop::collection::vec(("\\PC{0,8}", value(json)), 0..5).prop_map(object)
}

/// A publish request that passes every check but the payload's (and a
/// media job's percent, any double).
fn request(payload: Struct, media: Option<f64>) -> notification::PublishRequest {
    notification::PublishRequest {
        channels: vec!["topic:news".into(), "user:u1".into()],
        namespace: if media.is_some() {
            Namespace::Media as i32
        } else {
            Namespace::Unspecified as i32
        },
        r#type: "comment.created".into(),
        payload: Some(payload),
        job: media.map(|percent| JobProgress {
            job_id: "job-1".into(),
            state: JobState::Running as i32,
            percent,
            message: "encoding".into(),
        }),
        ..Default::default()
    }
}

/// The event as the hub stores it: a channel, offset, epoch and time.
fn stored(event: Event, offset: u64, nanos: i32) -> Event {
    Event {
        channel: "topic:news".into(),
        offset,
        epoch: "kq3Vb1".into(),
        time: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos,
        }),
        ..event
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (&a.kind, &b.kind) {
        (None, None) => true,
        (Some(Kind::NumberValue(x)), Some(Kind::NumberValue(y))) => x.to_bits() == y.to_bits(),
        (Some(Kind::StructValue(x)), Some(Kind::StructValue(y))) => same_struct(x, y),
        (Some(Kind::ListValue(x)), Some(Kind::ListValue(y))) => {
            x.values.len() == y.values.len()
                && x.values
                    .iter()
                    .zip(&y.values)
                    .all(|(x, y)| same_value(x, y))
        }
        (x, y) => x == y,
    }
}

fn same_struct(a: &Struct, b: &Struct) -> bool {
    a.fields.len() == b.fields.len()
        && a.fields
            .iter()
            .all(|(key, x)| b.fields.get(key).is_some_and(|y| same_value(x, y)))
}

/// Equal: payload doubles bit for bit, the job's percent as a number.
fn same_event(a: &Event, b: &Event) -> bool {
    let rest = |e: &Event| Event {
        payload: None,
        job: e.job.clone().map(|job| JobProgress {
            percent: 0.0,
            ..job
        }),
        ..e.clone()
    };
    // Compared as numbers: prost writes no implicit-presence field equal to
    // 0, so -0 is read back as 0 (payload numbers, in a oneof, keep their
    // sign).
    let percent = |e: &Event| {
        e.job.as_ref().map(|job| {
            if job.percent.is_nan() {
                f64::NAN.to_bits()
            } else {
                (job.percent + 0.0).to_bits()
            }
        })
    };
    let payloads = match (&a.payload, &b.payload) {
        (Some(x), Some(y)) => same_struct(x, y),
        (x, y) => x.is_none() && y.is_none(),
    };
    rest(a) == rest(b) && percent(a) == percent(b) && payloads
}

/// The event [`publication`] makes of `request`, as the hub stores it; or
/// `None` when it refuses the request, as it may only with
/// INVALID_ARGUMENT and a message.
fn published(
    request: notification::PublishRequest,
    offset: u64,
    nanos: i32,
) -> Result<Option<Event>, TestCaseError> {
    match publication(request) {
        Ok((channels, event)) => {
            prop_assert_eq!(channels.len(), 2);
            Ok(Some(stored(event, offset, nanos)))
        }
        Err(status) => {
            prop_assert_eq!(status.code(), Code::InvalidArgument);
            prop_assert!(!status.message().is_empty());
            Ok(None)
        }
    }
}

/// Protobuf reads the event back exactly: alone, as history stores it, and
/// inside a stream message.
fn decodes_exactly(event: &Event) -> Result<(), TestCaseError> {
    let decoded = Event::decode(event.encode_to_vec().as_slice());
    prop_assert!(
        decoded.is_ok(),
        "a published event does not decode: {decoded:?}"
    );
    prop_assert!(
        same_event(&decoded.unwrap(), event),
        "protobuf changed the event"
    );

    let message = SubscribeResponse {
        message: Some(subscribe_response::Message::Event(event.clone())),
    };
    let decoded = SubscribeResponse::decode(message.encode_to_vec().as_slice());
    prop_assert!(
        decoded.is_ok(),
        "a stream message does not decode: {decoded:?}"
    );
    let decoded = decoded.unwrap().message;
    prop_assert!(
        matches!(&decoded, Some(subscribe_response::Message::Event(e)) if same_event(e, event)),
        "protobuf changed the streamed event"
    );
    Ok(())
}

/// The event has canonical JSON, as the JSON doors write it, and that JSON
/// parses back to exactly the event. (pbjson-types reads a JSON `null` as a
/// Value of no kind, influxdata/pbjson#100, where the server stores the null
/// value: the parsed side says what it means before comparing.)
fn json_reads_back_exactly(event: &Event) -> Result<(), TestCaseError> {
    let json = slop_api::json::to_string(event);
    prop_assert!(json.is_ok(), "a published event has no JSON: {json:?}");
    let json = json.unwrap();
    let parsed = serde_json::from_str::<Event>(&json);
    prop_assert!(parsed.is_ok(), "its JSON does not parse: {parsed:?}");
    let mut parsed = parsed.unwrap();
    if let Some(payload) = &mut parsed.payload {
        nulls_as_null_values(payload);
    }
    prop_assert!(same_event(&parsed, event), "JSON changed the event: {json}");
    Ok(())
}

/// Values of no kind become the null value, at every depth.
fn nulls_as_null_values(payload: &mut Struct) {
    fn normalize(value: &mut Value) {
        match &mut value.kind {
            None => value.kind = Some(Kind::NullValue(0)),
            Some(Kind::StructValue(object)) => nulls_as_null_values(object),
            Some(Kind::ListValue(list)) => list.values.iter_mut().for_each(normalize),
            Some(_) => {}
        }
    }
    payload.fields.values_mut().for_each(normalize);
}

/// How deep `payload` nests objects and arrays, itself being level 1.
fn depth(payload: &Struct) -> usize {
    fn of(value: &Value) -> usize {
        match &value.kind {
            Some(Kind::StructValue(object)) => depth(object),
            Some(Kind::ListValue(list)) => 1 + list.values.iter().map(of).max().unwrap_or(0),
            _ => 0,
        }
    }
    1 + payload.fields.values().map(of).max().unwrap_or(0)
}

proptest! {
    /// Any payload, of a plain or a media event (whose job's percent is
    /// any double): refused, or read back exactly from protobuf.
    #[test]
    fn published_events_decode_exactly(
        payload in payload(false),
        media in prop::option::of(number()),
        offset in any::<u64>(),
        nanos in 0..1_000_000_000i32,
    ) {
        if let Some(event) = published(request(payload, media), offset, nanos)? {
            decodes_exactly(&event)?;
        }
    }

    /// Any payload, of a plain or a media event: refused, or read back
    /// exactly from its canonical JSON (the REST, SSE and WebSocket form).
    #[test]
    fn published_events_read_back_exactly_from_json(
        payload in payload(false),
        media in prop::option::of(number()),
        offset in any::<u64>(),
        nanos in 0..1_000_000_000i32,
    ) {
        if let Some(event) = published(request(payload, media), offset, nanos)? {
            json_reads_back_exactly(&event)?;
        }
    }

    /// A payload JSON could carry is published exactly when it is within
    /// the size and depth limits.
    #[test]
    fn json_payloads_within_the_limits_are_published(payload in payload(true)) {
        let within = depth(&payload) <= MAX_PAYLOAD_DEPTH
            && payload.encoded_len() <= MAX_PAYLOAD_BYTES;
        let result = publication(request(payload.clone(), None));
        prop_assert_eq!(result.is_ok(), within, "depth {}: {:?}", depth(&payload), result.err());
    }
}
