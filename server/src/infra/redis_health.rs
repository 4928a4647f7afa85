//! What `/health` tells an operator about Redis beyond "it answers": the
//! mode (one server or a cluster) and each node as Redis itself sees it,
//! its role, its state and, on a cluster, the slots it serves. Read at each
//! health check, best effort: a node list that cannot be read is empty,
//! and readiness does not depend on it (it depends on
//! [`RedisContext::ping`](super::redis_context::RedisContext::ping)).

use serde::Serialize;

use super::redis_context::RedisContext;

/// Redis as the last health check saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedisReport {
    /// `standalone` or `cluster`.
    pub mode: &'static str,
    /// On a cluster, `cluster_state` of `CLUSTER INFO` (`ok` when every
    /// slot is served).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_state: Option<String>,
    /// The nodes (the one server, or every node of the cluster).
    pub nodes: Vec<RedisNode>,
}

/// One Redis node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedisNode {
    /// `host:port`.
    pub address: String,
    /// `primary` or `replica`.
    pub role: &'static str,
    /// `ok`; on a cluster also `suspected` (some node cannot reach it),
    /// `failed` (the cluster agreed it is down) or `disconnected`.
    pub state: &'static str,
    /// The slots a cluster primary serves (`0-5460 5461`), when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<String>,
}

/// Reads the report; the nodes stay empty when Redis does not say.
pub async fn report(redis: &RedisContext) -> RedisReport {
    let mode = redis.topology().mode();
    if redis.cluster() {
        let mut commands = redis.commands();
        let nodes: Option<String> = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut commands)
            .await
            .ok();
        let info: Option<String> = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut commands)
            .await
            .ok();
        return RedisReport {
            mode,
            cluster_state: info.as_deref().and_then(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("cluster_state:"))
                    .map(|state| state.trim().to_owned())
            }),
            nodes: nodes.as_deref().map(cluster_nodes).unwrap_or_default(),
        };
    }
    let role: Option<Vec<redis::Value>> = redis::cmd("ROLE")
        .query_async(&mut redis.commands())
        .await
        .ok();
    let nodes = role
        .and_then(|role| match role.first() {
            Some(redis::Value::BulkString(role)) => Some(role.clone()),
            Some(redis::Value::SimpleString(role)) => Some(role.clone().into_bytes()),
            _ => None,
        })
        .map(|role| RedisNode {
            address: redis.address(),
            role: if role == b"master" {
                "primary"
            } else {
                "replica"
            },
            state: "ok",
            slots: None,
        });
    RedisReport {
        mode,
        cluster_state: None,
        nodes: nodes.into_iter().collect(),
    }
}

/// The nodes of a `CLUSTER NODES` reply, in address order.
fn cluster_nodes(reply: &str) -> Vec<RedisNode> {
    let mut nodes: Vec<RedisNode> = reply
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let [
                _id,
                address,
                flags,
                _primary,
                _ping,
                _pong,
                _epoch,
                link,
                slots @ ..,
            ] = fields.as_slice()
            else {
                return None;
            };
            let flags: Vec<&str> = flags.split(',').collect();
            if flags.contains(&"handshake") || flags.contains(&"noaddr") {
                return None;
            }
            let state = if flags.contains(&"fail") {
                "failed"
            } else if flags.contains(&"fail?") {
                "suspected"
            } else if *link == "disconnected" {
                "disconnected"
            } else {
                "ok"
            };
            // Migrating and importing slots (`[5461->-id]`) are not served.
            let served: Vec<&str> = slots
                .iter()
                .copied()
                .filter(|slot| !slot.starts_with('[') && !slot.is_empty())
                .collect();
            Some(RedisNode {
                // `host:port@bus[,hostname]`: the client address.
                address: address.split('@').next().unwrap_or(address).to_owned(),
                role: if flags.contains(&"master") {
                    "primary"
                } else {
                    "replica"
                },
                state,
                slots: (!served.is_empty()).then(|| served.join(" ")),
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.address.cmp(&b.address));
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::{
        clock::ManualClock,
        redis_context::testing::{ClusterGuard, PrefixGuard},
    };

    #[test]
    fn cluster_nodes_give_role_state_and_slots() {
        let reply = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,node-2 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master,fail - 1426238316232 1426238316232 3 disconnected
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed]
6ec2 127.0.0.1:30005@40005 slave,fail? 67ed 0 1426238317741 5 connected
aa11 :0@0 handshake,noaddr - 0 0 0 disconnected
";
        let nodes = cluster_nodes(reply);
        let summary: Vec<(&str, &str, &str, Option<&str>)> = nodes
            .iter()
            .map(|n| (n.address.as_str(), n.role, n.state, n.slots.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("127.0.0.1:30001", "primary", "ok", Some("0-5460")),
                ("127.0.0.1:30002", "primary", "ok", Some("5461-10922")),
                ("127.0.0.1:30003", "primary", "failed", None),
                ("127.0.0.1:30004", "replica", "ok", None),
                ("127.0.0.1:30005", "replica", "suspected", None),
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_standalone_server_reports_itself_as_primary() {
        let guard = PrefixGuard::new();
        let report = report(&guard.context(ManualClock::starting_now())).await;
        assert_eq!(report.mode, "standalone");
        assert_eq!(report.cluster_state, None);
        assert_eq!(report.nodes.len(), 1);
        assert_eq!(report.nodes[0].role, "primary");
        assert_eq!(report.nodes[0].state, "ok");
    }

    /// A killed primary shows as failed, and its replica as a primary
    /// serving its slots.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_reports_its_nodes_through_a_failover() {
        let mut guard = ClusterGuard::start();
        let context = guard.context(ManualClock::starting_now());
        let before = report(&context).await;
        assert_eq!(before.mode, "cluster");
        assert_eq!(before.cluster_state.as_deref(), Some("ok"));
        let primaries: Vec<&RedisNode> = before
            .nodes
            .iter()
            .filter(|n| n.role == "primary")
            .collect();
        assert_eq!((before.nodes.len(), primaries.len()), (6, 3), "{before:?}");
        assert!(
            primaries
                .iter()
                .all(|n| n.slots.is_some() && n.state == "ok")
        );

        let victim = guard.cluster.primary_for("victim");
        guard.cluster.kill(victim);
        guard.cluster.wait_until_healthy();
        let address = format!("127.0.0.1:{victim}");
        let mut after = report(&context).await;
        for _ in 0..50 {
            if after
                .nodes
                .iter()
                .any(|n| n.address == address && n.state == "failed")
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            after = report(&context).await;
        }
        let killed = after.nodes.iter().find(|n| n.address == address).unwrap();
        assert_eq!(killed.state, "failed", "{after:?}");
        let serving = after
            .nodes
            .iter()
            .filter(|n| n.role == "primary" && n.state == "ok" && n.slots.is_some())
            .count();
        assert_eq!(serving, 3, "{after:?}");
        assert_eq!(after.cluster_state.as_deref(), Some("ok"));
    }
}
