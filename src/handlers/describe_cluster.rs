//! DescribeCluster: every shard as a broker, shard 0 as controller.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, RequestHeader,
};
use kafka_protocol::protocol::StrBytes;

use super::metadata::{CLUSTER_ID, CLUSTER_OPERATIONS, OPERATIONS_NOT_REQUESTED};
use crate::shard::state::Shard;

/// Handles DescribeCluster.
pub async fn handle(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let brokers = (0..shard.config.shards)
        .map(|k| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(shard.broker_id(k)))
                .with_host(StrBytes::from_string(shard.config.advertised_host.clone()))
                .with_port(i32::from(shard.config.shard_port(k)))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(1)
        .with_cluster_id(StrBytes::from_static_str(CLUSTER_ID))
        .with_controller_id(BrokerId(shard.broker_id(0)))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS
        } else {
            OPERATIONS_NOT_REQUESTED
        })
}
