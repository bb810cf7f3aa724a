//! CreateTopics: validate on the receiving ctx, create on ctx 0.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;
use crate::metadata::{topic_config, validate_topic_name};
use crate::shard::router::TopicSpec;

/// Most partitions one topic may have.
const MAX_PARTITIONS: i32 = 100_000;

/// Handles CreateTopics.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let version = ctx.header.request_api_version;
    let mut results: Vec<Option<CreatableTopicResult>> = Vec::new();
    let mut specs = Vec::new();
    let mut slots = Vec::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        let partitions = if t.num_partitions == -1 {
            ctx.config().default_partitions
        } else {
            t.num_partitions
        };
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let nodes = ctx.config().peers.len().max(1);
        let replicas = match t.replication_factor {
            -1 => ctx.config().default_replication_factor,
            rf => rf,
        };
        let refusal = if let Err(e) = validate_topic_name(&name) {
            Some((ErrorCode::InvalidTopicException, e))
        } else if !(1..=MAX_PARTITIONS).contains(&partitions) {
            Some((
                ErrorCode::InvalidPartitions,
                format!("partitions must be 1..={MAX_PARTITIONS}"),
            ))
        } else if t.replication_factor != -1
            && (t.replication_factor < 1 || t.replication_factor as usize > nodes)
        {
            Some((
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {} is not 1..={nodes} (the cluster's nodes)",
                    t.replication_factor
                ),
            ))
        } else if !t.assignments.is_empty() {
            Some((
                ErrorCode::InvalidReplicaAssignment,
                "manual replica assignment is not supported".into(),
            ))
        } else if let Err(e) = topic_config::validate(&configs) {
            Some((ErrorCode::InvalidConfig, e))
        } else {
            None
        };
        let result = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(if version >= 5 { partitions } else { -1 })
            .with_replication_factor(if version >= 5 { replicas } else { -1 });
        if let Some((code, _)) = &refusal {
            ctx.stats().error(*code);
        }
        match refusal {
            Some((code, msg)) => results.push(Some(
                result
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(msg)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            )),
            None => {
                slots.push((results.len(), result));
                results.push(None);
                specs.push(TopicSpec {
                    name,
                    partitions,
                    configs,
                    replication_factor: t.replication_factor,
                });
            }
        }
    }
    if !specs.is_empty() {
        let outcomes = ctx
            .controller()
            .create_topics(specs, request.validate_only)
            .await;
        for ((slot, result), outcome) in slots.into_iter().zip(outcomes) {
            results[slot] = Some(match outcome {
                Ok(id) => {
                    if version >= 7 && !request.validate_only {
                        result.with_topic_id(id)
                    } else {
                        result
                    }
                }
                Err((code, msg)) => {
                    ctx.stats().error(code);
                    result
                        .with_error_code(code.code())
                        .with_error_message(Some(StrBytes::from_string(msg)))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                }
            });
        }
    }
    CreateTopicsResponse::default().with_topics(results.into_iter().flatten().collect())
}
