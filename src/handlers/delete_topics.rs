//! DeleteTopics: delete on shard 0; every shard drops the partitions it served.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, RequestHeader};

use crate::shard::controller::delete_topics;
use crate::shard::state::Shard;

/// Handles DeleteTopics.
pub async fn handle(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let names: Vec<String> = request
        .topic_names
        .iter()
        .map(|n| n.0.to_string())
        .collect();
    let codes = delete_topics(shard, names).await;
    for c in &codes {
        shard.stats.error(*c);
    }
    let responses = request
        .topic_names
        .into_iter()
        .zip(codes)
        .map(|(name, code)| {
            DeletableTopicResult::default()
                .with_name(Some(name))
                .with_error_code(code.code())
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
