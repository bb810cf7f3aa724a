//! The seed corpora under `fuzz/seeds/`, built from the real encoders: one populated
//! request per supported API and version (as a whole frame and as a body behind the
//! target's own header), record batches of every codec, and the files the broker reads
//! back at start. Written by `write_seed_corpora` (an ignored test), checked by
//! `committed_seeds_cover_every_supported_request_version`.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use caudal::codec::HEADER_LEN;
use caudal::dispatch::SUPPORTED;
use caudal::group::offsets::{Committed, OffsetRecord};
use caudal::log::offset_index::OffsetIndex;
use caudal::log::time_index::TimeIndex;
use caudal::metadata::store::{MetaRecord, MetaStore};
use caudal::metadata::{PartitionAssignment, ShardAddr, TopicMeta};
use caudal::protocol::record_batch::{
    build_batch, compute_crc, parse_header, set_producer, Compression,
};
use caudal::replica::producer_state::ProducerStateTable;
use caudal::shard::producer_ids::encode_block_end;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, DescribeLogDirsRequest, FetchRequest, FindCoordinatorRequest, GroupId,
    HeartbeatRequest, IncrementalAlterConfigsRequest, InitProducerIdRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, ProduceRequest, RequestHeader, SyncGroupRequest,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use uuid::Uuid;

