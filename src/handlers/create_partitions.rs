//! CreatePartitions: grow a topic; the new partitions are placed like new topics'.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, RequestHeader};
use kafka_protocol::protocol::StrBytes;

use crate::error::ErrorCode;
use crate::shard::controller::update_topic;
use crate::shard::router::TopicChange;
use crate::shard::state::Shard;

/// Handles CreatePartitions.
pub async fn handle(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
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
            update_topic(
                shard,
                t.name.0.to_string(),
                TopicChange::GrowPartitions(t.count),
                request.validate_only,
            )
            .await
        };
        if let Err((code, _)) = &outcome {
            shard.stats.error(*code);
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
