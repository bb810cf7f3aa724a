//! ListOffsets: earliest (-2), latest (-1), or the first offset at a timestamp.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::dispatch::context::RequestContext;
use crate::error::{log_error_code, ErrorCode};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// Handles ListOffsets.
pub async fn handle(ctx: &RequestContext<'_>, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let version = ctx.header.request_api_version;
    let meta = ctx.metadata();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let t = meta.topics.get(&name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let base = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            let base = if version >= 4 {
                let epoch = t
                    .and_then(|t| t.partition(p.partition_index))
                    .map_or(-1, |a| a.leader_epoch);
                base.with_leader_epoch(epoch)
            } else {
                base
            };
            let found = ctx
                .partition(&name, p.partition_index)
                .and_then(|partition| {
                    super::check_current_leader_epoch(
                        p.current_leader_epoch,
                        partition.replica.leader_epoch(),
                    )
                    .map(|()| partition)
                });
            let log = match found {
                Ok(partition) => partition.replica,
                Err(code) => {
                    ctx.stats().error(code);
                    partitions.push(base.with_error_code(code.code()));
                    continue;
                }
            };
            let resp = match p.timestamp {
                LATEST => base.with_offset(log.high_watermark()),
                EARLIEST => base.with_offset(log.log_start_offset()),
                MAX_TIMESTAMP => base.with_error_code(ErrorCode::UnsupportedVersion.code()),
                ts => match log.offset_for_timestamp(ts).await {
                    Ok(Some((offset, found_ts))) => {
                        base.with_offset(offset).with_timestamp(found_ts)
                    }
                    Ok(None) => base,
                    Err(e) => base.with_error_code(log_error_code(&e).code()),
                },
            };
            ctx.stats().error_code(resp.error_code);
            partitions.push(resp);
        }
        partitions.sort_by_key(|p| p.partition_index);
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
