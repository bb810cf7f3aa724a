//! Request dispatch: the one table of supported APIs — each API's version range beside
//! its request type and handler — and the decode → handle → encode step around it.
//!
//! ApiVersions is answered from the same table, so the broker never advertises an API
//! or a version it does not handle, and `decode_only` (the fuzz targets) decodes exactly
//! what `dispatch` would. Every handler has one shape:
//! `async fn handle(ctx: &RequestContext<'_>, request: R) -> impl Respond`.

pub mod context;
mod legacy;
pub mod respond;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterPartitionReassignmentsRequest, ApiKey, ApiVersionsRequest,
    ApiVersionsResponse, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    DescribeLogDirsRequest, DescribeQuorumRequest, ElectLeadersRequest, FetchRequest,
    FindCoordinatorRequest, HeartbeatRequest, IncrementalAlterConfigsRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, ListPartitionReassignmentsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    RequestHeader, SyncGroupRequest,
};
use kafka_protocol::protocol::Decodable;

use crate::error::ErrorCode;
use crate::handlers;
use crate::protocol::frame::{peek_header, FrameError};
use crate::shard::state::Shard;

pub use context::RequestContext;
pub use respond::{encode_response, FetchReply, Outcome, Reply, Respond};

/// One supported API with its version range.
#[derive(Debug, Clone, Copy)]
pub struct ApiSpec {
    /// The API.
    pub key: ApiKey,
    /// Lowest version handled.
    pub min: i16,
    /// Highest version handled.
    pub max: i16,
}

fn malformed(e: anyhow::Error) -> FrameError {
    FrameError::Malformed(e.to_string())
}

/// Writes the API table: `SUPPORTED`, and the decode-and-handle and decode-only steps,
/// from one list of `Key min..=max => RequestType, handler;`.
macro_rules! api_table {
    ($($key:ident $min:literal ..= $max:literal => $req:ty, $handler:path;)*) => {
        /// Every API this broker answers, with the versions it handles (see
        /// docs/protocol.md).
        pub const SUPPORTED: &[ApiSpec] = &[
            $(ApiSpec { key: ApiKey::$key, min: $min, max: $max },)*
        ];

        /// Decodes a request of the crate's current layout and runs its handler.
        async fn handle_current(
            ctx: &RequestContext<'_>,
            key: ApiKey,
            frame: &mut Bytes,
        ) -> Result<Outcome, FrameError> {
            let version = ctx.version();
            let id = ctx.header.correlation_id;
            match key {
                $(ApiKey::$key => {
                    let request = <$req>::decode(frame, version).map_err(malformed)?;
                    $handler(ctx, request).await.respond(id, version)
                })*
                other => Err(FrameError::UnknownApi(other as i16)),
            }
        }

        /// Decodes a request of the crate's current layout, and nothing else.
        fn decode_current(key: ApiKey, version: i16, frame: &mut Bytes) -> Result<(), FrameError> {
            match key {
                $(ApiKey::$key => <$req>::decode(frame, version).map(|_| ()).map_err(malformed),)*
                other => Err(FrameError::UnknownApi(other as i16)),
            }
        }
    };
}

api_table! {
    Produce 3..=11 => ProduceRequest, handlers::produce::handle;
    Fetch 4..=16 => FetchRequest, handlers::fetch::handle;
    ListOffsets 1..=6 => ListOffsetsRequest, handlers::list_offsets::handle;
    Metadata 0..=12 => MetadataRequest, handlers::metadata::handle;
    ApiVersions 0..=3 => ApiVersionsRequest, api_versions;
    CreateTopics 0..=7 => CreateTopicsRequest, handlers::create_topics::handle;
    DeleteTopics 0..=5 => DeleteTopicsRequest, handlers::delete_topics::handle;
    DescribeConfigs 0..=4 => DescribeConfigsRequest, handlers::describe_configs::handle;
    FindCoordinator 0..=4 => FindCoordinatorRequest, handlers::find_coordinator::handle;
    JoinGroup 0..=9 => JoinGroupRequest, handlers::join_group::handle;
    SyncGroup 0..=5 => SyncGroupRequest, handlers::sync_group::handle;
    Heartbeat 0..=4 => HeartbeatRequest, handlers::heartbeat::handle;
    LeaveGroup 0..=5 => LeaveGroupRequest, handlers::leave_group::handle;
    OffsetCommit 0..=8 => OffsetCommitRequest, handlers::offset_commit::handle;
    OffsetFetch 0..=8 => OffsetFetchRequest, handlers::offset_fetch::handle;
    OffsetDelete 0..=0 => OffsetDeleteRequest, handlers::offset_delete::handle;
    ListGroups 0..=4 => ListGroupsRequest, handlers::list_groups::handle;
    DescribeGroups 0..=5 => DescribeGroupsRequest, handlers::describe_groups::handle;
    DeleteGroups 0..=2 => DeleteGroupsRequest, handlers::delete_groups::handle;
    InitProducerId 0..=4 => InitProducerIdRequest, handlers::init_producer_id::handle;
    AlterConfigs 0..=2 => AlterConfigsRequest, handlers::alter_configs::handle;
    IncrementalAlterConfigs 0..=1 => IncrementalAlterConfigsRequest, handlers::alter_configs::handle_incremental;
    CreatePartitions 0..=3 => CreatePartitionsRequest, handlers::create_partitions::handle;
    DescribeCluster 0..=1 => DescribeClusterRequest, handlers::describe_cluster::handle;
    DescribeLogDirs 1..=4 => DescribeLogDirsRequest, handlers::describe_log_dirs::handle;
    OffsetForLeaderEpoch 2..=4 => OffsetForLeaderEpochRequest, handlers::offset_for_leader_epoch::handle;
    ElectLeaders 0..=2 => ElectLeadersRequest, handlers::elect_leaders::handle;
    DescribeQuorum 0..=2 => DescribeQuorumRequest, handlers::describe_quorum::handle;
    AlterPartitionReassignments 0..=1 => AlterPartitionReassignmentsRequest, handlers::alter_partition_reassignments::handle;
    ListPartitionReassignments 0..=0 => ListPartitionReassignmentsRequest, handlers::list_partition_reassignments::handle;
}

