//! Topic-level configs: which keys exist, their defaults, validation, and conversion to
//! the log's settings.

use std::collections::BTreeMap;

use crate::log::{FlushPolicy, LogConfig};

/// A topic config key this broker understands, with Kafka's default.
pub struct ConfigKey {
    /// Kafka name of the key.
    pub name: &'static str,
    /// Default value, as Kafka writes it.
    pub default: &'static str,
    /// Kafka config type code for DescribeConfigs v3+ (3 = INT, 5 = LONG, 2 = STRING).
    pub config_type: i8,
    /// One line for DescribeConfigs documentation.
    pub doc: &'static str,
}

/// Every topic config key accepted at creation.
pub const TOPIC_CONFIGS: &[ConfigKey] = &[
    ConfigKey {
        name: "cleanup.policy",
        default: "delete",
        config_type: 7,
        doc: "Only 'delete' is supported.",
    },
    ConfigKey {
        name: "max.message.bytes",
        default: "1048588",
        config_type: 3,
        doc: "Largest record batch accepted.",
    },
    ConfigKey {
        name: "retention.bytes",
        default: "-1",
        config_type: 5,
        doc: "Delete old segments while the partition is larger than this; -1 keeps all.",
    },
    ConfigKey {
        name: "retention.ms",
        default: "604800000",
        config_type: 5,
        doc: "Delete segments whose newest record is older than this; -1 keeps forever.",
    },
    ConfigKey {
        name: "segment.bytes",
        default: "1073741824",
        config_type: 3,
        doc: "Roll a segment at this size.",
    },
    ConfigKey {
        name: "segment.ms",
        default: "604800000",
        config_type: 5,
        doc: "Roll a segment after this long.",
    },
    ConfigKey {
        name: "min.insync.replicas",
        default: "1",
        config_type: 3,
        doc: "acks=all produces need this many replicas in sync, else NOT_ENOUGH_REPLICAS.",
    },
    ConfigKey {
        name: "message.timestamp.type",
        default: "CreateTime",
        config_type: 2,
        doc: "Only CreateTime is supported.",
    },
];

/// Checks config overrides given at topic creation; the error names the bad key.
pub fn validate(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in configs {
        let Some(key) = TOPIC_CONFIGS.iter().find(|c| c.name == k) else {
            return Err(format!("unknown topic config '{k}'"));
        };
        let ok = match key.name {
            "cleanup.policy" => v == "delete",
            "message.timestamp.type" => v == "CreateTime",
            "max.message.bytes" => v
                .parse::<i64>()
                .is_ok_and(|n| (1..=i32::MAX as i64).contains(&n)),
            "segment.bytes" => v
                .parse::<i64>()
                .is_ok_and(|n| (14..=i32::MAX as i64).contains(&n)),
            "segment.ms" => v.parse::<i64>().is_ok_and(|n| n >= 1),
            "min.insync.replicas" => v
                .parse::<i64>()
                .is_ok_and(|n| (1..=i32::MAX as i64).contains(&n)),
            "retention.ms" | "retention.bytes" => v.parse::<i64>().is_ok_and(|n| n >= -1),
            _ => false,
        };
        if !ok {
            return Err(format!("invalid value '{v}' for topic config '{k}'"));
        }
    }
    Ok(())
}

/// The value of `key` for a topic: its override or the default.
pub fn value_of<'a>(configs: &'a BTreeMap<String, String>, key: &'a ConfigKey) -> (&'a str, bool) {
    match configs.get(key.name) {
        Some(v) => (v.as_str(), false),
        None => (key.default, true),
    }
}

/// The log settings for a topic with these overrides and the broker's flush policy.
pub fn log_config(configs: &BTreeMap<String, String>, flush: FlushPolicy) -> LogConfig {
    let d = LogConfig::default();
    let get = |k: &str| configs.get(k).and_then(|v| v.parse::<i64>().ok());
    LogConfig {
        segment_bytes: get("segment.bytes").map_or(d.segment_bytes, |v| v as u64),
        segment_ms: get("segment.ms").unwrap_or(d.segment_ms),
        retention_ms: get("retention.ms").unwrap_or(d.retention_ms),
        retention_bytes: get("retention.bytes").unwrap_or(d.retention_bytes),
        max_message_bytes: get("max.message.bytes").map_or(d.max_message_bytes, |v| v as usize),
        flush,
        ..d
    }
}

/// The topic's `min.insync.replicas`: acks=all produces are refused while fewer
/// replicas are in sync.
pub fn min_insync_replicas(configs: &BTreeMap<String, String>) -> usize {
    configs
        .get("min.insync.replicas")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
}
