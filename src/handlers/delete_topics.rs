//! DeleteTopics: delete on ctx 0; every ctx drops the partitions it served.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use crate::dispatch::context::RequestContext;

/// Handles DeleteTopics.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let names: Vec<String> = request
        .topic_names
        .iter()
        .map(|n| n.0.to_string())
        .collect();
    let codes = ctx.controller().delete_topics(names).await;
    for c in &codes {
        ctx.stats().error(*c);
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
