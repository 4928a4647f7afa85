//! What a notification request may ask, checked field by field before the
//! hub sees it: who may read which channel, a publication's channels,
//! type, payload and job, a subscription's positions, and page tokens.
//! Every refusal names the field (INVALID_ARGUMENT with a field violation).

use super::*;

/// Who is reading channels, as far as what they may read goes: a user (by
/// id) or a backend service. A socket's held caller and a caller
/// authenticated from credentials both come down to this.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reader<'a> {
    /// A signed-in user, by id.
    User(&'a str),
    /// A backend service.
    Service,
}

impl<'a> From<&'a Caller> for Reader<'a> {
    fn from(caller: &'a Caller) -> Self {
        match caller {
            Caller::User(user) => Reader::User(&user.user_id),
            Caller::Service(_) => Reader::Service,
        }
    }
}

/// Checks that `reader` may follow or read `channel`.
pub(super) fn may_read(reader: Reader<'_>, channel: &ChannelName) -> Result<(), Status> {
    match (reader, channel) {
        (Reader::Service, _) | (Reader::User(_), ChannelName::Topic(_)) => Ok(()),
        (Reader::User(user), ChannelName::User(id)) if id == user => Ok(()),
        (Reader::User(_), ChannelName::User(_)) => Err(with_reason(
            ErrorReason::ChannelForbidden,
            "a user may follow only their own channel (user:<your id>) and topics",
        )),
    }
}

pub(super) fn channel(field: &str, name: &str) -> Result<ChannelName, Status> {
    ChannelName::parse(name).or_invalid(field)
}

/// A namespace filter: each must be a real namespace.
pub(super) fn namespaces(field: &str, namespaces: &[i32]) -> Result<Vec<i32>, Status> {
    for &n in namespaces {
        match Namespace::try_from(n) {
            Ok(Namespace::Notifications | Namespace::Media) => {}
            _ => {
                return Err(invalid(
                    field,
                    format!(
                        "{n} is not a namespace (NAMESPACE_NOTIFICATIONS or NAMESPACE_MEDIA); leave the list empty for all"
                    ),
                ));
            }
        }
    }
    Ok(namespaces.to_vec())
}

/// The longest idempotency key, in characters.
pub(super) const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// Checks a Publish request's idempotency key: None when there is none.
pub(super) fn idempotency_key(key: &str) -> Result<Option<&str>, Status> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_CHARS
        || !key.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b':' | b'~' | b'+' | b'/' | b'=')
        })
    {
        return Err(invalid(
            "idempotency_key",
            "must be 1 to 128 characters of letters, digits and `-`, `_`, `.`, `:`, `~`, `+`, `/`, `=` (a UUID, say)",
        ));
    }
    Ok(Some(key))
}

/// Checks a Publish request; returns the distinct channels and the event.
pub(super) fn publication(
    request: notification::PublishRequest,
) -> Result<(Vec<ChannelName>, Event), Status> {
    if request.channels.is_empty() {
        return Err(invalid("channels", "name at least one channel"));
    }
    if request.channels.len() > MAX_PUBLISH_CHANNELS {
        return Err(invalid(
            "channels",
            format!("at most {MAX_PUBLISH_CHANNELS} channels per call"),
        ));
    }
    let mut channels: Vec<ChannelName> = Vec::with_capacity(request.channels.len());
    for (i, name) in request.channels.iter().enumerate() {
        let parsed = channel(&format!("channels[{i}]"), name)?;
        if !channels.contains(&parsed) {
            channels.push(parsed);
        }
    }
    let namespace = match Namespace::try_from(request.namespace) {
        Ok(Namespace::Unspecified) => Namespace::Notifications,
        Ok(namespace) => namespace,
        Err(_) => return Err(invalid("namespace", "not a namespace")),
    };
    let chars = request.r#type.chars().count();
    if chars == 0 || chars > MAX_TYPE_CHARS {
        return Err(invalid("type", "must be 1 to 128 characters"));
    }
    if !request
        .r#type
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    {
        return Err(invalid(
            "type",
            "may hold only letters, digits, `.`, `_`, `-` and `:`",
        ));
    }
    let mut payload = request.payload;
    if let Some(payload) = &mut payload {
        if payload.encoded_len() > MAX_PAYLOAD_BYTES {
            return Err(invalid("payload", "must be at most 64 KiB once encoded"));
        }
        normalize_payload(payload, MAX_PAYLOAD_DEPTH).or_invalid("payload")?;
    }
    match (namespace, &request.job) {
        (Namespace::Media, None) => {
            return Err(invalid("job", "media events must carry the job's progress"));
        }
        (Namespace::Media, Some(job)) => check_job(job)?,
        (_, Some(_)) => {
            return Err(invalid(
                "job",
                "only media events (NAMESPACE_MEDIA) carry job progress",
            ));
        }
        (_, None) => {}
    }
    Ok((
        channels,
        Event {
            namespace: namespace as i32,
            r#type: request.r#type,
            payload,
            job: request.job,
            ..Event::default()
        },
    ))
}

