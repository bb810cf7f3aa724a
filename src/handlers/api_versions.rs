//! ApiVersions: the supported ranges, straight from the API table.

use std::rc::Rc;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, RequestHeader};

use crate::error::ErrorCode;
use crate::protocol::api::SUPPORTED;
use crate::shard::state::Shard;

/// The response listing every supported API, with `error`.
pub fn response(error: ErrorCode) -> ApiVersionsResponse {
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

/// Handles ApiVersions.
pub async fn handle(
    _shard: &Rc<Shard>,
    _header: &RequestHeader,
    _request: ApiVersionsRequest,
) -> ApiVersionsResponse {
    response(ErrorCode::None)
}
