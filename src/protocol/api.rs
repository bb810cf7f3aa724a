//! The one table of supported APIs and their versions, and request dispatch.
//!
//! ApiVersions is generated from `SUPPORTED`, so the broker never advertises an API or a
//! version it does not handle. Every handler has the same shape: it receives the decoded
//! request and returns the response; this module decodes and encodes around it.

use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, DescribeLogDirsRequest, FetchRequest, FindCoordinatorRequest,
    HeartbeatRequest, IncrementalAlterConfigsRequest, InitProducerIdRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, ProduceRequest, RequestHeader, ResponseHeader,
    SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use super::frame::{peek_header, FrameError};
use super::legacy;
use crate::error::ErrorCode;
use crate::handlers;
use crate::shard::state::Shard;

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

const fn api(key: ApiKey, min: i16, max: i16) -> ApiSpec {
    ApiSpec { key, min, max }
}

/// Every API this broker answers, with the versions it handles (see docs/protocol.md).
pub const SUPPORTED: &[ApiSpec] = &[
    api(ApiKey::Produce, 3, 9),
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::ListOffsets, 1, 6),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::ApiVersions, 0, 3),
    api(ApiKey::CreateTopics, 0, 7),
    api(ApiKey::DeleteTopics, 0, 5),
    api(ApiKey::DescribeConfigs, 0, 4),
    api(ApiKey::FindCoordinator, 0, 4),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::OffsetCommit, 0, 8),
    api(ApiKey::OffsetFetch, 0, 8),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::ListGroups, 0, 4),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::InitProducerId, 0, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::DescribeLogDirs, 1, 4),
];

/// The supported range of an API, if any.
pub fn supported(key: ApiKey) -> Option<ApiSpec> {
    SUPPORTED.iter().copied().find(|s| s.key == key)
}

/// What the connection does with a request.
#[derive(Debug)]
pub enum Outcome {
    /// Write these segments, in order (together, one whole response frame).
    Respond(Vec<Bytes>),
    /// Nothing to send (a produce with acks=0).
    NoResponse,
    /// Close the connection, for this reason.
    Close(String),
}

/// Encodes a response frame: size, header, body.
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    response: &R,
) -> Result<Bytes, FrameError> {
    let header_version = R::header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let enc = |e: anyhow::Error| FrameError::Encode(e.to_string());
    let size = header.compute_size(header_version).map_err(enc)?
        + response.compute_size(version).map_err(enc)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version).map_err(enc)?;
    response.encode(&mut buf, version).map_err(enc)?;
    Ok(buf.freeze())
}

macro_rules! call {
    ($shard:expr, $header:expr, $body:expr, $req:ty, $handler:path) => {{
        let version = $header.request_api_version;
        let request = <$req>::decode(&mut $body, version)
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
        let response = $handler($shard, &$header, request).await;
        Outcome::Respond(vec![encode_response(
            $header.correlation_id,
            version,
            &response,
        )?])
    }};
}

