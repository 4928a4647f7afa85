//! Where each subscriber goes: its topic and its server instance, so that
//! every topic has subscribers on every instance (as behind a load
//! balancer, where each instance watches every busy topic); and topic
//! names that spread evenly over the three primaries of the benchmark's
//! cluster, so that the busiest primary's share of the work is the share
//! of sharding, not of a lopsided draw of names.

/// The hash slots of the benchmark's cluster's primaries, in order, as
/// `server/src/infra/cluster_testing.rs` assigns them. The cluster row
/// checks on the live cluster where the topics landed.
const PRIMARY_SLOTS: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// The topic (an index into the plan's topics) of the `i`th subscriber.
pub fn topic_of(i: usize, topics: usize) -> usize {
    i % topics.max(1)
}

/// The server instance of the `i`th subscriber: round robin, but over
/// whole rounds of topics, so that a topic's subscribers do not all land
/// on one instance when the two counts share a factor.
pub fn instance_of(i: usize, topics: usize, instances: usize) -> usize {
    (i / topics.max(1)) % instances.max(1)
}

/// `count` topic names from `base` (`topic:<base>` for one, as the
/// single-topic run has always named it). With more, the `j`th hashes to
/// a slot of the benchmark cluster's primary `j` mod 3: `topic:<base>-<j>`,
/// or `topic:<base>-<j>-<n>` with the first `n` that gets it there.
pub fn topic_names(base: &str, count: usize) -> Vec<String> {
    if count <= 1 {
        return vec![format!("topic:{base}")];
    }
    (0..count)
        .map(|j| {
            let wanted = j % PRIMARY_SLOTS.len();
            let on_wanted = |name: &String| primary_of_slot(hash_slot(name)) == wanted;
            let first = format!("topic:{base}-{j}");
            if on_wanted(&first) {
                return first;
            }
            (1..)
                .map(|n| format!("topic:{base}-{j}-{n}"))
                .find(on_wanted)
                .expect("some suffix lands in every third of the slots")
        })
        .collect()
}

/// The index of the primary (of [`PRIMARY_SLOTS`]) that serves `slot`.
fn primary_of_slot(slot: u16) -> usize {
    PRIMARY_SLOTS
        .iter()
        .position(|(low, high)| (*low..=*high).contains(&slot))
        .unwrap_or(0)
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag
/// (what is between the first `{` and the next `}`, when that is not
/// empty) or of the whole key, modulo 16384. The server's stream key of a
/// channel, `<prefix>stream:{<channel>}`, is in the slot of the channel's
/// name.
pub fn hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // CLUSTER KEYSLOT's answers in the Redis documentation.
        assert_eq!(hash_slot("123456789"), 12739);
        assert_eq!(hash_slot("somekey"), 11058);
        assert_eq!(hash_slot("foo{hash_tag}"), 2515);
        assert_eq!(hash_slot("{hash_tag}"), 2515);
        // An empty tag hashes the whole key.
        assert_ne!(hash_slot("foo{}{hash_tag}"), hash_slot("hash_tag"));
        assert_eq!(
            hash_slot("slop-bench:ab12:stream:{topic:x}"),
            hash_slot("topic:x")
        );
    }

    #[test]
    fn topics_spread_evenly_over_the_three_primaries() {
        assert_eq!(topic_names("bench-ab12", 1), ["topic:bench-ab12"]);
        let names = topic_names("bench-ab12", 30);
        assert_eq!(names.len(), 30);
        let distinct: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), 30);
        let mut per_primary = [0; 3];
        for (j, name) in names.iter().enumerate() {
            assert!(name.starts_with(&format!("topic:bench-ab12-{j}")), "{name}");
            let primary = primary_of_slot(hash_slot(name));
            assert_eq!(primary, j % 3, "{name}");
            per_primary[primary] += 1;
        }
        assert_eq!(per_primary, [10, 10, 10]);
    }

    #[test]
    fn every_topic_has_subscribers_on_every_instance() {
        let (subscribers, topics, instances) = (3000, 30, 3);
        let mut seen = vec![[0usize; 3]; topics];
        for i in 0..subscribers {
            seen[topic_of(i, topics)][instance_of(i, topics, instances)] += 1;
        }
        for per_instance in &seen {
            assert_eq!(per_instance.iter().sum::<usize>(), 100);
            assert!(per_instance.iter().all(|&n| n >= 33), "{per_instance:?}");
        }
        // One topic, one instance: what the run has always done.
        assert!((0..10).all(|i| topic_of(i, 1) == 0 && instance_of(i, 1, 1) == 0));
        // One topic, three instances: plain round robin.
        let spread: Vec<usize> = (0..4).map(|i| instance_of(i, 1, 3)).collect();
        assert_eq!(spread, [0, 1, 2, 0]);
    }
}
