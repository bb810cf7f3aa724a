//! Request versions older than the kafka-protocol crate's codecs: Kafka 4.0 dropped every
//! version older than Kafka 2.1 (KIP-896) and the crate followed, but clients of that age
//! are still deployed (Sarama pinned to a Kafka release, old Java and Python clients).
//!
//! Each old request is decoded by hand into the crate's current request type, the normal
//! handler answers it, and the answer is encoded in the old layout by hand. Where an old
//! version has exactly the wire layout of the crate's oldest one (OffsetCommit v0–1
//! responses, OffsetFetch v0, DeleteTopics v0 requests), the crate's codec at that version
//! does the work. Layouts are from Kafka's message definitions
//! (clients/src/main/resources/common/message/*.json, before KIP-896).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse, GroupId,
    OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::frame::FrameError;

/// The oldest version of `key` the crate decodes; below it this module does.
pub fn crate_min(key: ApiKey) -> i16 {
    match key {
        ApiKey::OffsetCommit => 2,
        ApiKey::OffsetFetch => 1,
        ApiKey::DescribeConfigs => 1,
        ApiKey::CreateTopics => 2,
        ApiKey::DeleteTopics => 1,
        _ => i16::MIN,
    }
}

/// Whether this module handles `key` at `version`.
pub fn handles(key: ApiKey, version: i16) -> bool {
    version < crate_min(key)
}

/// An old request, decoded into the crate's current type for its usual handler.
#[derive(Debug)]
pub enum Request {
    /// OffsetCommit v0–1.
    OffsetCommit(OffsetCommitRequest),
    /// OffsetFetch v0.
    OffsetFetch(OffsetFetchRequest),
    /// DeleteTopics v0.
    DeleteTopics(DeleteTopicsRequest),
    /// CreateTopics v0–1.
    CreateTopics(CreateTopicsRequest),
    /// DescribeConfigs v0.
    DescribeConfigs(DescribeConfigsRequest),
}

impl Request {
    /// Decodes the body of `key` at `version` (one `handles` accepts).
    pub fn decode(key: ApiKey, version: i16, buf: &mut Bytes) -> Result<Request, FrameError> {
        let crate_codec = |e: anyhow::Error| FrameError::Malformed(e.to_string());
        Ok(match key {
            ApiKey::OffsetCommit => Request::OffsetCommit(offset_commit_request(buf, version)?),
            // v0 has v1's layout (it read ZooKeeper-stored offsets; ours are the only ones).
            ApiKey::OffsetFetch => {
                Request::OffsetFetch(OffsetFetchRequest::decode(buf, 1).map_err(crate_codec)?)
            }
            // v0's request has v1's layout; only the response differs.
            ApiKey::DeleteTopics => {
                Request::DeleteTopics(DeleteTopicsRequest::decode(buf, 1).map_err(crate_codec)?)
            }
            ApiKey::CreateTopics => Request::CreateTopics(create_topics_request(buf, version)?),
            ApiKey::DescribeConfigs => Request::DescribeConfigs(describe_configs_request(buf)?),
            _ => {
                return Err(FrameError::UnsupportedVersion {
                    key: key as i16,
                    version,
                })
            }
        })
    }
}

fn malformed(what: &str) -> FrameError {
    FrameError::Malformed(format!("truncated or invalid {what}"))
}