/// Decodes one request frame, runs its handler and encodes the answer.
pub async fn dispatch(
    shard: &Rc<Shard>,
    mut frame: Bytes,
    peer: Option<std::net::SocketAddr>,
) -> Result<Outcome, FrameError> {
    let prefix = peek_header(&frame)?;
    let key =
        ApiKey::try_from(prefix.api_key).map_err(|_| FrameError::UnknownApi(prefix.api_key))?;
    let Some(spec) = supported(key) else {
        return Err(FrameError::UnknownApi(prefix.api_key));
    };
    let version = prefix.api_version;
    if version < spec.min || version > spec.max {
        if key == ApiKey::ApiVersions {
            // Answer in v0 so that any client can read the supported ranges and retry.
            let response = handlers::api_versions::response(ErrorCode::UnsupportedVersion);
            return Ok(Outcome::Respond(vec![encode_response(
                prefix.correlation_id,
                0,
                &response,
            )?]));
        }
        return Err(FrameError::UnsupportedVersion {
            key: prefix.api_key,
            version,
        });
    }
    let header = RequestHeader::decode(&mut frame, key.request_header_version(version))
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let started = std::time::Instant::now();
    if legacy::handles(key, version) {
        let outcome = dispatch_legacy(shard, header, key, frame).await?;
        shard.stats.request_done(prefix.api_key, started.elapsed());
        return Ok(outcome);
    }
    let outcome = match key {
        ApiKey::ApiVersions => call!(
            shard,
            header,
            frame,
            ApiVersionsRequest,
            handlers::api_versions::handle
        ),
        ApiKey::Metadata => call!(
            shard,
            header,
            frame,
            MetadataRequest,
            handlers::metadata::handle
        ),
        ApiKey::Fetch => {
            let request = FetchRequest::decode(&mut frame, version)
                .map_err(|e| FrameError::Malformed(e.to_string()))?;
            let topics = handlers::fetch::handle(shard, &header, request).await;
            Outcome::Respond(crate::protocol::fetch_encoder::encode(
                version,
                header.correlation_id,
                &topics,
            ))
        }
        ApiKey::ListOffsets => call!(
            shard,
            header,
            frame,
            ListOffsetsRequest,
            handlers::list_offsets::handle
        ),
        ApiKey::CreateTopics => call!(
            shard,
            header,
            frame,
            CreateTopicsRequest,
            handlers::create_topics::handle
        ),
        ApiKey::DeleteTopics => call!(
            shard,
            header,
            frame,
            DeleteTopicsRequest,
            handlers::delete_topics::handle
        ),
        ApiKey::DescribeConfigs => {
            call!(
                shard,
                header,
                frame,
                DescribeConfigsRequest,
                handlers::describe_configs::handle
            )
        }
        ApiKey::FindCoordinator => call!(
            shard,
            header,
            frame,
            FindCoordinatorRequest,
            handlers::find_coordinator::handle
        ),
        ApiKey::SyncGroup => call!(
            shard,
            header,
            frame,
            SyncGroupRequest,
            handlers::sync_group::handle
        ),
        ApiKey::Heartbeat => call!(
            shard,
            header,
            frame,
            HeartbeatRequest,
            handlers::heartbeat::handle
        ),
        ApiKey::LeaveGroup => call!(
            shard,
            header,
            frame,
            LeaveGroupRequest,
            handlers::leave_group::handle
        ),
        ApiKey::OffsetCommit => call!(
            shard,
            header,
            frame,
            OffsetCommitRequest,
            handlers::offset_commit::handle
        ),
        ApiKey::OffsetFetch => call!(
            shard,
            header,
            frame,
            OffsetFetchRequest,
            handlers::offset_fetch::handle
        ),
        ApiKey::OffsetDelete => call!(
            shard,
            header,
            frame,
            OffsetDeleteRequest,
            handlers::offset_delete::handle
        ),
        ApiKey::ListGroups => call!(
            shard,
            header,
            frame,
            ListGroupsRequest,
            handlers::list_groups::handle
        ),
        ApiKey::DescribeGroups => call!(
            shard,
            header,
            frame,
            DescribeGroupsRequest,
            handlers::describe_groups::handle
        ),
        ApiKey::DeleteGroups => call!(
            shard,
            header,
            frame,
            DeleteGroupsRequest,
            handlers::delete_groups::handle
        ),
        ApiKey::InitProducerId => call!(
            shard,
            header,
            frame,
            InitProducerIdRequest,
            handlers::init_producer_id::handle
        ),
        ApiKey::AlterConfigs => call!(
            shard,
            header,
            frame,
            AlterConfigsRequest,
            handlers::alter_configs::handle
        ),
        ApiKey::IncrementalAlterConfigs => call!(
            shard,
            header,
            frame,
            IncrementalAlterConfigsRequest,
            handlers::alter_configs::handle_incremental
        ),
        ApiKey::CreatePartitions => call!(
            shard,
            header,
            frame,
            CreatePartitionsRequest,
            handlers::create_partitions::handle
        ),
        ApiKey::DescribeCluster => call!(
            shard,
            header,
            frame,
            DescribeClusterRequest,
            handlers::describe_cluster::handle
        ),
        ApiKey::DescribeLogDirs => call!(
            shard,
            header,
            frame,
            DescribeLogDirsRequest,
            handlers::describe_log_dirs::handle
        ),
        ApiKey::JoinGroup => {
            let request = JoinGroupRequest::decode(&mut frame, version)
                .map_err(|e| FrameError::Malformed(e.to_string()))?;
            let response = handlers::join_group::handle(shard, &header, request, peer).await;
            Outcome::Respond(vec![encode_response(
                header.correlation_id,
                version,
                &response,
            )?])
        }
        ApiKey::Produce => {
            let request = ProduceRequest::decode(&mut frame, version)
                .map_err(|e| FrameError::Malformed(e.to_string()))?;
            match handlers::produce::handle(shard, &header, request).await {
                Some(response) => Outcome::Respond(vec![encode_response(
                    header.correlation_id,
                    version,
                    &response,
                )?]),
                None => Outcome::NoResponse,
            }
        }
        _ => return Err(FrameError::UnknownApi(prefix.api_key)),
    };
    shard.stats.request_done(prefix.api_key, started.elapsed());
    Ok(outcome)
}

/// A response frame whose body was encoded by hand (response header v0: the
/// correlation id only, as every pre-flexible version has).
fn raw_response(correlation_id: i32, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + body.len());
    buf.put_i32(4 + body.len() as i32);
    buf.put_i32(correlation_id);
    buf.put_slice(body);
    buf.freeze()
}

