//! The classic consumer-group protocol, step by step, as the Java client drives it.

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};

use super::*;

const GROUP: &str = "g1";

fn coordinator(broker: &TestBroker) -> Client {
    let mut c = Client::connect(broker.addr(0));
    let r: FindCoordinatorResponse = c.call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str(GROUP)),
    );
    assert_eq!(r.error_code, 0);
    Client::connect(SocketAddr::from(([127, 0, 0, 1], r.port as u16)))
}

fn join_request(member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_session_timeout_ms(1000)
        .with_rebalance_timeout_ms(5000)
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"meta"))])
}

/// Joins as a new member: MEMBER_ID_REQUIRED first, then the real join.
fn send_join(c: &mut Client, member: &str) -> i32 {
    c.send(ApiKey::JoinGroup, 9, &join_request(member))
}

fn new_member_id(c: &mut Client) -> String {
    let corr = send_join(c, "");
    let r: JoinGroupResponse = c.recv(9, corr);
    assert_eq!(r.error_code, 79, "MEMBER_ID_REQUIRED");
    r.member_id.to_string()
}

fn sync(
    c: &mut Client,
    member: &str,
    generation: i32,
    assignments: Vec<(&str, &'static [u8])>,
) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_generation_id(generation)
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
        .with_protocol_name(Some(StrBytes::from_static_str("range")))
        .with_assignments(
            assignments
                .into_iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(m.to_string()))
                        .with_assignment(Bytes::from_static(a))
                })
                .collect(),
        );
    c.call(ApiKey::SyncGroup, 5, &req)
}

fn heartbeat(c: &mut Client, member: &str, generation: i32) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_generation_id(generation)
        .with_member_id(StrBytes::from_string(member.to_string()));
    let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 4, &req);
    r.error_code
}

#[test]
fn members_join_sync_rebalance_and_leave() {
    let broker = TestBroker::start(2);
    let mut a = coordinator(&broker);
    let a_id = new_member_id(&mut a);
    let corr = send_join(&mut a, &a_id);
    let ja: JoinGroupResponse = a.recv(9, corr);
    assert_eq!(ja.error_code, 0);
    assert_eq!(ja.generation_id, 1);
    assert_eq!(ja.leader.as_str(), a_id);
    assert_eq!(ja.members.len(), 1);
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));
    let s = sync(&mut a, &a_id, 1, vec![(&a_id, b"all-partitions")]);
    assert_eq!(
        (s.error_code, &s.assignment[..]),
        (0, &b"all-partitions"[..])
    );
    assert_eq!(heartbeat(&mut a, &a_id, 1), 0);

    // A second member joins: the first learns of the rebalance from its heartbeat.
    let mut b = coordinator(&broker);
    let b_id = new_member_id(&mut b);
    let b_corr = send_join(&mut b, &b_id);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(heartbeat(&mut a, &a_id, 1), 27, "REBALANCE_IN_PROGRESS");
    let a_corr = send_join(&mut a, &a_id);
    let ja: JoinGroupResponse = a.recv(9, a_corr);
    let jb: JoinGroupResponse = b.recv(9, b_corr);
    assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
    assert_eq!(ja.leader.as_str(), a_id, "the leader stays");
    assert_eq!(ja.members.len(), 2);
    assert!(jb.members.is_empty(), "only the leader sees the members");
    // The follower's sync waits for the leader's assignment.
    let b_sync = b.send(
        ApiKey::SyncGroup,
        5,
        &SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
            .with_generation_id(2)
            .with_member_id(StrBytes::from_string(b_id.clone())),
    );
    let s = sync(&mut a, &a_id, 2, vec![(&a_id, b"p0"), (&b_id, b"p1")]);
    assert_eq!(&s.assignment[..], b"p0");
    let sb: SyncGroupResponse = b.recv(5, b_sync);
    assert_eq!((sb.error_code, &sb.assignment[..]), (0, &b"p1"[..]));

    // A stale generation is refused.
    assert_eq!(heartbeat(&mut b, &b_id, 1), 22, "ILLEGAL_GENERATION");

    // Members are listed.
    let groups: ListGroupsResponse =
        Client::connect(broker.addr(0)).call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert!(groups
        .groups
        .iter()
        .any(|g| g.group_id.as_str() == GROUP && g.group_state.as_str() == "Stable"));

    // b leaves; a rejoins alone in generation 3.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_members(vec![
            kafka_protocol::messages::leave_group_request::MemberIdentity::default()
                .with_member_id(StrBytes::from_string(b_id.clone())),
        ]);
    let l: LeaveGroupResponse = b.call(ApiKey::LeaveGroup, 5, &leave);
    assert_eq!(l.members[0].error_code, 0);
    assert_eq!(heartbeat(&mut a, &a_id, 2), 27);
    let corr = send_join(&mut a, &a_id);
    let ja: JoinGroupResponse = a.recv(9, corr);
    assert_eq!((ja.generation_id, ja.members.len()), (3, 1));
}

