//! DescribeCluster: every ctx as a broker, ctx 0 as controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::{CLUSTER_ID, CLUSTER_OPERATIONS, OPERATIONS_NOT_REQUESTED};
use crate::dispatch::context::RequestContext;

/// Handles DescribeCluster.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let brokers = (0..ctx.config().shards)
        .map(|k| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(ctx.broker_id(k)))
                .with_host(StrBytes::from_string(ctx.config().advertised_host.clone()))
                .with_port(i32::from(ctx.config().shard_port(k)))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(1)
        .with_cluster_id(StrBytes::from_static_str(CLUSTER_ID))
        .with_controller_id(BrokerId(ctx.broker_id(0)))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS
        } else {
            OPERATIONS_NOT_REQUESTED
        })
}
