//! What `/health` tells an operator about Redis beyond "it answers": the
//! mode (one server, a cluster, or a primary watched by Sentinel) and each
//! node as Redis itself sees it: its role, its state and, on a cluster, the
//! slots it serves (elsewhere the primary and the replicas its `ROLE`
//! lists). Read at each
//! health check, best effort: a node list that cannot be read is empty,
//! and readiness does not depend on it (it depends on
//! [`RedisContext::ping`](super::redis_context::RedisContext::ping)).

use serde::Serialize;

use super::redis_context::RedisContext;

/// Redis as the last health check saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedisReport {
    /// `standalone`, `cluster` or `sentinel`.
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
    let role: Option<redis::Role> = redis::cmd("ROLE")
        .query_async(&mut redis.commands())
        .await
        .ok();
    let node = |address: String, role: &'static str| RedisNode {
        address,
        role,
        state: "ok",
        slots: None,
    };
    let mut nodes = Vec::new();
    match role {
        Some(redis::Role::Primary { replicas, .. }) => {
            nodes.extend(
                redis
                    .primary_address()
                    .map(|address| node(address, "primary")),
            );
            nodes.extend(
                replicas
                    .into_iter()
                    .map(|replica| node(format!("{}:{}", replica.ip, replica.port), "replica")),
            );
        }
        Some(_) => nodes.extend(
            redis
                .primary_address()
                .map(|address| node(address, "replica")),
        ),
        None => {}
    }
    RedisReport {
        mode,
        cluster_state: None,
        nodes,
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
        redis_context::testing::{ClusterGuard, PrefixGuard, SentinelGuard},
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

    /// Under Sentinel: the primary the Sentinels name, and its replica;
    /// after a failover, the former replica as the primary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sentinel_set_reports_its_primary_and_replica() {
        let mut guard = SentinelGuard::start();
        let context = guard.context(ManualClock::starting_now());
        context.ping().await.unwrap();
        let before = report(&context).await;
        assert_eq!(before.mode, "sentinel");
        let roles: Vec<&str> = before.nodes.iter().map(|n| n.role).collect();
        assert_eq!(roles, ["primary", "replica"], "{before:?}");
        let (primary, replica) = (
            before.nodes[0].address.clone(),
            before.nodes[1].address.clone(),
        );
        assert!(primary.starts_with("127.0.0.1:") && replica.starts_with("127.0.0.1:"));

        guard.sentinels.kill_primary();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while context.ping().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no primary after 20 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let after = report(&context).await;
        assert_eq!(after.nodes[0].role, "primary", "{after:?}");
        assert_eq!(after.nodes[0].address, replica, "the replica was promoted");
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
