//! DescribeConfigs for topics (overrides and defaults) and brokers (static settings).

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::context::RequestContext;
use crate::error::ErrorCode;
use crate::metadata::topic_config::{value_of, TOPIC_CONFIGS};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Kafka config sources.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

fn entry(
    version: i16,
    name: &str,
    value: &str,
    source: i8,
    config_type: i8,
    doc: &str,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value.to_string())))
        .with_read_only(source == STATIC_BROKER_CONFIG)
        .with_config_source(source);
    if version >= 3 {
        e = e
            .with_config_type(config_type)
            .with_documentation(Some(StrBytes::from_string(doc.to_string())));
    }
    e
}

/// Handles DescribeConfigs.
pub async fn handle(
    ctx: &RequestContext<'_>,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let version = ctx.header.request_api_version;
    let meta = ctx.metadata();
    let results = request
        .resources
        .into_iter()
        .map(|r| {
            let wanted = |name: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                TOPIC => match meta.topics.get(r.resource_name.as_str()) {
                    Some(t) => {
                        let configs = TOPIC_CONFIGS
                            .iter()
                            .filter(|k| wanted(k.name))
                            .map(|k| {
                                let (value, is_default) = value_of(&t.configs, k);
                                let source = if is_default {
                                    DEFAULT_CONFIG
                                } else {
                                    DYNAMIC_TOPIC_CONFIG
                                };
                                entry(version, k.name, value, source, k.config_type, k.doc)
                            })
                            .collect();
                        result.with_configs(configs)
                    }
                    None => result
                        .with_error_code(ErrorCode::UnknownTopicOrPartition.code())
                        .with_error_message(Some(StrBytes::from_static_str("unknown topic"))),
                },
                BROKER => {
                    let c = &ctx.config();
                    let settings = [
                        (
                            "broker.id",
                            ctx.broker_id(ctx.shard_id()).to_string(),
                            3,
                            "Broker id of this ctx.",
                        ),
                        (
                            "log.dirs",
                            c.data_dir.display().to_string(),
                            2,
                            "Data directory.",
                        ),
                        (
                            "num.partitions",
                            c.default_partitions.to_string(),
                            3,
                            "Partitions of auto-created topics.",
                        ),
                        (
                            "auto.create.topics.enable",
                            c.auto_create_topics.to_string(),
                            1,
                            "Create topics on first use.",
                        ),
                        (
                            "socket.request.max.bytes",
                            c.socket_request_max_bytes.to_string(),
                            3,
                            "Largest request accepted.",
                        ),
                        (
                            "log.flush.interval.ms",
                            match c.flush {
                                crate::log::FlushPolicy::Durable => "0".to_string(),
                                crate::log::FlushPolicy::Interval(d) => d.as_millis().to_string(),
                            },
                            5,
                            "0: every acknowledged batch is fsynced first.",
                        ),
                    ];
                    let configs = settings
                        .iter()
                        .filter(|(n, ..)| wanted(n))
                        .map(|(n, v, t, d)| entry(version, n, v, STATIC_BROKER_CONFIG, *t, d))
                        .collect();
                    result.with_configs(configs)
                }
                _ => result
                    .with_error_code(ErrorCode::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "unsupported resource type",
                    ))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