/// One seed file: target, file name, content.
pub type Seed = (&'static str, String, Vec<u8>);

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

fn topic() -> TopicName {
    TopicName(s("orders"))
}

fn group() -> GroupId {
    GroupId(s("billing"))
}

fn encode<R: Encodable>(request: &R, version: i16) -> Option<BytesMut> {
    let mut body = BytesMut::new();
    request.encode(&mut body, version).ok()?;
    Some(body)
}

/// A request body with one of each nested element, using only fields that `version`
/// has (the encoder refuses a non-default value in a version without the field).
fn request_body(key: ApiKey, v: i16) -> Option<BytesMut> {
    if caudal::protocol::legacy::handles(key, v) {
        return old_request_body(key, v);
    }
    match key {
        ApiKey::Produce => {
            let mut batch = build_batch(0, 1_700_000_000_000, &[b"k1", b"v22"], Compression::None);
            set_producer(&mut batch, 7, 0, 0);
            let partition = PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch)));
            let topic = TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![partition]);
            encode(
                &ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![topic]),
                v,
            )
        }
        ApiKey::Fetch => {
            let mut partition = FetchPartition::default()
                .with_partition(1)
                .with_fetch_offset(42)
                .with_partition_max_bytes(1 << 20);
            if v >= 9 {
                partition = partition.with_current_leader_epoch(0);
            }
            let mut request = FetchRequest::default()
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(50 << 20)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(topic())
                    .with_partitions(vec![partition])]);
            if v >= 7 {
                request = request.with_forgotten_topics_data(vec![ForgottenTopic::default()
                    .with_topic(TopicName(s("old")))
                    .with_partitions(vec![0])]);
            }
            if v >= 11 {
                request = request.with_rack_id(s("rack-a"));
            }
            encode(&request, v)
        }
        ApiKey::ListOffsets => encode(
            &ListOffsetsRequest::default()
                .with_replica_id((-1).into())
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1)])]),
            v,
        ),
        ApiKey::Metadata => {
            let t = MetadataRequestTopic::default().with_name(Some(topic()));
            encode(&MetadataRequest::default().with_topics(Some(vec![t])), v)
        }
        ApiKey::ApiVersions => {
            let mut request = ApiVersionsRequest::default();
            if v >= 3 {
                request = request
                    .with_client_software_name(s("caudal-fuzz"))
                    .with_client_software_version(s("1.0"));
            }
            encode(&request, v)
        }
        ApiKey::CreateTopics => encode(
            &CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(topic())
                    .with_num_partitions(3)
                    .with_replication_factor(1)
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("60000")))])]),
            v,
        ),
        ApiKey::DeleteTopics => encode(
            &DeleteTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topic_names(vec![topic()]),
            v,
        ),
        ApiKey::DescribeConfigs => encode(
            &DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("orders"))
                    .with_configuration_keys(Some(vec![s("retention.ms")])),
            ]),
            v,
        ),
        ApiKey::FindCoordinator => {
            let request = if v >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("billing")])
            } else {
                FindCoordinatorRequest::default().with_key(s("billing"))
            };
            encode(&request, v)
        }
        ApiKey::JoinGroup => {
            let mut request = JoinGroupRequest::default()
                .with_group_id(group())
                .with_session_timeout_ms(10_000)
                .with_member_id(s(""))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(
                        b"\x00\x01\x00\x00\x00\x01\x00\x06orders",
                    ))]);
            if v >= 1 {
                request = request.with_rebalance_timeout_ms(30_000);
            }
            if v >= 8 {
                request = request.with_reason(Some(s("joining")));
            }
            encode(&request, v)
        }
        ApiKey::SyncGroup => {
            let mut request = SyncGroupRequest::default()
                .with_group_id(group())
                .with_generation_id(1)
                .with_member_id(s("member-1"))
                .with_assignments(vec![SyncGroupRequestAssignment::default()
                    .with_member_id(s("member-1"))
                    .with_assignment(Bytes::from_static(b"\x00\x01\x00\x00\x00\x01"))]);
            if v >= 5 {
                request = request
                    .with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s("range")));
            }
            encode(&request, v)
        }
        ApiKey::Heartbeat => encode(
            &HeartbeatRequest::default()
                .with_group_id(group())
                .with_generation_id(1)
                .with_member_id(s("member-1")),
            v,
        ),
        ApiKey::LeaveGroup => {
            let request = if v >= 3 {
                let mut member = MemberIdentity::default().with_member_id(s("member-1"));
                if v >= 5 {
                    member = member.with_reason(Some(s("leaving")));
                }
                LeaveGroupRequest::default()
                    .with_group_id(group())
                    .with_members(vec![member])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(group())
                    .with_member_id(s("member-1"))
            };
            encode(&request, v)
        }
        ApiKey::OffsetCommit => encode(
            &OffsetCommitRequest::default()
                .with_group_id(group())
                .with_generation_id_or_member_epoch(1)
                .with_member_id(s("member-1"))
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(42)
                        .with_committed_metadata(Some(s("")))])]),
            v,
        ),
        ApiKey::OffsetFetch => {
            let request = if v >= 8 {
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(group())
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0, 1])]))])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(group())
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0, 1])]))
            };
            encode(&request, v)
        }
        ApiKey::OffsetDelete => encode(
            &OffsetDeleteRequest::default()
                .with_group_id(group())
                .with_topics(vec![OffsetDeleteRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0)
                    ])]),
            v,
        ),
        ApiKey::ListGroups => {
            let mut request = ListGroupsRequest::default();
            if v >= 4 {
                request = request.with_states_filter(vec![s("Stable")]);
            }
            encode(&request, v)
        }
        ApiKey::DescribeGroups => encode(
            &DescribeGroupsRequest::default().with_groups(vec![group()]),
            v,
        ),
        ApiKey::DeleteGroups => encode(
            &DeleteGroupsRequest::default().with_groups_names(vec![group()]),
            v,
        ),
        ApiKey::InitProducerId => encode(
            &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
            v,
        ),
        ApiKey::AlterConfigs => {
            use kafka_protocol::messages::alter_configs_request::{
                AlterConfigsResource, AlterableConfig,
            };
            encode(
                &AlterConfigsRequest::default().with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("orders"))
                        .with_configs(vec![AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_value(Some(s("60000")))]),
                ]),
                v,
            )
        }
        ApiKey::IncrementalAlterConfigs => {
            use kafka_protocol::messages::incremental_alter_configs_request::{
                AlterConfigsResource, AlterableConfig,
            };
            encode(
                &IncrementalAlterConfigsRequest::default().with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("orders"))
                        .with_configs(vec![AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_config_operation(0)
                            .with_value(Some(s("60000")))]),
                ]),
                v,
            )
        }
        ApiKey::CreatePartitions => {
            use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
            encode(
                &CreatePartitionsRequest::default()
                    .with_timeout_ms(5_000)
                    .with_topics(vec![CreatePartitionsTopic::default()
                        .with_name(topic())
                        .with_count(6)]),
                v,
            )
        }
        ApiKey::DescribeCluster => encode(
            &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
            v,
        ),
        ApiKey::DescribeLogDirs => {
            use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
            encode(
                &DescribeLogDirsRequest::default().with_topics(Some(vec![
                    DescribableLogDirTopic::default()
                        .with_topic(topic())
                        .with_partitions(vec![0, 1]),
                ])),
                v,
            )
        }
        ApiKey::OffsetForLeaderEpoch => {
            use kafka_protocol::messages::offset_for_leader_epoch_request::{
                OffsetForLeaderPartition, OffsetForLeaderTopic,
            };
            encode(
                &kafka_protocol::messages::OffsetForLeaderEpochRequest::default()
                    .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                    .with_topics(vec![OffsetForLeaderTopic::default()
                        .with_topic(topic())
                        .with_partitions(vec![OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(3)
                            .with_leader_epoch(2)])]),
                v,
            )
        }
        ApiKey::AlterPartitionReassignments => {
            use kafka_protocol::messages::alter_partition_reassignments_request::{
                ReassignablePartition, ReassignableTopic,
            };
            use kafka_protocol::messages::BrokerId;
            encode(
                &kafka_protocol::messages::AlterPartitionReassignmentsRequest::default()
                    .with_topics(vec![ReassignableTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            ReassignablePartition::default()
                                .with_partition_index(0)
                                .with_replicas(Some(vec![BrokerId(2048), BrokerId(3072)])),
                            ReassignablePartition::default().with_partition_index(1),
                        ])]),
                v,
            )
        }
        ApiKey::ListPartitionReassignments => {
            use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
            encode(
                &kafka_protocol::messages::ListPartitionReassignmentsRequest::default()
                    .with_topics(Some(vec![ListPartitionReassignmentsTopics::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0])])),
                v,
            )
        }
        ApiKey::ElectLeaders => {
            use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
            encode(
                &kafka_protocol::messages::ElectLeadersRequest::default().with_topic_partitions(
                    Some(vec![TopicPartitions::default()
                        .with_topic(topic())
                        .with_partitions(vec![0, 1])]),
                ),
                v,
            )
        }
        ApiKey::DescribeQuorum => {
            use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
            encode(
                &kafka_protocol::messages::DescribeQuorumRequest::default().with_topics(vec![
                    TopicData::default()
                        .with_topic_name(kafka_protocol::messages::TopicName(
                            kafka_protocol::protocol::StrBytes::from_static_str(
                                "__cluster_metadata",
                            ),
                        ))
                        .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
                ]),
                v,
            )
        }
        _ => None,
    }
}

