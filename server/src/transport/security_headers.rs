//! The security headers browsers read, as Helmet sends them by default, on
//! every answer of the HTTP side: REST, Server-Sent Events, health, 404 and
//! 405, WebSocket upgrades and their refusals, grpc-web and CORS
//! preflights. Native gRPC skips them with CORS ([`crate::transport::cors`]): no
//! browser reads them there.
//!
//! The content security policy is that of a JSON API: nothing may load,
//! nothing may frame it. `Strict-Transport-Security` is sent only in
//! production, where a TLS-terminating proxy fronts the server; sent over
//! a plain development `http://localhost`, browsers ignore it anyway.
//! Cross-Origin-Resource-Policy `same-origin` does not stand in the way of
//! grpc-web, REST or SSE from other origins: browsers apply it to no-cors
//! loads (an `<img>`, a `<script>`), never to CORS requests.
//!
//! Cost per browser answer: twelve header insertions of static values
//! (no allocation: the map is reserved up front, and the values are
//! `static`, so nothing is counted or copied).

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Helmet's defaults, as they are sent everywhere.
static HELMET: [(HeaderName, HeaderValue); 11] = [
    (
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    ),
    (
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    ),
    (
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    ),
    (
        HeaderName::from_static("origin-agent-cluster"),
        HeaderValue::from_static("?1"),
    ),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ),
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (
        header::X_DNS_PREFETCH_CONTROL,
        HeaderValue::from_static("off"),
    ),
    (
        HeaderName::from_static("x-download-options"),
        HeaderValue::from_static("noopen"),
    ),
    // DENY rather than Helmet's SAMEORIGIN: the API is never framed, as
    // frame-ancestors 'none' says to newer browsers.
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (
        HeaderName::from_static("x-permitted-cross-domain-policies"),
        HeaderValue::from_static("none"),
    ),
    // Turns off the old XSS auditors, which did more harm than good.
    (header::X_XSS_PROTECTION, HeaderValue::from_static("0")),
];

/// Sent in production only.
static HSTS: (HeaderName, HeaderValue) = (
    header::STRICT_TRANSPORT_SECURITY,
    HeaderValue::from_static("max-age=31536000; includeSubDomains"),
);

/// Which headers are sent: Helmet's defaults, with
/// `Strict-Transport-Security` in production.
#[derive(Debug, Clone, Copy)]
pub struct SecurityHeaders {
    production: bool,
}

impl SecurityHeaders {
    /// Helmet's defaults, with `Strict-Transport-Security` when
    /// `production`.
    pub fn new(production: bool) -> Self {
        Self { production }
    }

    /// Adds every header the answer does not set itself.
    pub fn apply(self, headers: &mut HeaderMap) {
        let hsts = self.production.then_some(&HSTS);
        headers.reserve(HELMET.len() + usize::from(self.production));
        for (name, value) in HELMET.iter().chain(hsts) {
            headers.entry(name).or_insert_with(|| value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_only_in_production_and_an_answers_own_header_stays() {
        let mut headers = HeaderMap::new();
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("origin"));
        SecurityHeaders::new(false).apply(&mut headers);
        assert_eq!(headers[header::REFERRER_POLICY], "origin");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert!(!headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
        let mut headers = HeaderMap::new();
        SecurityHeaders::new(true).apply(&mut headers);
        assert_eq!(
            headers[header::STRICT_TRANSPORT_SECURITY],
            "max-age=31536000; includeSubDomains"
        );
        assert_eq!(headers.len(), 12);
    }
}
