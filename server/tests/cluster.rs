//! The built server on a Redis Cluster of the test's own (3 primaries, 3
//! replicas), as an operator runs it: several instances given
//! REDIS_CLUSTER_NODES, sharing sessions, channel streams and logouts.

#[path = "../src/infra/cluster_testing.rs"]
mod cluster_testing;
#[path = "../src/infra/redis_processes.rs"]
mod redis_processes;
#[allow(dead_code)] // Each test binary uses its own part of it.
mod support;

use std::{collections::HashSet, time::Duration};

use slop_api::{
    auth,
    notification::{self, ChannelSubscription, subscribe_response::Message},
};
use support::{
    Server, SharedStores, auth_client, bearer, next_message, notification_client, sign_up,
};

const SERVICE_KEY: &str = "cluster-test-service-key-0123456789abcdefgh";

/// Three instances on one cluster: a session made through one is valid
/// through the others; one publish through one, to 100 topics whose keys
/// spread over every primary, reaches the subscribers on the other two;
/// a logout through one ends the streams on the other two within a second.
#[tokio::test]
async fn three_servers_on_a_cluster_share_sessions_streams_and_logouts() {
    let cluster = tokio::task::spawn_blocking(cluster_testing::RedisCluster::start)
        .await
        .unwrap();
    let stores =
        SharedStores::on_redis(vec![("REDIS_CLUSTER_NODES", cluster.nodes_variable())]).await;
    let mut env = stores.env();
    let keys = format!("tests:{SERVICE_KEY}");
    env.push(("SERVICE_KEYS", &keys));
    let mut servers = Vec::new();
    for name in ["cluster-a", "cluster-b", "cluster-c"] {
        servers.push(Server::start_in(name, &env).await);
    }
    let addrs: Vec<String> = servers.iter().map(|server| server.addr.clone()).collect();

    // A session made through A works through B and C.
    let mut auth_a = auth_client(&addrs[0]).await;
    let token = sign_up(&mut auth_a, "ada@example.com")
        .await
        .tokens
        .unwrap()
        .access_token;
    for addr in &addrs[1..] {
        auth_client(addr)
            .await
            .get_current_user(bearer(auth::GetCurrentUserRequest {}, &token))
            .await
            .expect("the session made through A");
    }

    // 100 topics over every primary of the cluster.
    let topics: Vec<String> = (0..100).map(|i| format!("topic:news-{i}")).collect();
    let primaries: HashSet<u16> = topics
        .iter()
        .map(|topic| cluster.primary_for(&format!("slop-binary-test:x:stream:{{{topic}}}")))
        .collect();
    assert_eq!(primaries.len(), 3, "the topics spread over every primary");
    let request = notification::SubscribeRequest {
        subscriptions: topics
            .iter()
            .map(|topic| ChannelSubscription {
                channel: topic.clone(),
                namespaces: vec![],
                resume_from: None,
            })
            .collect(),
    };
    let mut streams = Vec::new();
    for addr in &addrs[1..] {
        let mut stream = notification_client(addr)
            .await
            .subscribe(bearer(request.clone(), &token))
            .await
            .unwrap()
            .into_inner();
        for _ in &topics {
            assert!(matches!(
                next_message(&mut stream).await,
                Ok(Message::Subscribed(_))
            ));
        }
        streams.push(stream);
    }

    // One publish through A to all 100 (one script call per slot).
    notification_client(&addrs[0])
        .await
        .publish(bearer(
            notification::PublishRequest {
                channels: topics.clone(),
                r#type: "headline".into(),
                ..Default::default()
            },
            SERVICE_KEY,
        ))
        .await
        .unwrap();
    for stream in &mut streams {
        let mut heard = HashSet::new();
        while heard.len() < topics.len() {
            let Ok(Message::Event(event)) = next_message(stream).await else {
                panic!("expected an event, after {} of 100", heard.len());
            };
            assert_eq!((event.r#type.as_str(), event.offset), ("headline", 1));
            assert!(heard.insert(event.channel), "each topic once");
        }
    }

    // A logout through A ends the streams on B and C within a second.
    auth_a
        .logout(bearer(auth::LogoutRequest::default(), &token))
        .await
        .unwrap();
    for stream in &mut streams {
        let ended = tokio::time::timeout(Duration::from_secs(1), stream.message())
            .await
            .expect("the stream ends within a second")
            .unwrap_err();
        assert_eq!(ended.code(), tonic::Code::Unauthenticated);
    }

    for server in &mut servers {
        assert_eq!(server.stop().await.code(), Some(0));
    }
    stores.drop_schema().await;
    drop(cluster);
}
