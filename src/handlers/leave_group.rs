//! LeaveGroup: members leave at once instead of waiting for their sessions to expire.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;

/// Handles LeaveGroup (v0–2: one member id; v3+: a list of members).
pub async fn handle(ctx: &RequestContext<'_>, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let group = request.group_id.0.to_string();
    let coordinator = match ctx.coordinator_for(&group) {
        Ok(c) => c,
        Err(code) => return LeaveGroupResponse::default().with_error_code(code.code()),
    };
    if ctx.header.request_api_version < 3 {
        let codes = coordinator
            .leave(&group, &[(request.member_id.to_string(), None)])
            .await;
        let code = codes.first().copied().unwrap_or(ErrorCode::UnknownMemberId);
        return LeaveGroupResponse::default().with_error_code(code.code());
    }
    let members: Vec<(String, Option<String>)> = request
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.group_instance_id.as_ref().map(|i| i.to_string()),
            )
        })
        .collect();
    let codes = coordinator.leave(&group, &members).await;
    let responses = request
        .members
        .into_iter()
        .zip(codes)
        .map(|(m, code)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code.code())
        })
        .collect();
    LeaveGroupResponse::default().with_members(responses)
}
