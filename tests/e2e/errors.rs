//! The error vocabulary: every front door answers in the one domain, and
//! docs/errors.md holds to the contract and the code. Every reason of
//! `slop.errors.v1.ErrorReason` (read from the descriptor set the server
//! serves, not from a list kept here) has a row, no row names a reason the
//! contract lacks, and each row's gRPC code, HTTP status and WebSocket close
//! code are what the server and the bridge give an error with that reason.

use std::collections::BTreeMap;

use http::StatusCode;
use prost::Message as _;
use slop_api::{
    errors::{DOMAIN, ErrorReason},
    session::{ListSessionsRequest, session_service_client::SessionServiceClient},
};
use slop_bridge::{error, ws};
use tonic_types::StatusExt as _;

use crate::harness::{TestServer, get};

#[tokio::test]
async fn every_front_door_answers_in_the_one_domain() {
    assert_eq!(DOMAIN, "slop.studio");
    let server = TestServer::start().await;

    let status = SessionServiceClient::new(server.channel().await)
        .list_sessions(ListSessionsRequest::default())
        .await
        .expect_err("no credentials");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("CREDENTIALS_MISSING", DOMAIN)
    );

    // An error of a service, through the bridge; and the bridge's own.
    for (path, http, reason) in [
        (
            "/api/v1/sessions",
            StatusCode::UNAUTHORIZED,
            "CREDENTIALS_MISSING",
        ),
        ("/api/v1/nope", StatusCode::NOT_FOUND, "ROUTE_NOT_FOUND"),
    ] {
        let answer = get(&server.url(path)).await;
        assert_eq!(answer.status, http, "{path}");
        let detail = &answer.json()["error"]["details"][0];
        assert_eq!(detail["reason"], reason, "{path}");
        assert_eq!(detail["domain"], DOMAIN, "{path}");
    }
}

/// The values of `slop.errors.v1.ErrorReason` in the served contract,
/// without the unset default.
fn reasons_in_contract() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(slop_api::FILE_DESCRIPTOR_SET).unwrap();
    let file = set
        .file
        .iter()
        .find(|file| file.package() == "slop.errors.v1")
        .expect("the descriptor set has slop.errors.v1");
    let reasons = file
        .enum_type
        .iter()
        .find(|e| e.name() == "ErrorReason")
        .expect("slop.errors.v1 has ErrorReason");
    reasons
        .value
        .iter()
        .filter(|value| value.number() != 0)
        .map(|value| value.name().to_owned())
        .collect()
}

/// One row of the table of reasons.
#[derive(Debug)]
struct Row {
    code: String,
    http: String,
    close: String,
}

/// The rows of docs/errors.md's table, by reason.
fn rows_in_doc() -> BTreeMap<String, Row> {
    let doc = include_str!("../../docs/errors.md");
    let mut rows = BTreeMap::new();
    for line in doc.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let reason = cells[1].trim_matches('`').to_owned();
        let row = Row {
            code: cells[2].to_owned(),
            http: cells[3].to_owned(),
            close: cells[4].to_owned(),
        };
        assert!(
            rows.insert(reason.clone(), row).is_none(),
            "docs/errors.md lists {reason} twice"
        );
    }
    rows
}

#[test]
fn every_reason_of_the_contract_is_in_docs_errors_md_as_the_code_answers_it() {
    let reasons = reasons_in_contract();
    assert!(reasons.len() > 20, "{reasons:?}");
    let mut rows = rows_in_doc();
    for name in &reasons {
        let reason = ErrorReason::from_str_name(name)
            .unwrap_or_else(|| panic!("slop_api has no ErrorReason {name}"));
        let row = rows
            .remove(name)
            .unwrap_or_else(|| panic!("docs/errors.md has no row for {name}"));
        assert_eq!(
            row.code,
            error::code_name(reason.code()),
            "the gRPC code of {name}"
        );
        assert_eq!(
            row.http,
            error::reason_http_status(reason).as_u16().to_string(),
            "the HTTP status of {name}"
        );
        if row.close != "—" {
            assert_eq!(
                row.close,
                ws::close_code(reason.code(), Some(reason), false).to_string(),
                "the WebSocket close code of {name}"
            );
        }
    }
    assert!(
        rows.is_empty(),
        "docs/errors.md lists reasons the contract does not have: {:?}",
        rows.keys()
    );
}
