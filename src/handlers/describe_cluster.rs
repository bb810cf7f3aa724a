//! DescribeCluster: every shard of every node as a broker, and the controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::{CLUSTER_OPERATIONS, OPERATIONS_NOT_REQUESTED};
use crate::dispatch::context::RequestContext;

/// Handles DescribeCluster.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let brokers = ctx
        .brokers()
        .into_iter()
        .map(|(id, host, port)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(1)
        .with_cluster_id(StrBytes::from_string(ctx.cluster_id()))
        .with_controller_id(BrokerId(ctx.controller_broker()))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS
        } else {
            OPERATIONS_NOT_REQUESTED
        })
}
