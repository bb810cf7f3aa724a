//! FindCoordinator: the group's coordinator is the shard its id hashes to on a single
//! node, and the leader of its partition of `__consumer_offsets` in a cluster (created at
//! the first FindCoordinator, as Kafka does).

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;

const GROUP: i8 = 0;

/// Handles FindCoordinator (v0–3: one key; v4+: a list of keys).
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let creating = request.key_type == GROUP && ctx.ensure_offsets_topic().await;
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
        if creating {
            return Err((
                ErrorCode::CoordinatorNotAvailable,
                "the offsets topic is being created",
            ));
        }
        let Some(id) = ctx.coordinator_broker(key) else {
            return Err((
                ErrorCode::CoordinatorNotAvailable,
                "the group's offsets partition has no leader yet",
            ));
        };
        match ctx.endpoint(id) {
            Some((host, port)) => Ok((id, StrBytes::from_string(host), port)),
            // The coordinator's node has not registered its listeners yet.
            None => Err((
                ErrorCode::CoordinatorNotAvailable,
                "the coordinator's node is not known yet",
            )),
        }
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
