//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse, RequestHeader};

use crate::shard::state::Shard;

/// Handles Heartbeat.
pub async fn handle(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let group = request.group_id.0.to_string();
    let code = match shard.coordinator_for(&group) {
        Ok(c) => c.heartbeat(&group, request.generation_id, request.member_id.as_str()),
        Err(code) => code,
    };
    shard.stats.error(code);
    HeartbeatResponse::default().with_error_code(code.code())
}
