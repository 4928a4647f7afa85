//! The HTTP side: the one port every front door shares, and what happens to
//! a request before a service sees it and after it answers.
//!
//! - [`app`]: the service that puts gRPC, grpc-web, REST, the WebSocket and
//!   health on one port; [`native_grpc`]: native gRPC calls to the hot
//!   services, handed to them without the router; [`grpc_methods`]: what
//!   the descriptor sets say of each gRPC method.
//! - [`serve`]: the accept loop and the bounded graceful drain;
//!   [`connections`]: open connections, their caps, what makes one idle;
//!   [`refusal`]: the answer to one over a cap; [`fd_limit`]: the limit on
//!   open files; [`request_body`]: the time a request body has to arrive;
//!   [`proxy`]: the client's address behind trusted reverse proxies.
//! - [`cors`]: CORS and the cookie Origin check for browsers, and
//!   [`security_headers`]; native gRPC skips both.
//! - [`health`]: dependency checks, readiness and liveness.
//! - [`shutdown`]: ending long-lived gRPC streams when shutdown begins;
//!   [`decode_errors`]: a request message that does not decode is the
//!   caller's fault.
//! - [`telemetry`]: logs and request ids; [`traces`]: the caller's trace
//!   context on every door, and OpenTelemetry export; [`metrics`]:
//!   Prometheus metrics of every request, and the `/metrics` listener of
//!   their own. [`around`]: how those are layered, allocating nothing per
//!   request.

pub mod app;
pub mod around;
pub mod connections;
pub mod cors;
pub mod decode_errors;
pub mod fd_limit;
pub mod grpc_methods;
pub mod health;
pub mod metrics;
pub mod native_grpc;
pub mod proxy;
pub mod refusal;
pub mod request_body;
pub mod security_headers;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod traces;
