//! What a handler's answer becomes on the wire: one response frame, or none.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::{Encodable, HeaderVersion};

use crate::protocol::fetch_encoder::{self, EndpointOut, TopicOut};
use crate::protocol::frame::FrameError;

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

/// A handler's answer, encoded for the request's version.
pub trait Respond {
    /// The outcome for a request with this correlation id and version.
    fn respond(self, correlation_id: i32, version: i16) -> Result<Outcome, FrameError>;
}

impl<R: Encodable + HeaderVersion> Respond for R {
    fn respond(self, correlation_id: i32, version: i16) -> Result<Outcome, FrameError> {
        Ok(Outcome::Respond(vec![encode_response(
            correlation_id,
            version,
            &self,
        )?]))
    }
}

/// An answer that may be no answer at all (Produce with acks=0).
pub enum Reply<R> {
    /// Send this response.
    Send(R),
    /// Send nothing.
    Silent,
}

impl<R: Encodable + HeaderVersion> Respond for Reply<R> {
    fn respond(self, correlation_id: i32, version: i16) -> Result<Outcome, FrameError> {
        match self {
            Reply::Send(r) => r.respond(correlation_id, version),
            Reply::Silent => Ok(Outcome::NoResponse),
        }
    }
}

/// A Fetch answer: the topics, encoded by `protocol::fetch_encoder` so that the batches
/// are sent from where they already are, without copying.
pub struct FetchReply {
    /// The topics, in request order.
    pub topics: Vec<TopicOut>,
    /// The brokers the partitions' leader hints name (v16+).
    pub endpoints: Vec<EndpointOut>,
}

impl Respond for FetchReply {
    fn respond(self, correlation_id: i32, version: i16) -> Result<Outcome, FrameError> {
        Ok(Outcome::Respond(fetch_encoder::encode(
            version,
            correlation_id,
            &self.topics,
            &self.endpoints,
        )))
    }
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

/// A response frame whose body was encoded by hand (response header v0: the
/// correlation id only, as every pre-flexible version has).
pub fn raw_response(correlation_id: i32, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + body.len());
    buf.put_i32(4 + body.len() as i32);
    buf.put_i32(correlation_id);
    buf.put_slice(body);
    buf.freeze()
}