/// Versions older than the crate's codecs, in their own layout (Kafka's message
/// definitions before KIP-896).
fn old_request_body(key: ApiKey, v: i16) -> Option<BytesMut> {
    let put_str = |b: &mut BytesMut, x: &str| {
        b.put_i16(x.len() as i16);
        b.put_slice(x.as_bytes());
    };
    match key {
        // The same layout as the crate's oldest version.
        ApiKey::OffsetFetch | ApiKey::DeleteTopics => request_body(key, 1),
        // v1's request is v2's; v0 lacks `validate_only`, the last byte.
        ApiKey::CreateTopics => request_body(key, 2).map(|mut b| {
            if v == 0 {
                b.truncate(b.len() - 1);
            }
            b
        }),
        // v0 is v1 without `include_synonyms`, the last byte.
        ApiKey::DescribeConfigs => request_body(key, 1).map(|mut b| {
            b.truncate(b.len() - 1);
            b
        }),
        ApiKey::OffsetCommit => {
            let mut b = BytesMut::new();
            put_str(&mut b, "billing");
            if v >= 1 {
                b.put_i32(1);
                put_str(&mut b, "member-1");
            }
            b.put_i32(1);
            put_str(&mut b, "orders");
            b.put_i32(1);
            b.put_i32(0);
            b.put_i64(42);
            if v >= 1 {
                b.put_i64(-1);
            }
            put_str(&mut b, "");
            Some(b)
        }
        _ => None,
    }
}

