//! Server reflection, v1 and v1alpha, as grpcurl and buf curl use it.

use tokio_stream::StreamExt as _;
use tonic_reflection::pb::{v1, v1alpha};

use crate::harness::TestServer;

const EXPECTED: &[&str] = &[
    "grpc.health.v1.Health",
    "slop.auth.v1.AuthService",
    "slop.notification.v1.NotificationService",
    "slop.session.v1.SessionService",
];

#[tokio::test]
async fn reflection_v1_lists_the_services_and_describes_them() {
    let server = TestServer::start().await;
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let requests = tokio_stream::iter([
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "slop.auth.v1.AuthService".into(),
                ),
            ),
        },
    ]);
    let mut replies = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();

    let listed = replies.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("expected a service list, got {listed:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in EXPECTED {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }

    let file = replies.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        file.message_response
    else {
        panic!("expected a file descriptor, got {file:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_services() {
    let server = TestServer::start().await;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let listed = replies.next().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("expected a service list, got {listed:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in EXPECTED {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
}

/// Whether the server answers reflection (v1) at all.
async fn reflection_answers(server: &TestServer) -> Result<(), tonic::Status> {
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    replies.next().await.expect("an answer")?;
    Ok(())
}

#[tokio::test]
async fn reflection_is_off_in_production_unless_turned_on() {
    use slop_server::infra::config::{AppEnv, Switch};
    let production =
        TestServer::start_with(|config| config.app_env = Some(AppEnv::Production)).await;
    let refused = reflection_answers(&production).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    let turned_on = TestServer::start_with(|config| {
        config.app_env = Some(AppEnv::Production);
        config.grpc_reflection = Some(Switch::On);
    })
    .await;
    reflection_answers(&turned_on).await.unwrap();
    let turned_off =
        TestServer::start_with(|config| config.grpc_reflection = Some(Switch::Off)).await;
    let refused = reflection_answers(&turned_off).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
}

/// The error details every error carries (`google.rpc.ErrorInfo` and the
/// rest) are served too, so reflection clients (buf curl, grpcurl) print
/// them instead of base64.
#[tokio::test]
async fn reflection_serves_the_error_details() {
    use prost::Message as _;
    let server = TestServer::start().await;
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let symbols = [
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "google.rpc.Status",
    ];
    let requests = tokio_stream::iter(symbols.map(|symbol| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into()),
        ),
    }));
    let mut replies = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    for symbol in symbols {
        let reply = replies.next().await.unwrap().unwrap();
        let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
            reply.message_response
        else {
            panic!("{symbol}: expected a file descriptor, got {reply:?}");
        };
        let name = symbol.rsplit('.').next().unwrap();
        let described = files.file_descriptor_proto.iter().any(|bytes| {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            file.package() == "google.rpc" && file.message_type.iter().any(|m| m.name() == name)
        });
        assert!(described, "{symbol} is described");
    }
}
