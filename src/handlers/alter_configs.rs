//! AlterConfigs (replace a topic's overrides) and IncrementalAlterConfigs (set or delete
//! single keys). Changes are persisted in the metadata log and applied by every ctx.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response;
use kafka_protocol::messages::incremental_alter_configs_response;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;
use crate::metadata::topic_config;
use crate::shard::router::TopicChange;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const SET: i8 = 0;
const DELETE: i8 = 1;

/// Validates and applies new overrides for one resource.
async fn apply(
    ctx: &RequestContext<'_>,
    resource_type: i8,
    name: &str,
    configs: Result<BTreeMap<String, String>, String>,
    validate_only: bool,
) -> (ErrorCode, Option<String>) {
    let (code, msg) = apply_inner(ctx, resource_type, name, configs, validate_only).await;
    ctx.stats().error(code);
    (code, msg)
}

async fn apply_inner(
    ctx: &RequestContext<'_>,
    resource_type: i8,
    name: &str,
    configs: Result<BTreeMap<String, String>, String>,
    validate_only: bool,
) -> (ErrorCode, Option<String>) {
    match resource_type {
        TOPIC => {}
        BROKER => {
            return (
                ErrorCode::InvalidConfig,
                Some(
                    "broker settings are static: change the config file or flags and restart"
                        .into(),
                ),
            )
        }
        _ => {
            return (
                ErrorCode::InvalidRequest,
                Some(format!("unsupported resource type {resource_type}")),
            )
        }
    }
    let configs = match configs {
        Ok(c) => c,
        Err(e) => return (ErrorCode::InvalidConfig, Some(e)),
    };
    if let Err(e) = topic_config::validate(&configs) {
        return (ErrorCode::InvalidConfig, Some(e));
    }
    match ctx
        .controller()
        .update_topic(
            name.to_string(),
            TopicChange::SetConfigs(configs),
            validate_only,
        )
        .await
    {
        Ok(()) => (ErrorCode::None, None),
        Err((code, msg)) => (code, Some(msg)),
    }
}

/// Handles AlterConfigs: the given set replaces the topic's overrides.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        let configs = Ok(r
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect());
        let (code, msg) = apply(
            ctx,
            r.resource_type,
            r.resource_name.as_str(),
            configs,
            request.validate_only,
        )
        .await;
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code.code())
                .with_error_message(msg.map(StrBytes::from_string)),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// Handles IncrementalAlterConfigs: SET and DELETE of single keys (APPEND and SUBTRACT
/// apply only to list-valued configs, which topics here do not have).
pub async fn handle_incremental(
    ctx: &RequestContext<'_>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        let current = ctx
            .metadata()
            .topics
            .get(r.resource_name.as_str())
            .map(|t| t.configs.clone())
            .unwrap_or_default();
        let mut configs = Ok(current);
        for c in &r.configs {
            if let Ok(map) = configs.as_mut() {
                match (c.config_operation, &c.value) {
                    (SET, Some(v)) => {
                        map.insert(c.name.to_string(), v.to_string());
                    }
                    (DELETE, _) => {
                        map.remove(c.name.as_str());
                    }
                    (SET, None) => {
                        configs = Err(format!("no value given to set '{}'", c.name.as_str()))
                    }
                    (op, _) => {
                        configs = Err(format!(
                            "operation {op} is not supported for '{}'",
                            c.name.as_str()
                        ))
                    }
                }
            }
        }
        let (code, msg) = apply(
            ctx,
            r.resource_type,
            r.resource_name.as_str(),
            configs,
            request.validate_only,
        )
        .await;
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code.code())
                .with_error_message(msg.map(StrBytes::from_string)),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
