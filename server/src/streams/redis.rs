//! The Redis channel streams (being written: see CHANGELOG, issue #4).

use std::sync::Arc;

use slop_api::notification::Event;

use super::{ChannelName, ChannelState, Result};

/// The channel streams in Redis, shared by every instance.
#[derive(Clone)]
pub struct RedisStreams {
    _private: (),
}

impl RedisStreams {
    pub(super) async fn publish(
        &self,
        _channels: &[ChannelName],
        _event: &Event,
    ) -> Result<Vec<Arc<Event>>> {
        Err(super::StreamError::Malformed("not written yet".into()))
    }
    pub(super) async fn channel(&self, _channel: &ChannelName) -> Result<ChannelState> {
        Err(super::StreamError::Malformed("not written yet".into()))
    }
    pub(super) async fn read(
        &self,
        _channel: &ChannelName,
        _after: u64,
        _limit: usize,
    ) -> Result<Vec<Arc<Event>>> {
        Err(super::StreamError::Malformed("not written yet".into()))
    }
    pub(super) async fn watch(&self, _channel: &ChannelName) -> Result<()> {
        Err(super::StreamError::Malformed("not written yet".into()))
    }
    pub(super) fn unwatch(&self, _channel: &ChannelName) {}
    pub(super) async fn ping(&self) -> Result<()> {
        Err(super::StreamError::Malformed("not written yet".into()))
    }
}
