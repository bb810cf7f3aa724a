//! Leader epochs as clients check them (KIP-101, KIP-320): OffsetForLeaderEpoch answers
//! the newest epoch at or below the one asked for and where it ends, and Fetch,
//! ListOffsets and OffsetForLeaderEpoch refuse a `current_leader_epoch` the partition is
//! not at. A single node leads every partition in epoch 0.

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    FetchResponse, ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};

use super::*;

fn epoch_request(
    topic: &str,
    partition: i32,
    current: i32,
    epoch: i32,
) -> OffsetForLeaderEpochRequest {
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(current)
                .with_leader_epoch(epoch)])])
}

/// (error code, leader epoch, end offset) of the one partition asked about.
pub(crate) fn end_for(
    c: &mut Client,
    topic: &str,
    partition: i32,
    current: i32,
    epoch: i32,
) -> (i16, i32, i64) {
    let r: OffsetForLeaderEpochResponse = c.call(
        ApiKey::OffsetForLeaderEpoch,
        4,
        &epoch_request(topic, partition, current, epoch),
    );
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

#[test]
fn offset_for_leader_epoch_answers_the_epoch_and_where_it_ends() {
    let broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "epochs", 1);
    // The leader's own epoch ends at its log end, even before anything is written.
    assert_eq!(end_for(&mut c, "epochs", 0, 0, 0), (0, 0, 0));
    for i in 0..3u8 {
        produce(&mut c, "epochs", 0, batch(&[&[i], &[i]]));
    }
    assert_eq!(end_for(&mut c, "epochs", 0, 0, 0), (0, 0, 6));
    assert_eq!(
        end_for(&mut c, "epochs", 0, -1, 0),
        (0, 0, 6),
        "no current epoch given"
    );
    // A client that believes in a later epoch than the leader's gets the leader's.
    assert_eq!(end_for(&mut c, "epochs", 0, -1, 7), (0, 0, 6));
    // A current epoch the partition is not at yet: this replica is behind the client.
    assert_eq!(
        end_for(&mut c, "epochs", 0, 3, 0).0,
        75,
        "UNKNOWN_LEADER_EPOCH"
    );
    assert_eq!(
        end_for(&mut c, "nope", 0, -1, 0).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        end_for(&mut c, "epochs", 9, -1, 0).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
}

#[test]
fn fetch_and_list_offsets_check_the_current_leader_epoch() {
    let broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "fenced", 1);
    produce(&mut c, "fenced", 0, batch(&[b"a"]));
    let fetch_at = |c: &mut Client, current: i32| {
        let mut req = fetch_request("fenced", 0, 0, 0);
        req.topics[0].partitions[0].current_leader_epoch = current;
        let r: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
        r.responses[0].partitions[0].error_code
    };
    assert_eq!(fetch_at(&mut c, 0), 0);
    assert_eq!(fetch_at(&mut c, -1), 0);
    assert_eq!(fetch_at(&mut c, 2), 75, "UNKNOWN_LEADER_EPOCH");
    let list_at = |c: &mut Client, current: i32| {
        let req = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name("fenced"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_current_leader_epoch(current)
                    .with_timestamp(-1)])]);
        let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 6, &req);
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset, p.leader_epoch)
    };
    assert_eq!(list_at(&mut c, 0), (0, 1, 0));
    assert_eq!(list_at(&mut c, 1).0, 75, "UNKNOWN_LEADER_EPOCH");
}
