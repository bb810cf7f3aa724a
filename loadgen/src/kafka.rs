//! A minimal Kafka client connection on glommio: version negotiation, framing, one
//! request at a time (`call`) or split into a pipelined writer and reader.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Largest response frame accepted (a fetch of `--fetch-max-bytes` plus headers).
pub const MAX_FRAME: usize = 512 << 20;

/// The version range this client speaks for each API: the lower end is the oldest the
/// code handles, the upper end the newest whose fields it fills correctly.
pub fn our_range(key: ApiKey) -> Option<(i16, i16)> {
    Some(match key {
        ApiKey::Produce => (3, 9),
        ApiKey::Fetch => (4, 12),
        ApiKey::ListOffsets => (1, 7),
        ApiKey::Metadata => (1, 12),
        ApiKey::OffsetCommit => (2, 8),
        ApiKey::OffsetFetch => (1, 7),
        ApiKey::FindCoordinator => (0, 4),
        ApiKey::JoinGroup => (0, 7),
        ApiKey::Heartbeat => (0, 4),
        ApiKey::LeaveGroup => (0, 4),
        ApiKey::SyncGroup => (0, 5),
        ApiKey::ApiVersions => (0, 3),
        ApiKey::CreateTopics => (2, 7),
        ApiKey::InitProducerId => (0, 4),
        ApiKey::AlterPartitionReassignments => (0, 0),
        _ => return None,
    })
}

/// The version ranges a broker advertised.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    ranges: HashMap<i16, (i16, i16)>,
}

impl Versions {
    /// From an ApiVersions response.
    pub fn from_response(r: &ApiVersionsResponse) -> Versions {
        Versions {
            ranges: r
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect(),
        }
    }

    /// The broker's range for `key`, if it supports it at all.
    pub fn broker_range(&self, key: ApiKey) -> Option<(i16, i16)> {
        self.ranges.get(&(key as i16)).copied()
    }

    /// The newest version both sides speak.
    pub fn pick(&self, key: ApiKey) -> Result<i16> {
        let (lo, hi) = our_range(key).ok_or_else(|| anyhow!("{key:?} is not used by loadgen"))?;
        let (blo, bhi) = self
            .broker_range(key)
            .ok_or_else(|| anyhow!("the broker does not support {key:?}"))?;
        let v = hi.min(bhi);
        if v < lo.max(blo) {
            bail!("no common version of {key:?}: broker {blo}..={bhi}, loadgen {lo}..={hi}");
        }
        Ok(v)
    }
}

/// Resolves `host:port`, preferring IPv4 (brokers often advertise `localhost`).
pub fn resolve(addr: &str) -> Result<SocketAddr> {
    let all: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or_else(|| all.first())
        .copied()
        .ok_or_else(|| anyhow!("{addr} resolves to nothing"))
}

/// Encodes one request frame (size prefix, header, body).
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> Result<BytesMut> {
    let key = R::KEY;
    let header = RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let hv = R::header_version(version);
    let size = header.compute_size(hv)? + req.compute_size(version)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(i32::try_from(size).context("request too large")?);
    header.encode(&mut buf, hv)?;
    req.encode(&mut buf, version)?;
    Ok(buf)
}

/// Decodes a response frame (without its size prefix), checking the correlation id.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response> {
    let hv = R::Response::header_version(version);
    let header = ResponseHeader::decode(&mut frame, hv)?;
    if header.correlation_id != correlation_id {
        bail!(
            "response correlation id {} where {} was expected",
            header.correlation_id,
            correlation_id
        );
    }
    R::Response::decode(&mut frame, version)
}

/// Reads one size-prefixed frame.
pub async fn read_frame<S: futures_lite::AsyncRead + Unpin>(s: &mut S) -> Result<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.context("reading frame size")?;
    let len = i32::from_be_bytes(len);
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_FRAME)
        .ok_or_else(|| anyhow!("bad response frame size {len}"))?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.context("reading frame")?;
    Ok(Bytes::from(body))
}

/// One connection to one broker.
pub struct Conn {
    stream: TcpStream,
    /// Address connected to.
    pub addr: String,
    /// What the broker supports.
    pub versions: Versions,
    client_id: String,
    next_corr: i32,
}

impl Conn {
    /// Connects and negotiates versions with ApiVersions.
    pub async fn connect(addr: &str, client_id: &str) -> Result<Conn> {
        let sa = resolve(addr)?;
        let stream = TcpStream::connect_timeout(sa, Duration::from_secs(10))
            .await
            .map_err(|e| anyhow!("connecting to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| anyhow!("TCP_NODELAY: {e}"))?;
        let mut conn = Conn {
            stream,
            addr: addr.to_string(),
            versions: Versions::default(),
            client_id: client_id.to_string(),
            next_corr: 1,
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("caudal-loadgen"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        // v3 first; a broker that does not know it answers in v0 with an error.
        let resp = match conn.call_version(&req, 3).await {
            Ok(r) if r.error_code == 0 => r,
            _ => {
                let r = conn.call_version(&req, 0).await?;
                if r.error_code != 0 {
                    bail!("ApiVersions failed with error {}", r.error_code);
                }
                r
            }
        };
        conn.versions = Versions::from_response(&resp);
        Ok(conn)
    }

    /// The version this connection uses for `R`.
    pub fn version<R: Request>(&self) -> Result<i16> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown api key {}", R::KEY))?;
        self.versions.pick(key)
    }

    /// The next correlation id.
    pub fn next_correlation(&mut self) -> i32 {
        let c = self.next_corr;
        self.next_corr = self.next_corr.wrapping_add(1).max(1);
        c
    }

    /// Sends `req` at the negotiated version and waits for its response.
    pub async fn call<R: Request>(&mut self, req: &R) -> Result<R::Response> {
        let v = self.version::<R>()?;
        self.call_version(req, v).await
    }

    /// Sends `req` at `version` and waits for its response.
    pub async fn call_version<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let corr = self.next_correlation();
        let frame = encode_request(req, version, corr, &self.client_id)?;
        self.stream.write_all(&frame).await?;
        let resp = read_frame(&mut self.stream).await?;
        decode_response::<R>(resp, version, corr)
            .with_context(|| format!("decoding response to api {} v{version}", R::KEY))
    }

    /// Client id sent in every request header.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Splits the connection for pipelining: requests are written by one task and the
    /// responses, which Kafka returns in order, read by another.
    pub fn split(self) -> (ReadHalf<TcpStream>, WriteHalf<TcpStream>, Versions) {
        let (r, w) = futures_lite::io::split(self.stream);
        (r, w, self.versions)
    }
}

/// Kafka error code names for messages.
pub fn error_name(code: i16) -> String {
    use kafka_protocol::error::ParseResponseErrorCode;
    code.err()
        .map_or_else(|| "NONE".to_string(), |e| format!("{e:?}"))
}
