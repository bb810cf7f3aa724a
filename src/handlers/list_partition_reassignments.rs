//! ListPartitionReassignments (kafka-reassign-partitions --verify): the moves under way,
//! each partition with all its replicas meanwhile, those it gains and those it loses.

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;

/// Handles ListPartitionReassignments.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let meta = ctx.metadata();
    let wanted = |topic: &str, p: i32| match &request.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.name.0.as_str() == topic && t.partition_indexes.contains(&p)),
    };
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for ((topic, p), target) in &meta.reassignments {
        if !wanted(topic, *p) {
            continue;
        }
        let Some(a) = meta.topics.get(topic).and_then(|t| t.partition(*p)) else {
            continue;
        };
        let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
        let replicas: Vec<i32> = a.replicas.iter().map(|r| r.broker_id()).collect();
        let from = meta
            .moving_from
            .get(&(topic.clone(), *p))
            .cloned()
            .unwrap_or_default();
        let adding = target
            .iter()
            .filter(|r| !from.contains(r))
            .map(|r| r.broker_id());
        let removing = from
            .iter()
            .filter(|r| !target.contains(r))
            .map(|r| r.broker_id());
        let partition = OngoingPartitionReassignment::default()
            .with_partition_index(*p)
            .with_replicas(ids(replicas))
            .with_adding_replicas(ids(adding.collect()))
            .with_removing_replicas(ids(removing.collect()));
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
