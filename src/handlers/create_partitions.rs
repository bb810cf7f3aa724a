//! CreatePartitions: grow a topic; the new partitions are placed like new topics'.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;
use crate::shard::router::TopicChange;

/// Handles CreatePartitions.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let outcome = if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            Err((
                ErrorCode::InvalidReplicaAssignment,
                "manual replica assignment is not supported".to_string(),
            ))
        } else {
            ctx.controller()
                .update_topic(
                    t.name.0.to_string(),
                    TopicChange::GrowPartitions(t.count),
                    request.validate_only,
                )
                .await
        };
        if let Err((code, _)) = &outcome {
            ctx.stats().error(*code);
        }
        let result = CreatePartitionsTopicResult::default().with_name(t.name);
        results.push(match outcome {
            Ok(()) => result,
            Err((code, msg)) => result
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(msg))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