/// Bounds-checked reads of the classic (non-flexible) encoding.
struct Reader<'a> {
    buf: &'a mut Bytes,
}

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), FrameError> {
        if self.buf.remaining() < n {
            return Err(malformed("field"));
        }
        Ok(())
    }
    fn i8(&mut self) -> Result<i8, FrameError> {
        self.need(1)?;
        Ok(self.buf.get_i8())
    }
    fn i16(&mut self) -> Result<i16, FrameError> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }
    fn i32(&mut self) -> Result<i32, FrameError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }
    fn i64(&mut self) -> Result<i64, FrameError> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }
    fn bool(&mut self) -> Result<bool, FrameError> {
        Ok(self.i8()? != 0)
    }
    fn nullable_string(&mut self) -> Result<Option<StrBytes>, FrameError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        self.need(len)?;
        let raw = self.buf.split_to(len);
        StrBytes::from_utf8(raw)
            .map(Some)
            .map_err(|_| malformed("string (not UTF-8)"))
    }
    fn string(&mut self) -> Result<StrBytes, FrameError> {
        self.nullable_string()?
            .ok_or_else(|| malformed("string (null)"))
    }
    /// An array's length; null arrays read as `None`. Each element takes at least
    /// `min_elem` bytes, so a huge declared length is refused before allocating.
    fn array_len(&mut self, min_elem: usize) -> Result<Option<usize>, FrameError> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(None);
        }
        let n = n as usize;
        if n.saturating_mul(min_elem) > self.buf.remaining() {
            return Err(malformed("array length"));
        }
        Ok(Some(n))
    }
    fn array<T>(
        &mut self,
        min_elem: usize,
        mut each: impl FnMut(&mut Self) -> Result<T, FrameError>,
    ) -> Result<Vec<T>, FrameError> {
        let n = self.array_len(min_elem)?.unwrap_or(0);
        (0..n).map(|_| each(self)).collect()
    }
    fn done(&self) -> Result<(), FrameError> {
        if self.buf.has_remaining() {
            return Err(FrameError::Malformed(format!(
                "{} bytes after the request body",
                self.buf.remaining()
            )));
        }
        Ok(())
    }
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len() as i16);
    out.put_slice(s.as_bytes());
}

fn put_nullable_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
}

