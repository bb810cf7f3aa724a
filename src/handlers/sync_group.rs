//! SyncGroup: the leader hands in assignments; every member gets its own.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;

/// Handles SyncGroup.
pub async fn handle(ctx: &RequestContext<'_>, request: SyncGroupRequest) -> SyncGroupResponse {
    let group = request.group_id.0.to_string();
    let coordinator = match ctx.coordinator_for(&group) {
        Ok(c) => c,
        Err(code) => return SyncGroupResponse::default().with_error_code(code.code()),
    };
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let r = coordinator
        .sync(
            &group,
            request.generation_id,
            request.member_id.as_str(),
            assignments,
        )
        .await;
    ctx.stats().error(r.error);
    let mut resp = SyncGroupResponse::default()
        .with_error_code(r.error.code())
        .with_assignment(r.assignment);
    if ctx.header.request_api_version >= 5 {
        resp = resp
            .with_protocol_type(r.protocol_type.map(StrBytes::from_string))
            .with_protocol_name(r.protocol.map(StrBytes::from_string));
    }
    resp
}
