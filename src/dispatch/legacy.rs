//! Versions older than the `kafka-protocol` crate's codecs (`protocol::legacy`): decoded
//! into the current request, answered by the usual handler, encoded in the old layout.

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

use super::context::RequestContext;
use super::respond::{encode_response, raw_response, Outcome};
use crate::handlers;
use crate::protocol::frame::FrameError;
use crate::protocol::legacy::{self as old, Request};

/// True when `key` at `version` takes the old-layout path.
pub fn handles(key: ApiKey, version: i16) -> bool {
    old::handles(key, version)
}

/// Decodes an old-layout request, runs the current handler, encodes the old response.
pub async fn handle(
    ctx: &RequestContext<'_>,
    key: ApiKey,
    mut frame: Bytes,
) -> Result<Outcome, FrameError> {
    let version = ctx.version();
    let id = ctx.header.correlation_id;
    let frame_out = match Request::decode(key, version, &mut frame)? {
        Request::OffsetCommit(request) => {
            let response = handlers::offset_commit::handle(ctx, request).await;
            // Responses v0 to v2 share one layout.
            encode_response(id, 2, &response)?
        }
        Request::OffsetFetch(request) => {
            let response = handlers::offset_fetch::handle(ctx, request).await;
            encode_response(id, 1, &response)?
        }
        Request::DeleteTopics(request) => {
            let response = handlers::delete_topics::handle(ctx, request).await;
            raw_response(id, &old::delete_topics_response(&response))
        }
        Request::CreateTopics(request) => {
            let response = handlers::create_topics::handle(ctx, request).await;
            raw_response(id, &old::create_topics_response(&response, version))
        }
        Request::DescribeConfigs(request) => {
            let response = handlers::describe_configs::handle(ctx, request).await;
            raw_response(id, &old::describe_configs_response(&response))
        }
    };
    Ok(Outcome::Respond(vec![frame_out]))
}
