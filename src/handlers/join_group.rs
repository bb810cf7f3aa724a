//! JoinGroup: join (or rejoin) a group; answered when the rebalance completes.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;
use crate::group::coordinator::JoinParams;

fn s(v: String) -> StrBytes {
    StrBytes::from_string(v)
}

/// Handles JoinGroup.
pub async fn handle(ctx: &RequestContext<'_>, request: JoinGroupRequest) -> JoinGroupResponse {
    let version = ctx.header.request_api_version;
    let group = request.group_id.0.to_string();
    let coordinator = match ctx.coordinator_for(&group) {
        Ok(c) => c,
        Err(code) => {
            return JoinGroupResponse::default()
                .with_error_code(code.code())
                .with_generation_id(-1)
                .with_member_id(request.member_id)
        }
    };
    let params = JoinParams {
        group_id: group,
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|i| i.to_string()),
        client_id: ctx
            .header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: ctx.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        version,
    };
    let r = coordinator.join(params).await;
    ctx.stats().error(r.error);
    let mut resp = JoinGroupResponse::default()
        .with_error_code(r.error.code())
        .with_generation_id(r.generation)
        .with_leader(s(r.leader))
        .with_member_id(s(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, inst, meta)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(if version >= 5 { inst.map(s) } else { None })
                        .with_metadata(meta)
                })
                .collect(),
        );
    if version >= 7 {
        resp = resp.with_protocol_type(r.protocol_type.map(s));
    }
    // Before v7 the protocol name is not nullable.
    resp.with_protocol_name(match (r.protocol, version >= 7) {
        (Some(p), _) => Some(s(p)),
        (None, true) => None,
        (None, false) => Some(StrBytes::default()),
    })
}
