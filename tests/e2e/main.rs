//! End-to-end tests: the real server, started in-process on 127.0.0.1:0,
//! called by real clients over every front door. One test binary, so the
//! server is linked once.

mod harness;

mod accounts;
mod browser;
mod connections;
mod csrf_cookie_domain;
mod doc_clients;
mod errors;
mod faults;
mod health;
mod mail;
mod malformed;
mod metrics;
mod node_client;
mod notifications;
mod openapi;
mod origins;
mod outside_clients;
mod postgres_outage;
mod proxies;
mod pyjwt;
mod reflection;
mod routing;
mod security_headers;
mod shutdown;
mod websocket;