fn name_of(key: ApiKey) -> String {
    format!("{key:?}").to_lowercase()
}

/// Seeds of the `frame` target, two per supported API version.
pub fn frame_seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    for spec in SUPPORTED {
        for v in spec.min..=spec.max {
            let body = request_body(spec.key, v).unwrap_or_else(|| {
                panic!(
                    "no seed request for {:?} v{v}: add one to request_body in {}",
                    spec.key,
                    file!()
                )
            });
            let header = RequestHeader::default()
                .with_request_api_key(spec.key as i16)
                .with_request_api_version(v)
                .with_correlation_id(v.into())
                .with_client_id(Some(s("caudal-fuzz")));
            let mut frame = BytesMut::new();
            header
                .encode(&mut frame, spec.key.request_header_version(v))
                .expect("encode request header");
            frame.extend_from_slice(&body);
            let mut raw = vec![0u8];
            raw.extend_from_slice(&(frame.len() as i32).to_be_bytes());
            raw.extend_from_slice(&frame);
            out.push(("frame", format!("raw-{}-v{v}", name_of(spec.key)), raw));
            let mut framed = BytesMut::new();
            framed.put_u8(1);
            framed.put_i16(spec.key as i16);
            framed.put_i16(v);
            framed.extend_from_slice(&body);
            out.push((
                "frame",
                format!("body-{}-v{v}", name_of(spec.key)),
                framed.to_vec(),
            ));
        }
    }
    out
}

fn idempotent_batch(pid: i64, epoch: i16, seq: i32, values: &[&[u8]]) -> Vec<u8> {
    let mut b = build_batch(0, 1_700_000_000_000, values, Compression::None);
    set_producer(&mut b, pid, epoch, seq);
    b
}

/// Seeds of the `record_batch` target.
pub fn batch_seeds() -> Vec<Seed> {
    let values: [&[u8]; 3] = [b"alpha", b"", b"a somewhat longer value to compress"];
    let mut out = Vec::new();
    for (name, codec) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        out.push((
            "record_batch",
            format!("batch-{name}"),
            build_batch(0, 1_700_000_000_000, &values, codec),
        ));
    }
    out.push((
        "record_batch",
        "batch-one-record".into(),
        build_batch(0, 1_700_000_000_000, &[b"x"], Compression::None),
    ));
    out.push((
        "record_batch",
        "batch-idempotent".into(),
        idempotent_batch(1000, 3, 0, &values),
    ));
    // A run as a producer sends it (two batches of one producer, in sequence) and as a
    // segment holds it (contiguous offsets).
    let mut run = idempotent_batch(1000, 3, 0, &values);
    run.extend(idempotent_batch(1000, 3, 3, &[b"next"]));
    out.push(("record_batch", "run-idempotent".into(), run));
    let mut segment = build_batch(0, 1_700_000_000_000, &values, Compression::None);
    segment.extend(build_batch(
        3,
        1_700_000_000_500,
        &[&b"d"[..]; 40],
        Compression::None,
    ));
    segment.extend(build_batch(
        43,
        1_700_000_001_000,
        &values,
        Compression::Zstd,
    ));
    out.push(("record_batch", "run-segment".into(), segment));
    // A control batch (transaction marker attributes), CRC kept valid.
    let mut control = build_batch(
        0,
        1_700_000_000_000,
        &[b"\x00\x00\x00\x00"],
        Compression::None,
    );
    control[21..23].copy_from_slice(&0x0030i16.to_be_bytes());
    let crc = compute_crc(&control);
    control[17..21].copy_from_slice(&crc.to_be_bytes());
    out.push(("record_batch", "batch-control".into(), control));
    out
}

fn tagged(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(content);
    out
}

