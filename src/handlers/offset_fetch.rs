//! OffsetFetch: a group's committed positions (v1–7: one group; v8+: several).

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;

/// One partition's answer: (partition, offset, leader epoch, metadata, error).
type Row = (i32, i64, i32, Option<String>, ErrorCode);

/// Committed offsets of `group` for the asked topics (all when `None`).
fn lookup(
    ctx: &RequestContext<'_>,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Result<Vec<(TopicName, Vec<Row>)>, ErrorCode> {
    let c = ctx.coordinator_for(group)?;
    let committed = c.committed(group);
    Ok(match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(name, parts)| {
                let rows = parts
                    .into_iter()
                    .map(|p| match committed.get(&(name.0.to_string(), p)) {
                        Some(c) => (
                            p,
                            c.offset,
                            c.leader_epoch,
                            c.metadata.clone(),
                            ErrorCode::None,
                        ),
                        None => (p, -1, -1, None, ErrorCode::None),
                    })
                    .collect();
                (name, rows)
            })
            .collect(),
        None => {
            let mut out: Vec<(TopicName, Vec<Row>)> = Vec::new();
            for ((topic, p), c) in committed {
                let row = (
                    p,
                    c.offset,
                    c.leader_epoch,
                    c.metadata.clone(),
                    ErrorCode::None,
                );
                match out.last_mut() {
                    Some((t, rows)) if t.0.as_str() == topic => rows.push(row),
                    _ => out.push((super::topic_name(&topic), vec![row])),
                }
            }
            out
        }
    })
}

fn meta(m: Option<String>) -> Option<kafka_protocol::protocol::StrBytes> {
    Some(kafka_protocol::protocol::StrBytes::from_string(
        m.unwrap_or_default(),
    ))
}

/// Handles OffsetFetch.
pub async fn handle(ctx: &RequestContext<'_>, request: OffsetFetchRequest) -> OffsetFetchResponse {
    if ctx.header.request_api_version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let topics = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match lookup(ctx, g.group_id.as_str(), topics) {
                    Ok(rows) => group.with_topics(
                        rows.into_iter()
                            .map(|(name, rows)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(name)
                                    .with_partitions(
                                        rows.into_iter()
                                            .map(|(p, o, e, m, code)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(o)
                                                    .with_committed_leader_epoch(e)
                                                    .with_metadata(meta(m))
                                                    .with_error_code(code.code())
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                    Err(code) => group.with_error_code(code.code()),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    match lookup(ctx, request.group_id.as_str(), topics) {
        Ok(rows) => OffsetFetchResponse::default().with_topics(
            rows.into_iter()
                .map(|(name, rows)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            rows.into_iter()
                                .map(|(p, o, e, m, code)| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_committed_leader_epoch(e)
                                        .with_metadata(meta(m))
                                        .with_error_code(code.code())
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
        Err(code) => OffsetFetchResponse::default().with_error_code(code.code()),
    }
}
