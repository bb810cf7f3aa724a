//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::dispatch::context::RequestContext;

/// Handles Heartbeat.
pub async fn handle(ctx: &RequestContext<'_>, request: HeartbeatRequest) -> HeartbeatResponse {
    let group = request.group_id.0.to_string();
    let code = match ctx.coordinator_for(&group) {
        Ok(c) => c.heartbeat(&group, request.generation_id, request.member_id.as_str()),
        Err(code) => code,
    };
    ctx.stats().error(code);
    HeartbeatResponse::default().with_error_code(code.code())
}