/// Versions older than the crate's codecs (`legacy`): decoded into the current request,
/// answered by the usual handler, encoded in the old layout.
async fn dispatch_legacy(
    shard: &Rc<Shard>,
    header: RequestHeader,
    key: ApiKey,
    mut frame: Bytes,
) -> Result<Outcome, FrameError> {
    let version = header.request_api_version;
    let id = header.correlation_id;
    let frame_out = match legacy::Request::decode(key, version, &mut frame)? {
        legacy::Request::OffsetCommit(request) => {
            let response = handlers::offset_commit::handle(shard, &header, request).await;
            // Responses v0 to v2 share one layout.
            encode_response(id, 2, &response)?
        }
        legacy::Request::OffsetFetch(request) => {
            let response = handlers::offset_fetch::handle(shard, &header, request).await;
            encode_response(id, 1, &response)?
        }
        legacy::Request::DeleteTopics(request) => {
            let response = handlers::delete_topics::handle(shard, &header, request).await;
            raw_response(id, &legacy::delete_topics_response(&response))
        }
        legacy::Request::CreateTopics(request) => {
            let response = handlers::create_topics::handle(shard, &header, request).await;
            raw_response(id, &legacy::create_topics_response(&response, version))
        }
        legacy::Request::DescribeConfigs(request) => {
            let response = handlers::describe_configs::handle(shard, &header, request).await;
            raw_response(id, &legacy::describe_configs_response(&response))
        }
    };
    Ok(Outcome::Respond(vec![frame_out]))
}

macro_rules! decode_as {
    ($frame:expr, $version:expr, $req:ty) => {
        <$req>::decode(&mut $frame, $version)
            .map(|_| ())
            .map_err(|e| FrameError::Malformed(e.to_string()))
    };
}

/// Decodes a request frame (without its size prefix) exactly as `dispatch` would, and
/// runs no handler. Used by the fuzz targets and their seeded pass in the tests.
pub fn decode_only(mut frame: Bytes) -> Result<ApiKey, FrameError> {
    let prefix = peek_header(&frame)?;
    let key =
        ApiKey::try_from(prefix.api_key).map_err(|_| FrameError::UnknownApi(prefix.api_key))?;
    let spec = supported(key).ok_or(FrameError::UnknownApi(prefix.api_key))?;
    let version = prefix.api_version;
    if version < spec.min || version > spec.max {
        return Err(FrameError::UnsupportedVersion {
            key: prefix.api_key,
            version,
        });
    }
    RequestHeader::decode(&mut frame, key.request_header_version(version))
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if legacy::handles(key, version) {
        legacy::Request::decode(key, version, &mut frame)?;
        return Ok(key);
    }
    match key {
        ApiKey::ApiVersions => decode_as!(frame, version, ApiVersionsRequest),
        ApiKey::Metadata => decode_as!(frame, version, MetadataRequest),
        ApiKey::Fetch => decode_as!(frame, version, FetchRequest),
        ApiKey::ListOffsets => decode_as!(frame, version, ListOffsetsRequest),
        ApiKey::CreateTopics => decode_as!(frame, version, CreateTopicsRequest),
        ApiKey::DeleteTopics => decode_as!(frame, version, DeleteTopicsRequest),
        ApiKey::DescribeConfigs => decode_as!(frame, version, DescribeConfigsRequest),
        ApiKey::FindCoordinator => decode_as!(frame, version, FindCoordinatorRequest),
        ApiKey::SyncGroup => decode_as!(frame, version, SyncGroupRequest),
        ApiKey::Heartbeat => decode_as!(frame, version, HeartbeatRequest),
        ApiKey::LeaveGroup => decode_as!(frame, version, LeaveGroupRequest),
        ApiKey::OffsetCommit => decode_as!(frame, version, OffsetCommitRequest),
        ApiKey::OffsetFetch => decode_as!(frame, version, OffsetFetchRequest),
        ApiKey::OffsetDelete => decode_as!(frame, version, OffsetDeleteRequest),
        ApiKey::ListGroups => decode_as!(frame, version, ListGroupsRequest),
        ApiKey::DescribeGroups => decode_as!(frame, version, DescribeGroupsRequest),
        ApiKey::DeleteGroups => decode_as!(frame, version, DeleteGroupsRequest),
        ApiKey::InitProducerId => decode_as!(frame, version, InitProducerIdRequest),
        ApiKey::JoinGroup => decode_as!(frame, version, JoinGroupRequest),
        ApiKey::Produce => decode_as!(frame, version, ProduceRequest),
        ApiKey::AlterConfigs => decode_as!(frame, version, AlterConfigsRequest),
        ApiKey::IncrementalAlterConfigs => {
            decode_as!(frame, version, IncrementalAlterConfigsRequest)
        }
        ApiKey::CreatePartitions => decode_as!(frame, version, CreatePartitionsRequest),
        ApiKey::DescribeCluster => decode_as!(frame, version, DescribeClusterRequest),
        ApiKey::DescribeLogDirs => decode_as!(frame, version, DescribeLogDirsRequest),
        _ => Err(FrameError::UnknownApi(prefix.api_key)),
    }?;
    Ok(key)
}