#[test]
fn a_silent_member_is_evicted_after_its_session_timeout() {
    let broker = TestBroker::start(1);
    let mut a = coordinator(&broker);
    let a_id = new_member_id(&mut a);
    let corr = send_join(&mut a, &a_id);
    let _: JoinGroupResponse = a.recv(9, corr);
    sync(&mut a, &a_id, 1, vec![]);
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(
        heartbeat(&mut a, &a_id, 1),
        25,
        "UNKNOWN_MEMBER_ID after eviction"
    );
}

#[test]
fn committed_offsets_survive_a_restart() {
    let mut broker = TestBroker::start(2);
    let mut c = coordinator(&broker);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name("t"))
            .with_partitions(vec![
                OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(42),
                OffsetCommitRequestPartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(7),
            ])]);
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &commit);
    assert!(r.topics[0].partitions.iter().all(|p| p.error_code == 0));
    drop(c);
    broker.restart();
    let mut c = coordinator(&broker);
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(name("t"))
            .with_partition_indexes(vec![0, 1, 2])]));
    let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 7, &fetch);
    let got: Vec<(i32, i64)> = r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(got, vec![(0, 42), (1, 7), (2, -1)]);
}

#[test]
fn group_requests_to_another_shard_get_not_coordinator() {
    let broker = TestBroker::start(2);
    let owner = caudal::group::coordinator_shard(GROUP, 2);
    let mut other = Client::connect(broker.addr(1 - owner));
    let r: HeartbeatResponse = other.call(
        ApiKey::Heartbeat,
        4,
        &HeartbeatRequest::default().with_group_id(GroupId(StrBytes::from_static_str(GROUP))),
    );
    assert_eq!(r.error_code, 16, "NOT_COORDINATOR");
}

#[test]
fn a_stable_group_carries_on_with_its_generation_and_members_after_a_restart() {
    use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
    let mut broker = TestBroker::start(2);
    let mut a = coordinator(&broker);
    let a_id = new_member_id(&mut a);
    let corr = send_join(&mut a, &a_id);
    let ja: JoinGroupResponse = a.recv(9, corr);
    assert_eq!((ja.error_code, ja.generation_id), (0, 1));
    let s = sync(&mut a, &a_id, 1, vec![(&a_id, b"all-partitions")]);
    assert_eq!(s.error_code, 0);
    // The coordinator stores the stable group within a tick of its session checks.
    std::thread::sleep(Duration::from_millis(600));
    broker.restart();
    let mut a = coordinator(&broker);
    // The member carries on: same generation and member id, no rejoin.
    assert_eq!(
        heartbeat(&mut a, &a_id, 1),
        0,
        "heartbeat after the restart"
    );
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_generation_id_or_member_epoch(1)
        .with_member_id(StrBytes::from_string(a_id.clone()))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name("t"))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(42)])]);
    let r: OffsetCommitResponse = a.call(ApiKey::OffsetCommit, 8, &commit);
    assert_eq!(
        r.topics[0].partitions[0].error_code, 0,
        "commit with the generation"
    );
    let d: DescribeGroupsResponse = a.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_static_str(GROUP))]),
    );
    let g = &d.groups[0];
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.members.len(), 1);
    assert_eq!(g.members[0].member_id.as_str(), a_id);
    assert_eq!(&g.members[0].member_assignment[..], b"all-partitions");
    // A silent member still expires after its session: the rebuilt one's clock starts
    // at the takeover.
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(
        heartbeat(&mut a, &a_id, 1),
        25,
        "UNKNOWN_MEMBER_ID once expired"
    );
}
