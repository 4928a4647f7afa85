//! Refusing a connection over a cap, with an answer a client can read.
//!
//! The answer is a minimal HTTP/1.1 response with the AIP-193 JSON error
//! and `connection: close`, written straight to the socket, before any of
//! the request is read: 429 RESOURCE_EXHAUSTED when the client's address
//! has all the connections it may (HTTP_MAX_CONNECTIONS_PER_IP), 503
//! UNAVAILABLE when the server has no place left. An HTTP/1 client (REST,
//! grpc-web, a WebSocket upgrade, curl) reads it as the answer to its
//! request; an HTTP/2 client (native gRPC) cannot read HTTP/1 and sees the
//! connection fail, which it would with a bare close too.
//!
//! Then the socket is closed gently: the write side first, then what the
//! client sent is read and dropped for a moment, so the close is not a
//! reset that would discard the answer before the client reads it. Only a
//! few refused sockets linger so at once; the others close at once.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use slop_api::errors::ErrorReason;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::Semaphore,
};

use crate::{
    services::status::with_reason,
    transport::connections::{Caps, Refusal},
};

/// How many refused sockets may linger at once.
const LINGERING_AT_MOST: usize = 16;
/// How long a refused socket lingers at most.
const LINGER: Duration = Duration::from_secs(1);

/// The answers, rendered once per listener.
pub struct Refusals {
    per_address: Bytes,
    total: Bytes,
    lingering: Arc<Semaphore>,
}

impl Refusals {
    /// The answers for `caps`.
    pub fn new(caps: Caps) -> Self {
        let per_address = with_reason(
            ErrorReason::TooManyConnections,
            format!(
                "too many connections from your address (at most {}); close some, or reuse them, and retry",
                caps.per_address.unwrap_or(u32::MAX)
            ),
        );
        let total = with_reason(
            ErrorReason::ConnectionLimit,
            "the server has no connection to spare; retry shortly",
        );
        Self {
            per_address: render(&per_address),
            total: render(&total),
            lingering: Arc::new(Semaphore::new(LINGERING_AT_MOST)),
        }
    }

    fn answer(&self, why: Refusal) -> &Bytes {
        match why {
            Refusal::PerAddress => &self.per_address,
            Refusal::Total => &self.total,
        }
    }

    /// Answers `stream` with the refusal and closes it at once, its
    /// descriptor being needed (the process is out of them).
    pub fn refuse_at_once(&self, stream: TcpStream, why: Refusal) {
        let _ = stream.try_write(self.answer(why));
    }

    /// Answers `stream` with the refusal and closes it.
    pub fn refuse(&self, stream: TcpStream, why: Refusal) {
        // A new socket's send buffer is empty: the whole answer fits.
        if stream.try_write(self.answer(why)).is_err() {
            return;
        }
        let Ok(permit) = self.lingering.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let mut stream = stream;
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(LINGER, async {
                while matches!(stream.read(&mut sink).await, Ok(read) if read > 0) {}
            })
            .await;
            drop(permit);
        });
    }
}

/// A whole HTTP/1.1 answer with the JSON error of `status`, and the HTTP
/// status every front door gives it.
fn render(status: &tonic::Status) -> Bytes {
    let http = slop_bridge::error::response_status(status);
    let body = slop_bridge::error::error_body(http, status).to_string();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        http.as_u16(),
        http.canonical_reason().unwrap_or_default(),
        body.len()
    );
    Bytes::from(head + &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answers_are_whole_http_responses_with_the_json_error() {
        let refusals = Refusals::new(Caps {
            total: 10,
            per_address: Some(3),
        });
        let answer = String::from_utf8(refusals.per_address.to_vec()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("at most 3")
        );
        let answer = String::from_utf8(refusals.total.to_vec()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    }
}