/// Checks that `payload` reads back the same through every door, making it
/// so where it can: objects and arrays nested at most `levels` deep (itself
/// the first), numbers finite (NaN and the infinities have no JSON), and a
/// value of no kind (what pbjson makes of a JSON `null`) or an unknown
/// NullValue number stored as the null value it means (protobuf readers
/// refuse a Value with no kind). Walks at
/// most `levels` deep, so a hostile payload costs no deep recursion here.
pub(super) fn normalize_payload(
    payload: &mut pbjson_types::Struct,
    levels: usize,
) -> Result<(), String> {
    use pbjson_types::{Value, value::Kind};
    fn check(value: &mut Value, levels: usize) -> Result<(), String> {
        match &mut value.kind {
            Some(Kind::StructValue(object)) => normalize_payload(object, levels),
            Some(Kind::ListValue(_)) if levels == 0 => Err(too_deep()),
            Some(Kind::ListValue(list)) => list
                .values
                .iter_mut()
                .try_for_each(|item| check(item, levels - 1)),
            Some(Kind::NumberValue(number)) if !number.is_finite() => {
                Err("numbers must be finite (JSON has no NaN or infinity)".into())
            }
            // No kind, or a NullValue enum number that is not NULL_VALUE
            // (proto3 enums are open): both mean null, and read back so.
            None | Some(Kind::NullValue(_)) => {
                value.kind = Some(Kind::NullValue(0));
                Ok(())
            }
            Some(_) => Ok(()),
        }
    }
    fn too_deep() -> String {
        format!("may nest objects and arrays at most {MAX_PAYLOAD_DEPTH} levels deep")
    }
    if levels == 0 {
        return Err(too_deep());
    }
    payload
        .fields
        .values_mut()
        .try_for_each(|item| check(item, levels - 1))
}

pub(super) fn check_job(job: &JobProgress) -> Result<(), Status> {
    let id_chars = job.job_id.chars().count();
    if id_chars == 0 || id_chars > MAX_JOB_ID_CHARS {
        return Err(invalid("job.job_id", "must be 1 to 128 characters"));
    }
    match JobState::try_from(job.state) {
        Ok(JobState::Unspecified) | Err(_) => {
            return Err(invalid("job.state", "must be a job state"));
        }
        Ok(_) => {}
    }
    if !(0.0..=100.0).contains(&job.percent) {
        return Err(invalid("job.percent", "must be from 0 to 100"));
    }
    if job.message.chars().count() > MAX_JOB_MESSAGE_CHARS {
        return Err(invalid("job.message", "must be at most 1,024 characters"));
    }
    Ok(())
}

/// One checked subscription: channel, namespace filter, resume position.
type Wanted = (ChannelName, Vec<i32>, Option<StreamPosition>);

/// Checks a Subscribe request against what the caller may follow.
pub(super) fn subscriptions(
    reader: Reader<'_>,
    request: notification::SubscribeRequest,
) -> Result<Vec<Wanted>, Status> {
    if request.subscriptions.is_empty() {
        return match reader {
            Reader::User(user_id) => Ok(vec![(ChannelName::user(user_id), Vec::new(), None)]),
            Reader::Service => Err(invalid(
                "subscriptions",
                "a service must name the channels to follow",
            )),
        };
    }
    if request.subscriptions.len() > MAX_SUBSCRIPTIONS {
        return Err(invalid(
            "subscriptions",
            format!("at most {MAX_SUBSCRIPTIONS} channels per stream"),
        ));
    }
    let mut wanted: Vec<Wanted> = Vec::with_capacity(request.subscriptions.len());
    for (i, subscription) in request.subscriptions.into_iter().enumerate() {
        let name = channel(
            &format!("subscriptions[{i}].channel"),
            &subscription.channel,
        )?;
        if wanted.iter().any(|(seen, _, _)| *seen == name) {
            return Err(invalid(
                &format!("subscriptions[{i}].channel"),
                "follows a channel already in the list",
            ));
        }
        let filter = namespaces(
            &format!("subscriptions[{i}].namespaces"),
            &subscription.namespaces,
        )?;
        if let Some(resume) = &subscription.resume_from
            && resume.epoch.is_empty()
            && resume.offset != 0
        {
            return Err(invalid(
                &format!("subscriptions[{i}].resume_from.epoch"),
                "give the epoch of the position to resume from (only offset 0, before a channel's first event, has none)",
            ));
        }
        may_read(reader, &name)?;
        wanted.push((name, filter, subscription.resume_from));
    }
    Ok(wanted)
}