/// Seeds of the `disk_parsers` target (layout in `fuzz/src/lib.rs`).
pub fn disk_seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut offsets = OffsetIndex::default();
    let mut times = TimeIndex::default();
    for i in 1..6u32 {
        offsets.push(i * 100, i * 4096);
        times.push(1_700_000_000_000 + i64::from(i) * 1000, i * 100);
    }
    let mut index = (1u64 << 20).to_be_bytes().to_vec();
    index.extend(offsets.to_bytes());
    out.push(("disk_parsers", "offset-index".into(), tagged(0, &index)));
    out.push((
        "disk_parsers",
        "time-index".into(),
        tagged(1, &times.to_bytes()),
    ));
    // Version 1 (releases up to 617d542): the entries alone, still read at start.
    let mut index_v1 = (1u64 << 20).to_be_bytes().to_vec();
    let mut times_v1 = Vec::new();
    for i in 1..6u32 {
        index_v1.extend_from_slice(&(i * 100).to_be_bytes());
        index_v1.extend_from_slice(&(i * 4096).to_be_bytes());
        times_v1.extend_from_slice(&(1_700_000_000_000 + i64::from(i) * 1000).to_be_bytes());
        times_v1.extend_from_slice(&(i * 100).to_be_bytes());
    }
    out.push((
        "disk_parsers",
        "offset-index-v1".into(),
        tagged(0, &index_v1),
    ));
    out.push(("disk_parsers", "time-index-v1".into(), tagged(1, &times_v1)));

    out.push((
        "disk_parsers",
        "producer-ids".into(),
        tagged(6, &encode_block_end(3000)),
    ));
    let mut ids_v1 = 1000u64.to_be_bytes().to_vec();
    ids_v1.extend_from_slice(&crc32c::crc32c(&ids_v1).to_be_bytes());
    out.push(("disk_parsers", "producer-ids-v1".into(), tagged(6, &ids_v1)));

    let commit = OffsetRecord::Commit {
        group: "billing".into(),
        topic: "orders".into(),
        partition: 2,
        committed: Committed {
            offset: 42,
            leader_epoch: 0,
            metadata: Some("m".into()),
            commit_ms: 1_700_000_000_000,
        },
    };
    let commit = commit.encode();
    out.push((
        "disk_parsers",
        "group-offsets-commit".into(),
        tagged(7, &commit),
    ));
    // Version 1: the same value without its header.
    out.push((
        "disk_parsers",
        "group-offsets-commit-v1".into(),
        tagged(7, &commit[HEADER_LEN..]),
    ));
    let delete = OffsetRecord::DeleteOffset {
        group: "billing".into(),
        topic: "orders".into(),
        partition: 2,
    };
    out.push((
        "disk_parsers",
        "group-offsets-delete".into(),
        tagged(7, &delete.encode()),
    ));
    // Version 3: a group's generation and members.
    let group = OffsetRecord::Group(caudal::group::stored_group::StoredGroup {
        group: "billing".into(),
        generation: 4,
        protocol_type: Some("consumer".into()),
        protocol: Some("range".into()),
        leader: Some("m-1".into()),
        members: vec![caudal::group::stored_group::StoredMember {
            id: "m-1".into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/10.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            subscription: bytes::Bytes::from_static(b"\0\x01orders"),
            assignment: bytes::Bytes::from_static(b"\0\x01orders\0\0\0\x02"),
        }],
    });
    out.push((
        "disk_parsers",
        "group-offsets-group".into(),
        tagged(7, &group.encode()),
    ));

    let mut table = ProducerStateTable::default();
    let mut next = 0;
    let three: [&[u8]; 3] = [b"a", b"b", b"c"];
    for (pid, seq, n) in [(1000, 0, 3), (1000, 3, 1), (2000, 0, 3), (1000, 4, 3)] {
        let batch = idempotent_batch(pid, 0, seq, &three[..n]);
        let h = parse_header(&batch).expect("built batch parses");
        table.record(&h, next);
        next += h.offset_count();
    }
    let snapshot = table.to_bytes();
    out.push((
        "disk_parsers",
        "producer-snapshot".into(),
        tagged(2, &snapshot),
    ));
    out.push((
        "disk_parsers",
        "producer-snapshot-body".into(),
        tagged(3, &snapshot[..snapshot.len() - 4]),
    ));

    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut store, _) = MetaStore::open(dir.path(), 0).expect("open metadata log");
        let replica = |shard| ShardAddr { node: 0, shard };
        let t = TopicMeta {
            name: "orders".into(),
            id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            partitions: vec![
                PartitionAssignment::single(replica(0)),
                PartitionAssignment {
                    replicas: vec![replica(1), ShardAddr { node: 1, shard: 0 }],
                    leader: replica(1),
                    leader_epoch: 3,
                },
                PartitionAssignment::single(replica(0)),
            ],
            configs: BTreeMap::from([("retention.ms".to_string(), "60000".to_string())]),
        };
        store
            .append(&MetaRecord::PutTopic(t.clone()))
            .expect("append");
        store
            .append(&MetaRecord::PutTopic(TopicMeta {
                name: "audit".into(),
                partitions: vec![PartitionAssignment::single(replica(1))],
                configs: BTreeMap::new(),
                ..t
            }))
            .expect("append");
        store
            .append(&MetaRecord::DeleteTopic("audit".into()))
            .expect("append");
    }
    let log = std::fs::read(dir.path().join("metadata.log")).expect("read metadata log");
    out.push(("disk_parsers", "metadata-log".into(), tagged(4, &log)));
    out.push(("disk_parsers", "metadata-log-fixed".into(), tagged(5, &log)));
    let log_v1 = metadata_log_v1();
    out.push(("disk_parsers", "metadata-log-v1".into(), tagged(4, &log_v1)));
    out.push((
        "disk_parsers",
        "metadata-log-v1-fixed".into(),
        tagged(5, &log_v1),
    ));
    out.extend(raft_disk_seeds());
    out
}

