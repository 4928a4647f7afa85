//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the REST
//! routes, as build.rs generated it from the contract
//! ([`slop_api::rest::OPENAPI_JSON`]), embedded in the binary.
//!
//! It changes only with the binary, so it is sent with a strong ETag and
//! `Cache-Control: no-cache`: a client or cache may keep it, and asks again
//! with `If-None-Match`, which a 304 answers, so a new deployment is seen at
//! once at the cost of a round trip.

use axum::{
    Router,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use slop_api::rest::{OPENAPI_ETAG, OPENAPI_JSON};

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

/// The document's route.
pub fn router() -> Router {
    Router::new().route(PATH, get(document))
}

async fn document(request: HeaderMap) -> Response {
    let headers = [
        (header::ETAG, HeaderValue::from_static(OPENAPI_ETAG)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|value| matches_etag(value.as_bytes()))
    {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (
        headers,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}

/// Whether an `If-None-Match` value names the document: `*`, or a list
/// with its ETag (compared weakly, as RFC 9110 says for this header).
fn matches_etag(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == OPENAPI_ETAG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_names_the_document_by_its_etag_or_a_star() {
        assert!(matches_etag(OPENAPI_ETAG.as_bytes()));
        assert!(matches_etag(format!("\"x\", W/{OPENAPI_ETAG}").as_bytes()));
        assert!(matches_etag(b"*"));
        assert!(!matches_etag(b"\"0000000000000000\""));
        assert!(!matches_etag(b""));
    }

    #[test]
    fn the_embedded_document_is_openapi_3_1_json() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        assert!(OPENAPI_ETAG.starts_with('"') && OPENAPI_ETAG.ends_with('"'));
    }
}