/// The page token of ListChannelEvents: the last offset and the epoch.
pub(super) fn page_token(offset: u64, epoch: &str) -> String {
    format!("{offset}.{epoch}")
}

pub(super) fn parse_page_token(token: &str) -> Result<StreamPosition, Status> {
    token
        .split_once('.')
        .and_then(|(offset, epoch)| {
            Some(StreamPosition {
                offset: offset.parse().ok()?,
                epoch: epoch.to_owned(),
            })
        })
        .filter(|position| !position.epoch.is_empty())
        .ok_or_else(|| invalid("page_token", "not a page token this server issued"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt as _;

    fn request(channels: &[&str]) -> notification::PublishRequest {
        notification::PublishRequest {
            channels: channels.iter().map(|c| (*c).to_owned()).collect(),
            r#type: "comment.created".into(),
            ..Default::default()
        }
    }

    fn field_of(status: &Status) -> String {
        status
            .get_details_bad_request()
            .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
            .unwrap_or_default()
    }

    #[test]
    fn publications_are_checked_field_by_field() {
        let job = JobProgress {
            job_id: "j1".into(),
            state: JobState::Running as i32,
            percent: 50.0,
            message: String::new(),
        };
        let media = |job: Option<JobProgress>| notification::PublishRequest {
            namespace: Namespace::Media as i32,
            job,
            ..request(&["user:u1"])
        };
        let mut big = pbjson_types::Struct::default();
        big.fields.insert(
            "x".into(),
            pbjson_types::Value::from("a".repeat(MAX_PAYLOAD_BYTES)),
        );
        let cases = [
            (request(&[]), "channels"),
            (request(&["room:1"]), "channels[0]"),
            (request(&["topic:ok", "topic:NO"]), "channels[1]"),
            (
                notification::PublishRequest {
                    r#type: String::new(),
                    ..request(&["topic:a"])
                },
                "type",
            ),
            (
                notification::PublishRequest {
                    r#type: "has space".into(),
                    ..request(&["topic:a"])
                },
                "type",
            ),
            (
                notification::PublishRequest {
                    namespace: 9,
                    ..request(&["topic:a"])
                },
                "namespace",
            ),
            (
                notification::PublishRequest {
                    payload: Some(big),
                    ..request(&["topic:a"])
                },
                "payload",
            ),
            (media(None), "job"),
            (
                notification::PublishRequest {
                    job: Some(job.clone()),
                    ..request(&["user:u1"])
                },
                "job",
            ),
            (
                media(Some(JobProgress {
                    job_id: String::new(),
                    ..job.clone()
                })),
                "job.job_id",
            ),
            (
                media(Some(JobProgress {
                    state: 0,
                    ..job.clone()
                })),
                "job.state",
            ),
            (
                media(Some(JobProgress {
                    percent: 100.5,
                    ..job.clone()
                })),
                "job.percent",
            ),
            (
                media(Some(JobProgress {
                    percent: f64::NAN,
                    ..job.clone()
                })),
                "job.percent",
            ),
        ];
        for (request, field) in cases {
            let status = publication(request.clone()).expect_err(field);
            assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
            assert_eq!(field_of(&status), field, "{request:?}");
        }
        let (channels, event) = publication(media(Some(job))).unwrap();
        assert_eq!(channels, [ChannelName::user("u1")]);
        assert_eq!(event.namespace, Namespace::Media as i32);
    }

    /// A payload nested `depth` levels of objects (the payload itself is
    /// level 1).
    fn nested(depth: usize) -> pbjson_types::Struct {
        let mut payload = pbjson_types::Struct::default();
        payload
            .fields
            .insert("leaf".into(), pbjson_types::Value::from("x".to_string()));
        for _ in 1..depth {
            let mut outer = pbjson_types::Struct::default();
            outer.fields.insert(
                "inner".into(),
                pbjson_types::Value {
                    kind: Some(pbjson_types::value::Kind::StructValue(payload)),
                },
            );
            payload = outer;
        }
        payload
    }

    #[test]
    fn payloads_nested_deeper_than_every_reader_decodes_are_refused() {
        let with = |payload| notification::PublishRequest {
            payload: Some(payload),
            ..request(&["topic:a"])
        };
        for depth in [MAX_PAYLOAD_DEPTH + 1, 35, 200] {
            let status = publication(with(nested(depth))).expect_err("too deep");
            assert_eq!(status.code(), Code::InvalidArgument, "depth {depth}");
            assert_eq!(field_of(&status), "payload");
            assert!(status.message().contains("32"), "{}", status.message());
        }
        let mut list = pbjson_types::Struct::default();
        let mut value = pbjson_types::Value::from("x".to_string());
        for _ in 0..MAX_PAYLOAD_DEPTH {
            value = pbjson_types::Value {
                kind: Some(pbjson_types::value::Kind::ListValue(
                    pbjson_types::ListValue {
                        values: vec![value],
                    },
                )),
            };
        }
        list.fields.insert("deep".into(), value);
        assert_eq!(
            field_of(&publication(with(list)).unwrap_err()),
            "payload",
            "arrays count as levels too"
        );

        // The deepest payload allowed decodes wherever an event is read:
        // stored alone (Redis history), and inside a stream message.
        let (_, event) = publication(with(nested(MAX_PAYLOAD_DEPTH))).expect("deep enough");
        let event = Event {
            channel: "topic:a".into(),
            offset: 1,
            epoch: "e".into(),
            ..event
        };
        assert_eq!(
            Event::decode(event.encode_to_vec().as_slice()).unwrap(),
            event
        );
        let message = SubscribeResponse {
            message: Some(subscribe_response::Message::Event(event)),
        };
        assert_eq!(
            SubscribeResponse::decode(message.encode_to_vec().as_slice()).unwrap(),
            message
        );
    }

    #[test]
    fn payload_numbers_must_be_finite_and_nulls_are_null_values() {
        use pbjson_types::{Value, value::Kind};
        let with = |fields: Vec<(&str, Value)>| notification::PublishRequest {
            payload: Some(pbjson_types::Struct {
                fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            }),
            ..request(&["topic:a"])
        };
        // NaN and the infinities have no JSON: the event could not be sent
        // to any JSON door.
        for number in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let nested = Value {
                kind: Some(Kind::ListValue(pbjson_types::ListValue {
                    values: vec![Value::from(number)],
                })),
            };
            let status = publication(with(vec![("x", nested)])).unwrap_err();
            assert_eq!(field_of(&status), "payload", "{number}");
            assert!(status.message().contains("finite"), "{}", status.message());
        }
        // A value of no kind (what JSON null parses to) is stored as the
        // null it means: protobuf readers refuse a Value with no kind.
        let (_, event) = publication(with(vec![("gone", Value { kind: None })])).unwrap();
        assert_eq!(
            event.payload.unwrap().fields["gone"].kind,
            Some(Kind::NullValue(0))
        );
    }

    #[test]
    fn idempotency_keys_are_checked() {
        assert_eq!(idempotency_key("").unwrap(), None);
        for good in ["6f1c2d3e-1111-4a5b-9c8d-0123456789ab", "job:42/try=1", "a"] {
            assert_eq!(idempotency_key(good).unwrap(), Some(good));
        }
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY_CHARS + 1);
        for bad in ["has space", "ünïcode", "new\nline", long.as_str()] {
            let status = idempotency_key(bad).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
            assert_eq!(field_of(&status), "idempotency_key");
        }
    }

    #[test]
    fn publishing_dedups_channels_and_defaults_the_namespace() {
        let (channels, event) = publication(request(&["topic:a", "user:u1", "topic:a"])).unwrap();
        assert_eq!(
            channels,
            [ChannelName::Topic("a".into()), ChannelName::user("u1")]
        );
        assert_eq!(event.namespace, Namespace::Notifications as i32);
        let too_many: Vec<String> = (0..=MAX_PUBLISH_CHANNELS)
            .map(|i| format!("user:u{i}"))
            .collect();
        let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
        assert_eq!(
            field_of(&publication(request(&refs)).unwrap_err()),
            "channels"
        );
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let token = page_token(42, "Ab-_9");
        let position = parse_page_token(&token).unwrap();
        assert_eq!((position.offset, position.epoch.as_str()), (42, "Ab-_9"));
        for bad in ["", "42", "x.ab", "42.", ".ab"] {
            assert_eq!(
                parse_page_token(bad).unwrap_err().code(),
                Code::InvalidArgument,
                "{bad:?}"
            );
        }
    }
}