/// The raft formats among the disk parsers' seeds: a sealed segment's table, a
/// `raft.state`, and journal raft records (a row and a HardState).
fn raft_disk_seeds() -> Vec<Seed> {
    use caudal::log::raft_index::{EntryKind, RaftIndex, Row};
    use caudal::replica::raft_state::{RaftRecord, SavedState};
    use raft::eraftpb::{ConfState, HardState};
    let mut table = RaftIndex::new(3, 2, 100);
    let rows = [
        (4, 2, EntryKind::Data { last_offset: 108 }),
        (5, 2, EntryKind::RaftOnly { payload: vec![0] }),
        (6, 3, EntryKind::Data { last_offset: 110 }),
        (
            7,
            3,
            EntryKind::RaftOnly {
                payload: vec![1, 7],
            },
        ),
    ];
    for (index, term, kind) in rows {
        table
            .append(Row { index, term, kind })
            .expect("rows continue");
    }
    let state = SavedState {
        hard_state: HardState {
            term: 3,
            vote: 2,
            commit: 6,
            ..HardState::default()
        },
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        },
        table: table.clone(),
    };
    let row = RaftRecord::Row(Row {
        index: 8,
        term: 3,
        kind: EntryKind::Data { last_offset: 120 },
    });
    let hs = RaftRecord::HardState(HardState {
        term: 4,
        vote: 1,
        commit: 8,
        ..HardState::default()
    });
    vec![
        (
            "disk_parsers",
            "raft-index".into(),
            tagged(8, &table.to_bytes()),
        ),
        (
            "disk_parsers",
            "raft-state".into(),
            tagged(9, &state.encode()),
        ),
        (
            "disk_parsers",
            "raft-record".into(),
            tagged(10, &row.encode()),
        ),
        (
            "disk_parsers",
            "raft-record-snapshot".into(),
            tagged(
                10,
                &RaftRecord::Snapshot(caudal::replica::raft_snapshot::SnapshotPoint {
                    index: 90,
                    term: 4,
                    conf_state: ConfState {
                        voters: vec![1, 2, 3],
                        ..ConfState::default()
                    },
                    start_offset: 700,
                })
                .encode(),
            ),
        ),
        (
            "disk_parsers",
            "raft-record-hard-state".into(),
            tagged(10, &hs.encode()),
        ),
    ]
}