/// OffsetCommit v0 (group, topics) and v1 (with generation, member and a per-partition
/// commit timestamp, which Kafka itself ignored after 0.10.1 as we do).
pub fn offset_commit_request(
    buf: &mut Bytes,
    version: i16,
) -> Result<OffsetCommitRequest, FrameError> {
    let mut r = Reader { buf };
    let group = r.string()?;
    let (generation, member) = if version >= 1 {
        (r.i32()?, r.string()?)
    } else {
        (-1, StrBytes::default())
    };
    let topics = r.array(6, |r| {
        let name = r.string()?;
        let partitions = r.array(14, |r| {
            let index = r.i32()?;
            let offset = r.i64()?;
            if version >= 1 {
                r.i64()?; // commit timestamp
            }
            let metadata = r.nullable_string()?;
            Ok(OffsetCommitRequestPartition::default()
                .with_partition_index(index)
                .with_committed_offset(offset)
                .with_committed_metadata(metadata))
        })?;
        Ok(OffsetCommitRequestTopic::default()
            .with_name(TopicName(name))
            .with_partitions(partitions))
    })?;
    r.done()?;
    Ok(OffsetCommitRequest::default()
        .with_group_id(GroupId(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(member)
        .with_topics(topics))
}

/// CreateTopics v0 and v1 (v1 adds `validate_only`); the same topics as v2.
pub fn create_topics_request(
    buf: &mut Bytes,
    version: i16,
) -> Result<CreateTopicsRequest, FrameError> {
    let mut r = Reader { buf };
    let topics = r.array(18, |r| {
        let name = r.string()?;
        let partitions = r.i32()?;
        let replication = r.i16()?;
        let assignments = r.array(8, |r| {
            let index = r.i32()?;
            let brokers = r.array(4, |r| r.i32().map(BrokerId))?;
            Ok(CreatableReplicaAssignment::default()
                .with_partition_index(index)
                .with_broker_ids(brokers))
        })?;
        let configs = r.array(4, |r| {
            let name = r.string()?;
            let value = r.nullable_string()?;
            Ok(CreatableTopicConfig::default()
                .with_name(name)
                .with_value(value))
        })?;
        Ok(CreatableTopic::default()
            .with_name(TopicName(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication)
            .with_assignments(assignments)
            .with_configs(configs))
    })?;
    let timeout = r.i32()?;
    let validate_only = if version >= 1 { r.bool()? } else { false };
    r.done()?;
    Ok(CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(timeout)
        .with_validate_only(validate_only))
}

/// CreateTopics v0 (name, error) and v1 (with the error message) responses.
pub fn create_topics_response(resp: &CreateTopicsResponse, version: i16) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i32(resp.topics.len() as i32);
    for t in &resp.topics {
        put_string(&mut out, &t.name.0);
        out.put_i16(t.error_code);
        if version >= 1 {
            put_nullable_string(&mut out, t.error_message.as_deref());
        }
    }
    out
}

/// DeleteTopics v0 response: v1's without the throttle time.
pub fn delete_topics_response(resp: &DeleteTopicsResponse) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i32(resp.responses.len() as i32);
    for t in &resp.responses {
        put_string(&mut out, t.name.as_ref().map_or("", |n| n.0.as_str()));
        out.put_i16(t.error_code);
    }
    out
}

/// DescribeConfigs v0: v1 without `include_synonyms`.
pub fn describe_configs_request(buf: &mut Bytes) -> Result<DescribeConfigsRequest, FrameError> {
    let mut r = Reader { buf };
    let resources = r.array(7, |r| {
        let kind = r.i8()?;
        let name = r.string()?;
        let names = match r.array_len(2)? {
            None => None,
            Some(n) => Some((0..n).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?),
        };
        Ok(DescribeConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(name)
            .with_configuration_keys(names))
    })?;
    r.done()?;
    Ok(DescribeConfigsRequest::default().with_resources(resources))
}

/// Kafka's `ConfigSource.DEFAULT_CONFIG`.
const DEFAULT_CONFIG: i8 = 5;

/// DescribeConfigs v0 response: `is_default` where v1 has a config source, no synonyms.
pub fn describe_configs_response(resp: &DescribeConfigsResponse) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i32(resp.throttle_time_ms);
    out.put_i32(resp.results.len() as i32);
    for r in &resp.results {
        out.put_i16(r.error_code);
        put_nullable_string(&mut out, r.error_message.as_deref());
        out.put_i8(r.resource_type);
        put_string(&mut out, &r.resource_name);
        out.put_i32(r.configs.len() as i32);
        for c in &r.configs {
            put_string(&mut out, &c.name);
            put_nullable_string(&mut out, c.value.as_deref());
            out.put_i8(i8::from(c.read_only));
            out.put_i8(i8::from(c.config_source == DEFAULT_CONFIG));
            out.put_i8(i8::from(c.is_sensitive));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn offset_commit_v1_decodes_into_the_current_request() {
        let mut b = BytesMut::new();
        put_string(&mut b, "g");
        b.put_i32(7);
        put_string(&mut b, "member-1");
        b.put_i32(1);
        put_string(&mut b, "t");
        b.put_i32(1);
        b.put_i32(3);
        b.put_i64(42);
        b.put_i64(-1);
        put_nullable_string(&mut b, Some("m"));
        let req = offset_commit_request(&mut b.freeze(), 1).unwrap();
        assert_eq!(req.group_id.0.as_str(), "g");
        assert_eq!(req.generation_id_or_member_epoch, 7);
        assert_eq!(req.member_id.as_str(), "member-1");
        let p = &req.topics[0].partitions[0];
        assert_eq!((p.partition_index, p.committed_offset), (3, 42));
        assert_eq!(p.committed_metadata.as_deref(), Some("m"));
    }

    #[test]
    fn a_huge_array_length_is_refused_before_allocating() {
        let mut b = BytesMut::new();
        b.put_i32(i32::MAX);
        b.put_i32(1000);
        assert!(create_topics_request(&mut b.freeze(), 0).is_err());
        let mut b = BytesMut::new();
        put_string(&mut b, "g");
        b.put_i32(1);
        assert!(offset_commit_request(&mut b.freeze(), 0).is_err());
    }

    #[test]
    fn create_topics_v0_round_trips_what_v2_would_carry() {
        // Encode a v2 request with the crate (same topic layout as v0, no validate_only),
        // then read it as v0.
        let want = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_num_partitions(3)
                .with_replication_factor(1)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("1000")))])])
            .with_timeout_ms(5000);
        let mut b = BytesMut::new();
        want.encode(&mut b, 2).unwrap();
        b.truncate(b.len() - 1); // v2's validate_only
        let got = create_topics_request(&mut b.freeze(), 0).unwrap();
        assert_eq!(got, want);
        let resp =
            CreateTopicsResponse::default().with_topics(vec![CreatableTopicResult::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_error_code(36)]);
        let v0 = create_topics_response(&resp, 0);
        assert_eq!(&v0[..], &[0, 0, 0, 1, 0, 1, b't', 0, 36]);
    }
}
