//! FindCoordinator: the group's coordinator is the ctx its id hashes to.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;
use crate::group::coordinator_shard;

const GROUP: i8 = 0;

/// Handles FindCoordinator (v0–3: one key; v4+: a list of keys).
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let locate = |key: &str| -> Result<(i32, StrBytes, i32), (ErrorCode, &'static str)> {
        if request.key_type != GROUP {
            return Err((
                ErrorCode::CoordinatorNotAvailable,
                "transactions are not supported",
            ));
        }
        if key.is_empty() {
            return Err((ErrorCode::InvalidGroupId, "empty group id"));
        }
        let s = coordinator_shard(key, ctx.config().shards);
        Ok((
            ctx.broker_id(s),
            StrBytes::from_string(ctx.config().advertised_host.clone()),
            i32::from(ctx.config().shard_port(s)),
        ))
    };
    if ctx.header.request_api_version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|k| {
                let c = Coordinator::default().with_key(k.clone());
                match locate(k) {
                    Ok((id, host, port)) => {
                        c.with_node_id(BrokerId(id)).with_host(host).with_port(port)
                    }
                    Err((code, msg)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code.code())
                        .with_error_message(Some(StrBytes::from_static_str(msg))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match locate(&request.key) {
        Ok((id, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(id))
            .with_host(host)
            .with_port(port),
        Err((code, msg)) => FindCoordinatorResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_static_str(msg)))
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}