/// A version 1 metadata log as releases up to 617d542 wrote it: put "orders" on shards
/// 0, 1, 0 with one config, put "audit" on shard 1, delete "audit".
fn metadata_log_v1() -> Vec<u8> {
    let mut out = Vec::new();
    let mut record = |payload: Vec<u8>| {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        out.extend_from_slice(&payload);
    };
    let str16 = |p: &mut Vec<u8>, s: &str| {
        p.extend_from_slice(&(s.len() as u16).to_be_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    for (name, shards, configs) in [
        (
            "orders",
            &[0u32, 1, 0][..],
            &[("retention.ms", "60000")][..],
        ),
        ("audit", &[1], &[]),
    ] {
        let mut p = vec![1];
        str16(&mut p, name);
        p.extend_from_slice(&0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128.to_be_bytes());
        p.extend_from_slice(&(shards.len() as u32).to_be_bytes());
        for s in shards {
            p.extend_from_slice(&s.to_be_bytes());
        }
        p.extend_from_slice(&(configs.len() as u16).to_be_bytes());
        for (k, v) in configs {
            str16(&mut p, k);
            str16(&mut p, v);
        }
        record(p);
    }
    let mut p = vec![2];
    str16(&mut p, "audit");
    record(p);
    out
}

/// Seeds of the `raft_message` target: raft messages in Caudal's framing.
pub fn raft_seeds() -> Vec<Seed> {
    use caudal::replica::raft_message::encode;
    use raft::eraftpb::{
        ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
    };
    let batch = build_batch(
        0,
        1_700_000_000_000,
        &[b"raft", b"entry"],
        Compression::None,
    );
    let entries: Vec<Entry> = vec![
        Entry {
            entry_type: EntryType::EntryNormal,
            term: 3,
            index: 41,
            ..Entry::default()
        },
        Entry {
            entry_type: EntryType::EntryNormal,
            term: 3,
            index: 42,
            data: Bytes::from(batch),
            ..Entry::default()
        },
    ];
    let mut append = Message {
        msg_type: MessageType::MsgAppend,
        to: 2,
        from: 1,
        term: 3,
        log_term: 2,
        index: 40,
        commit: 39,
        ..Message::default()
    };
    append.entries = entries.into();
    let heartbeat = Message {
        msg_type: MessageType::MsgHeartbeat,
        to: 3,
        from: 1,
        term: 3,
        commit: 42,
        context: Bytes::from_static(b"ctx"),
        ..Message::default()
    };
    let rejected = Message {
        msg_type: MessageType::MsgRequestVoteResponse,
        to: 1,
        from: 2,
        term: 4,
        reject: true,
        reject_hint: 17,
        priority: -1,
        ..Message::default()
    };
    let mut md = SnapshotMetadata {
        index: 100,
        term: 5,
        ..SnapshotMetadata::default()
    };
    md.set_conf_state(ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        auto_leave: true,
        ..ConfState::default()
    });
    let mut snap = Snapshot {
        data: Bytes::from_static(b"snapshot"),
        ..Snapshot::default()
    };
    snap.set_metadata(md);
    let mut snapshot = Message {
        msg_type: MessageType::MsgSnapshot,
        to: 4,
        from: 1,
        term: 5,
        ..Message::default()
    };
    snapshot.set_snapshot(snap);
    vec![
        ("raft_message", "append".into(), encode(&append)),
        ("raft_message", "heartbeat".into(), encode(&heartbeat)),
        ("raft_message", "vote-rejected".into(), encode(&rejected)),
        ("raft_message", "snapshot".into(), encode(&snapshot)),
    ]
}

/// Seeds of the `peer_frame` target: a hello, both replies, and raft frames with full
/// and coalesced beats and a whole message.
pub fn peer_seeds() -> Vec<Seed> {
    use caudal::cluster::wire::{
        encode_control_into, encode_raft, BeatCache, Control, Hello, HelloReply, FRAME_HEADER,
        VERSION,
    };
    use caudal::replica::raft_shard::GroupId;
    use raft::eraftpb::{Message, MessageType};
    let body = |mode: u8, frame: Vec<u8>| {
        let mut v = vec![mode];
        v.extend_from_slice(&frame[FRAME_HEADER..]);
        v
    };
    let hello = Hello {
        version: VERSION,
        cluster_id: "caudal".into(),
        from_node: 1,
        to_node: 2,
        shard: 0,
        disk_id: [0x5a; 16],
    };
    let beat = |g: u64, response: bool| {
        (
            GroupId(g),
            Message {
                msg_type: if response {
                    MessageType::MsgHeartbeatResponse
                } else {
                    MessageType::MsgHeartbeat
                },
                from: 1,
                to: 2,
                term: 3,
                commit: 40 + g,
                ..Message::default()
            },
        )
    };
    let append = Message {
        msg_type: MessageType::MsgAppend,
        from: 1,
        to: 2,
        term: 3,
        index: 40,
        log_term: 3,
        commit: 40,
        ..Message::default()
    };
    let round = vec![
        beat(0, false),
        beat(1, true),
        (GroupId(0), append),
        beat(2, false),
    ];
    let mut sent = BeatCache::default();
    let full = encode_raft(1, 2, &round, &mut sent);
    let same = encode_raft(1, 2, &round, &mut sent);
    vec![
        ("peer_frame", "hello".into(), body(0, hello.encode())),
        (
            "peer_frame",
            "accepted".into(),
            body(0, HelloReply::Accepted.encode()),
        ),
        (
            "peer_frame",
            "refused".into(),
            body(0, HelloReply::Refused("another cluster".into()).encode()),
        ),
        ("peer_frame", "beats-full".into(), body(1, full)),
        ("peer_frame", "beats-same".into(), body(1, same)),
        (
            "peer_frame",
            "register".into(),
            body(
                1,
                encode_control_into(
                    Vec::new(),
                    &Control::Register {
                        host: "10.0.0.2".into(),
                        port: 9092,
                        shards: 2,
                        peer_host: "10.0.0.2".into(),
                        peer_port: 9192,
                    },
                ),
            ),
        ),
        (
            "peer_frame",
            "metadata".into(),
            body(
                1,
                encode_control_into(
                    Vec::new(),
                    &Control::Metadata(b"CDMT\x00\x04".to_vec().into()),
                ),
            ),
        ),
        (
            "peer_frame",
            "create-topics".into(),
            body(
                1,
                encode_control_into(
                    Vec::new(),
                    &Control::CreateTopics(vec![("orders".into(), 3, -1)]),
                ),
            ),
        ),
        (
            "peer_frame",
            "alive".into(),
            body(
                1,
                encode_control_into(
                    Vec::new(),
                    &Control::Alive {
                        leading: vec![(3, 2)],
                    },
                ),
            ),
        ),
        (
            "peer_frame",
            "allocate-producer-ids".into(),
            body(
                1,
                encode_control_into(Vec::new(), &Control::AllocateProducerIds { request: 3 }),
            ),
        ),
        (
            "peer_frame",
            "producer-id-block".into(),
            body(
                1,
                encode_control_into(
                    Vec::new(),
                    &Control::ProducerIdBlock {
                        request: 3,
                        start: 1 << 48,
                    },
                ),
            ),
        ),
        (
            "peer_frame",
            "update-topic".into(),
            body(
                1,
                encode_control_into(
                    Vec::new(),
                    &Control::UpdateTopic {
                        request: 5,
                        name: "orders".into(),
                        change: caudal::metadata::TopicChange::SetConfigs(
                            [("retention.ms".to_string(), "1000".to_string())].into(),
                        ),
                        validate_only: false,
                    },
                ),
            ),
        ),
        (
            "peer_frame",
            "answer".into(),
            body(
                1,
                encode_control_into(
                    Vec::new(),
                    &Control::Answer {
                        request: 5,
                        code: 41,
                        message: "not the controller".into(),
                    },
                ),
            ),
        ),
        (
            "peer_frame",
            "move-done".into(),
            body(
                1,
                encode_control_into(
                    Vec::new(),
                    &Control::MoveDone {
                        group: 9,
                        voters: vec![2, 3, 4],
                    },
                ),
            ),
        ),
        (
            "peer_frame",
            "elect-preferred".into(),
            body(
                1,
                encode_control_into(Vec::new(), &Control::ElectPreferred(vec![7, u64::MAX])),
            ),
        ),
    ]
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = frame_seeds();
    out.extend(batch_seeds());
    out.extend(disk_seeds());
    out.extend(raft_seeds());
    out.extend(peer_seeds());
    out
}