/// The supported range of an API, if any.
pub fn supported(key: ApiKey) -> Option<ApiSpec> {
    SUPPORTED.iter().copied().find(|s| s.key == key)
}

/// The ApiVersions response listing every supported API, with `error`.
pub fn api_versions_response(error: ErrorCode) -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|s| {
            ApiVersion::default()
                .with_api_key(s.key as i16)
                .with_min_version(s.min)
                .with_max_version(s.max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error.code())
        .with_api_keys(api_keys)
}

/// Handles ApiVersions: the table itself.
async fn api_versions(
    _ctx: &RequestContext<'_>,
    _request: ApiVersionsRequest,
) -> ApiVersionsResponse {
    api_versions_response(ErrorCode::None)
}

/// The API and header of a frame whose version this broker handles.
fn admit(frame: &mut Bytes) -> Result<Admitted, FrameError> {
    let prefix = peek_header(frame)?;
    let key =
        ApiKey::try_from(prefix.api_key).map_err(|_| FrameError::UnknownApi(prefix.api_key))?;
    let spec = supported(key).ok_or(FrameError::UnknownApi(prefix.api_key))?;
    let version = prefix.api_version;
    if version < spec.min || version > spec.max {
        if key == ApiKey::ApiVersions {
            return Ok(Admitted::OldApiVersions(prefix.correlation_id, version));
        }
        return Err(FrameError::UnsupportedVersion {
            key: prefix.api_key,
            version,
        });
    }
    let header =
        RequestHeader::decode(frame, key.request_header_version(version)).map_err(malformed)?;
    Ok(Admitted::Request(key, header))
}

enum Admitted {
    /// A supported API at a supported version.
    Request(ApiKey, RequestHeader),
    /// ApiVersions at a version above ours: answered in v0 so that any client can read
    /// the supported ranges and retry.
    OldApiVersions(i32, i16),
}

/// Decodes one request frame, runs its handler and encodes the answer.
pub async fn dispatch(
    shard: &Rc<Shard>,
    mut frame: Bytes,
    peer: Option<std::net::SocketAddr>,
) -> Result<Outcome, FrameError> {
    // The whole frame, so that Produce can take its record batches over without copying
    // them once nothing else refers to it (`handlers::produce::handle_frame`).
    let whole = frame.clone();
    let (key, header) = match admit(&mut frame)? {
        Admitted::Request(key, header) => (key, header),
        Admitted::OldApiVersions(id, _) => {
            return api_versions_response(ErrorCode::UnsupportedVersion).respond(id, 0);
        }
    };
    let started = std::time::Instant::now();
    let header = if key == ApiKey::Produce {
        detached(header)
    } else {
        header
    };
    let ctx = RequestContext::new(shard, header, peer);
    let outcome = if legacy::handles(key, ctx.version()) {
        drop(whole);
        legacy::handle(&ctx, key, frame).await?
    } else if key == ApiKey::Produce {
        let id = ctx.header.correlation_id;
        let version = ctx.version();
        let request = ProduceRequest::decode(&mut frame, version).map_err(malformed)?;
        drop(frame);
        handlers::produce::handle_frame(&ctx, request, whole)
            .await
            .respond(id, version)?
    } else {
        drop(whole);
        handle_current(&ctx, key, &mut frame).await?
    };
    shard.stats.request_done(key as i16, started.elapsed());
    Ok(outcome)
}

/// A header that holds no slice of its frame (the client id and tagged fields copied),
/// so that the frame can be taken over by its request's handler.
fn detached(mut header: RequestHeader) -> RequestHeader {
    header.client_id = header
        .client_id
        .map(|c| kafka_protocol::protocol::StrBytes::from_string(c.to_string()));
    for v in header.unknown_tagged_fields.values_mut() {
        *v = Bytes::copy_from_slice(v);
    }
    header
}

/// Decodes a request frame (without its size prefix) exactly as `dispatch` would, and
/// runs no handler. Used by the fuzz targets and their seeded pass in the tests.
pub fn decode_only(mut frame: Bytes) -> Result<ApiKey, FrameError> {
    let (key, header) = match admit(&mut frame)? {
        Admitted::Request(key, header) => (key, header),
        Admitted::OldApiVersions(_, version) => {
            return Err(FrameError::UnsupportedVersion {
                key: ApiKey::ApiVersions as i16,
                version,
            })
        }
    };
    let version = header.request_api_version;
    if legacy::handles(key, version) {
        crate::protocol::legacy::Request::decode(key, version, &mut frame)?;
    } else {
        decode_current(key, version, &mut frame)?;
    }
    Ok(key)
}
