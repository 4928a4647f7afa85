//! The connection throttle of long-lived connections: notification
//! streams on every door, and WebSockets (which the bridge admits through
//! it at the upgrade and once the user is known).

use std::net::IpAddr;

use slop_api::errors::ErrorReason;
use tonic::Status;

use crate::{
    identity::limits::{Decision, Rate, RateLimiter},
    services::status::rate_limited,
};
use slop_context::ConnectionGate;

/// The connection throttle of streams and WebSockets: at most `rate` new
/// connections per IP address and per user.
pub struct StreamGate {
    limits: RateLimiter,
    rate: Rate,
}

impl StreamGate {
    /// A throttle counting in `limits`.
    pub fn new(limits: RateLimiter, rate: Rate) -> Self {
        Self { limits, rate }
    }

    async fn hit(&self, key: String, what: &str) -> Result<(), Status> {
        match self.limits.hit(&key, self.rate).await? {
            Decision::Allowed { .. } => Ok(()),
            Decision::Limited { retry_after } => {
                Err(rate_limited(ErrorReason::RateLimited, what, retry_after))
            }
        }
    }
}

#[tonic::async_trait]
impl ConnectionGate for StreamGate {
    async fn admit(&self, peer: Option<IpAddr>, user: Option<&str>) -> Result<(), Status> {
        if let Some(ip) = peer {
            self.hit(
                format!("streams:ip:{ip}"),
                "too many new streams from your address",
            )
            .await?;
        }
        if let Some(user) = user {
            self.hit(
                format!("streams:user:{user}"),
                "too many new streams for your account",
            )
            .await?;
        }
        Ok(())
    }
}
