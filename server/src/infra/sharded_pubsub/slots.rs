//! Where each hash slot lives: the slot of a channel, and the slot map
//! of a Redis Cluster as `CLUSTER SLOTS` gives it.

use std::collections::HashSet;

use redis::{Value, aio::MultiplexedConnection};

use crate::infra::redis_context::TIMEOUT;

/// The primary of each hash slot, as ranges sorted by their first slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotMap(Vec<(u16, u16, String)>);

impl SlotMap {
    /// The `host:port` of the primary serving `slot`.
    pub(super) fn owner(&self, slot: u16) -> Option<&str> {
        let index = self.0.partition_point(|(start, _, _)| *start <= slot);
        let (start, end, node) = self.0.get(index.checked_sub(1)?)?;
        (*start <= slot && slot <= *end).then_some(node.as_str())
    }

    /// Whether `node` serves any slot.
    pub(super) fn serves(&self, node: &str) -> bool {
        self.0.iter().any(|(_, _, owner)| owner == node)
    }

    /// The primaries, each once.
    pub(super) fn primaries(&self) -> HashSet<String> {
        self.0.iter().map(|(_, _, node)| node.clone()).collect()
    }
}

/// The hash slot of a key or shard channel, as Redis Cluster computes it:
/// CRC16 (XMODEM) of its hash tag, or of all of it, modulo 16384.
pub(in crate::infra) fn slot_of(name: &str) -> u16 {
    let bytes = name.as_bytes();
    let tagged = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

/// A `CLUSTER SLOTS` reply as a [`SlotMap`]; a primary given without a host
/// is on `asked` (the host of the node that answered).
fn parse_slots(reply: &Value, asked: &str) -> redis::RedisResult<SlotMap> {
    fn malformed(what: &str) -> redis::RedisError {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a CLUSTER SLOTS reply with {what}"),
        )
        .into()
    }
    fn number(value: &Value) -> Option<i64> {
        match value {
            Value::Int(number) => Some(*number),
            _ => None,
        }
    }
    fn text(value: &Value) -> Option<String> {
        match value {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
            Value::SimpleString(text) => Some(text.clone()),
            _ => None,
        }
    }
    let Value::Array(ranges) = reply else {
        return Err(malformed("no array"));
    };
    let mut map = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(malformed("a range that is no array"));
        };
        let (Some(start), Some(end), Some(Value::Array(primary))) = (
            fields.first().and_then(number),
            fields.get(1).and_then(number),
            fields.get(2),
        ) else {
            return Err(malformed("a range without its slots and primary"));
        };
        let (Some(host), Some(port)) = (
            primary.first().and_then(text),
            primary.get(1).and_then(number),
        ) else {
            return Err(malformed("a primary without host and port"));
        };
        let host = if host.is_empty() || host == "?" {
            asked.to_owned()
        } else {
            host
        };
        let (Ok(start), Ok(end), Ok(port)) = (
            u16::try_from(start),
            u16::try_from(end),
            u16::try_from(port),
        ) else {
            return Err(malformed("slots or a port out of range"));
        };
        map.push((start, end, format!("{host}:{port}")));
    }
    map.sort_unstable_by_key(|(start, _, _)| *start);
    Ok(SlotMap(map))
}

/// The host of a `host:port` (an IPv6 host keeps its colons).
fn host_of(node: &str) -> &str {
    node.rsplit_once(':').map_or(node, |(host, _)| host)
}

/// `CLUSTER SLOTS` of whichever of `connected` answers first, else of the
/// first seed that does.
pub(super) async fn ask_slots(
    connected: Vec<(String, MultiplexedConnection)>,
    seeds: Vec<redis::Client>,
) -> redis::RedisResult<SlotMap> {
    let mut last_error = None;
    // All at once, the first answer wins: a node that stopped answering
    // (the very failure a new map is wanted for) must not hold it up.
    if !connected.is_empty() {
        let asked = connected.into_iter().map(|(node, mut connection)| {
            Box::pin(async move { slots_of(&mut connection, host_of(&node)).await })
        });
        match futures_util::future::select_ok(asked).await {
            Ok((map, _)) => return Ok(map),
            Err(error) => last_error = Some(error),
        }
    }
    for seed in seeds {
        let host = match seed.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => {
                host.clone()
            }
            _ => String::new(),
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let attempt = async {
            let mut connection = seed
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            slots_of(&mut connection, &host).await
        };
        match attempt.await {
            Ok(map) => return Ok(map),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "no Redis Cluster node to ask for the slots",
        )
        .into()
    }))
}

/// `CLUSTER SLOTS` on `connection`, a node on `host`; a map that leaves
/// slots unserved is an answer too (the cluster is failing over).
async fn slots_of(
    connection: &mut MultiplexedConnection,
    host: &str,
) -> redis::RedisResult<SlotMap> {
    let reply: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(connection)
        .await?;
    parse_slots(&reply, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_maps_name_the_primary_of_each_slot() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                Value::Array(vec![
                    Value::BulkString(b"10.0.0.2".to_vec()),
                    Value::Int(7001),
                    Value::BulkString(b"id-2".to_vec()),
                ]),
                Value::Array(vec![
                    Value::BulkString(b"10.0.0.5".to_vec()),
                    Value::Int(7004),
                ]),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![Value::BulkString(Vec::new()), Value::Int(7000)]),
            ]),
        ]);
        let map = parse_slots(&reply, "10.0.0.9").unwrap();
        assert_eq!(
            map.owner(0),
            Some("10.0.0.9:7000"),
            "an empty host is the asked node's"
        );
        assert_eq!(map.owner(5460), Some("10.0.0.9:7000"));
        assert_eq!(map.owner(5461), Some("10.0.0.2:7001"));
        assert_eq!(map.owner(10922), Some("10.0.0.2:7001"));
        assert_eq!(map.owner(10923), None, "a slot nobody serves");
        assert!(map.serves("10.0.0.2:7001") && !map.serves("10.0.0.5:7004"));
        let malformed = Value::Array(vec![Value::Array(vec![Value::Int(0)])]);
        let error = parse_slots(&malformed, "h").unwrap_err().to_string();
        assert!(error.contains("without its slots and primary"), "{error}");
        assert_eq!(host_of("[::1]:7000"), "[::1]");
    }

    #[test]
    fn slots_are_computed_as_redis_does() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of("123456789"), 12739);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("bar"), 5061);
        assert_eq!(slot_of("{foo}bar"), slot_of("foo"), "the hash tag decides");
        assert_eq!(
            slot_of("{}foo"),
            crc16::State::<crc16::XMODEM>::calculate(b"{}foo") % 16384,
            "an empty tag: the whole name"
        );
        assert_ne!(slot_of("{}foo"), slot_of("foo"));
        assert_eq!(slot_of("a{b}{c}"), slot_of("b"), "the first tag");
    }
}
