//! Kafka RecordBatch v2 headers: parsing, validation and the fields the broker rewrites.
//!
//! The broker never decompresses a batch on the produce or fetch path. It checks the
//! framing and the CRC, reads the few header fields it needs, and patches the base
//! offset and partition leader epoch in place (neither is covered by the CRC).
//!
//! Format (all integers big-endian), as on the wire and on disk:
//! ```text
//! { base_offset: i64, batch_length: i32, partition_leader_epoch: i32, magic: i8 (=2),
//!   crc: u32 (CRC32C of attributes..end), attributes: i16, last_offset_delta: i32,
//!   base_timestamp: i64, max_timestamp: i64, producer_id: i64, producer_epoch: i16,
//!   base_sequence: i32, records_count: i32, records: [u8] }
//! ```

use thiserror::Error;

/// Bytes before the `batch_length` field ends: base offset (8) + batch length (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 batch header, up to and including `records_count`.
pub const HEADER_LEN: usize = 61;
/// The only record format this broker accepts.
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

/// Why a batch was refused. Each variant names a distinct way a producer (or a disk)
/// can get a batch wrong, so the caller can map it to the matching Kafka error code.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than a batch header.
    #[error("batch truncated: {available} bytes, need at least {needed}")]
    Truncated {
        /// Bytes present.
        available: usize,
        /// Bytes the header or length field requires.
        needed: usize,
    },
    /// The length field is smaller than a header or points past the data.
    #[error("batch length field {0} is invalid")]
    BadLength(i32),
    /// A record format other than v2.
    #[error("unsupported record batch magic {0}, only magic 2 is accepted")]
    BadMagic(i8),
    /// The stored CRC does not match the bytes.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC32C computed over attributes..end.
        computed: u32,
    },
    /// Header fields that cannot describe a real batch.
    #[error("invalid batch header: {0}")]
    InvalidHeader(&'static str),
    /// The batch is larger than the topic allows.
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the batch.
        size: usize,
        /// Configured maximum.
        limit: usize,
    },
}

pub use crate::compression::Compression;

impl From<crate::compression::DecompressError> for BatchError {
    fn from(e: crate::compression::DecompressError) -> Self {
        BatchError::InvalidHeader(match e {
            crate::compression::DecompressError::TooLarge => {
                "records decompress past the size limit"
            }
            crate::compression::DecompressError::Corrupt => "compressed records do not decompress",
        })
    }
}

/// The header fields of one validated batch, read without copying the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (as written in the bytes).
    pub base_offset: i64,
    /// Total size of the batch in bytes, including the 12-byte log overhead.
    pub size: usize,
    /// Leader epoch stamped by the broker.
    pub partition_leader_epoch: i32,
    /// Raw attributes.
    pub attributes: i16,
    /// `last_offset - base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub records_count: i32,
}

impl BatchHeader {
    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Number of offsets the batch spans.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// Compression codec of the records.
    pub fn compression(&self) -> Option<Compression> {
        match self.attributes & 0x07 {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// True for transaction markers (control batches).
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// True when the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the size of the batch starting at `buf[0]` from its length field, without
/// checking anything else. `None` when fewer than 12 bytes are present or the length
/// cannot be a batch. Used to walk a run of batches.
pub fn peek_batch_size(buf: &[u8]) -> Option<usize> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let len = be_i32(buf, BATCH_LENGTH);
    if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return None;
    }
    (len as usize).checked_add(LOG_OVERHEAD)
}

/// Reads the first and last offsets of the batch starting at `buf[0]` from its header
/// alone (the first 27 bytes), without checking anything else. `None` when fewer bytes
/// are present.
pub fn peek_offsets(buf: &[u8]) -> Option<(i64, i64)> {
    if buf.len() < LAST_OFFSET_DELTA + 4 {
        return None;
    }
    let base = i64::from_be_bytes(buf[BASE_OFFSET..BASE_OFFSET + 8].try_into().ok()?);
    Some((base, base + i64::from(be_i32(buf, LAST_OFFSET_DELTA))))
}

/// Reads the header of the batch at the start of `buf` and checks its framing (length
/// and magic) but not its CRC. `buf` may extend past the batch.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            available: buf.len(),
            needed: HEADER_LEN,
        });
    }
    let len = be_i32(buf, BATCH_LENGTH);
    if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::BadLength(len));
    }
    let size = len as usize + LOG_OVERHEAD;
    if size > buf.len() {
        return Err(BatchError::Truncated {
            available: buf.len(),
            needed: size,
        });
    }
    let magic = buf[MAGIC] as i8;
    if magic != MAGIC_V2 {
        return Err(BatchError::BadMagic(magic));
    }
    Ok(BatchHeader {
        base_offset: be_i64(buf, BASE_OFFSET),
        size,
        partition_leader_epoch: be_i32(buf, LEADER_EPOCH),
        attributes: be_i16(buf, ATTRIBUTES),
        last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA),
        base_timestamp: be_i64(buf, BASE_TIMESTAMP),
        max_timestamp: be_i64(buf, MAX_TIMESTAMP),
        producer_id: be_i64(buf, PRODUCER_ID),
        producer_epoch: be_i16(buf, PRODUCER_EPOCH),
        base_sequence: be_i32(buf, BASE_SEQUENCE),
        records_count: be_i32(buf, RECORDS_COUNT),
    })
}

/// Computes the CRC32C a batch should carry (over attributes..end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES..])
}

/// Parses the header of the batch at the start of `buf` and verifies its CRC.
pub fn check_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(buf)?;
    let stored = u32::from_be_bytes([buf[CRC], buf[CRC + 1], buf[CRC + 2], buf[CRC + 3]]);
    let computed = compute_crc(&buf[..header.size]);
    if stored != computed {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    Ok(header)
}

/// Validates a batch as a producer sent it: framing, CRC, and header fields that only a
/// broken client would get wrong.
pub fn validate_produced_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = check_batch(buf)?;
    if header.last_offset_delta < 0 {
        return Err(BatchError::InvalidHeader("negative last offset delta"));
    }
    if header.records_count <= 0 {
        return Err(BatchError::InvalidHeader("batch holds no records"));
    }
    if i64::from(header.records_count) != header.offset_count() {
        return Err(BatchError::InvalidHeader(
            "record count does not match last offset delta",
        ));
    }
    if header.compression().is_none() {
        return Err(BatchError::InvalidHeader("unknown compression codec"));
    }
    Ok(header)
}

/// Overwrites the base offset and leader epoch of the batch at the start of `batch`.
/// Neither field is covered by the CRC, so the batch stays valid.
pub fn set_offset_and_epoch(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Stamps idempotent-producer fields into a batch and recomputes its CRC (they are
/// covered by it). Used by tests and the load generator, never by the broker.
pub fn set_producer(batch: &mut [u8], producer_id: i64, epoch: i16, base_sequence: i32) {
    batch[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
    batch[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Builds an uncompressed v2 batch from raw record values. Used by tests, benchmarks and
/// the load generator; the broker itself never builds batches.
pub fn build_batch(
    base_offset: i64,
    timestamp: i64,
    values: &[&[u8]],
    compression: Compression,
) -> Vec<u8> {
    let mut records = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let mut body = Vec::with_capacity(value.len() + 16);
        body.push(0); // record attributes
        put_varlong(&mut body, 0); // timestamp delta
        put_varlong(&mut body, i as i64); // offset delta
        put_varlong(&mut body, -1); // null key
        put_varlong(&mut body, value.len() as i64);
        body.extend_from_slice(value);
        put_varlong(&mut body, 0); // no headers
        put_varlong(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let (codec, payload) = (
        compression.attribute_bits(),
        crate::compression::compress(compression, &records),
    );
    let count = values.len() as i32;
    let mut b = Vec::with_capacity(HEADER_LEN + payload.len());
    b.extend_from_slice(&base_offset.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + payload.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    b.extend_from_slice(&codec.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&payload);
    let crc = compute_crc(&b);
    b[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// One record of an uncompressed batch, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Offset delta from the batch base offset.
    pub offset_delta: i64,
    /// Timestamp delta from the batch base timestamp.
    pub timestamp_delta: i64,
    /// Key, if not null.
    pub key: Option<&'a [u8]>,
    /// Value, if not null.
    pub value: Option<&'a [u8]>,
}

/// Reads the records of an uncompressed batch (headers are skipped). Compressed batches
/// are refused: the broker never decompresses on the data path.
pub fn uncompressed_records(batch: &[u8]) -> Result<Vec<RecordRef<'_>>, BatchError> {
    let h = parse_header(batch)?;
    if h.compression() != Some(Compression::None) {
        return Err(BatchError::InvalidHeader("records are compressed"));
    }
    parse_records(&batch[HEADER_LEN..h.size], h.records_count)
}

/// Parses `count` records from an (uncompressed) records section.
pub fn parse_records(mut rest: &[u8], count: i32) -> Result<Vec<RecordRef<'_>>, BatchError> {
    let count =
        usize::try_from(count).map_err(|_| BatchError::InvalidHeader("negative record count"))?;
    let mut out = Vec::with_capacity(count.min(rest.len()));
    let bad = || BatchError::InvalidHeader("malformed record");
    for _ in 0..count {
        let len = usize::try_from(get_varlong(&mut rest).ok_or_else(bad)?).map_err(|_| bad())?;
        let (mut rec, tail) = rest.split_at_checked(len).ok_or_else(bad)?;
        rest = tail;
        rec = rec.get(1..).ok_or_else(bad)?; // attributes
        let timestamp_delta = get_varlong(&mut rec).ok_or_else(bad)?;
        let offset_delta = get_varlong(&mut rec).ok_or_else(bad)?;
        let key = get_bytes(&mut rec).ok_or_else(bad)?;
        let value = get_bytes(&mut rec).ok_or_else(bad)?;
        out.push(RecordRef {
            offset_delta,
            timestamp_delta,
            key,
            value,
        });
    }
    Ok(out)
}

/// (offset delta, timestamp) of every record of a batch, decompressing it if needed.
/// Off the data path: used to answer ListOffsets by timestamp at record precision.
pub fn record_timestamps(
    batch: &[u8],
    max_uncompressed: usize,
) -> Result<Vec<(i64, i64)>, BatchError> {
    let h = parse_header(batch)?;
    let codec = h
        .compression()
        .ok_or(BatchError::InvalidHeader("unknown compression codec"))?;
    let payload = &batch[HEADER_LEN..h.size];
    let owned;
    let records = if codec == Compression::None {
        payload
    } else {
        owned = crate::compression::decompress(codec, payload, max_uncompressed)?;
        &owned[..]
    };
    Ok(parse_records(records, h.records_count)?
        .into_iter()
        .map(|r| (r.offset_delta, h.base_timestamp + r.timestamp_delta))
        .collect())
}

fn get_varlong(b: &mut &[u8]) -> Option<i64> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let byte = *b.first()?;
        *b = &b[1..];
        z |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// A varint-length-prefixed byte string; length -1 is null. `None` when malformed.
fn get_bytes<'a>(b: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let len = get_varlong(b)?;
    if len < 0 {
        return Some(None);
    }
    let (v, rest) = b.split_at_checked(usize::try_from(len).ok()?)?;
    *b = rest;
    Some(Some(v))
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_alone_gives_the_batch_offsets() {
        let b = build_batch(10, 1000, &[b"a", b"b", b"c"], Compression::None);
        assert_eq!(peek_offsets(&b[..HEADER_LEN]), Some((10, 12)));
        assert_eq!(peek_offsets(&b[..20]), None);
    }

    #[test]
    fn every_codec_round_trips_through_record_timestamps() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = build_batch(0, 1000, &[b"a", b"bb", b"ccc"], codec);
            let ts = record_timestamps(&b, 1 << 20).unwrap();
            assert_eq!(ts, vec![(0, 1000), (1, 1000), (2, 1000)], "{codec:?}");
        }
    }

    #[test]
    fn built_batch_passes_validation() {
        let b = build_batch(0, 1000, &[b"a", b"bc"], Compression::None);
        let h = validate_produced_batch(&b).unwrap();
        assert_eq!(h.size, b.len());
        assert_eq!(h.records_count, 2);
        assert_eq!(h.last_offset_delta, 1);
    }

    #[test]
    fn patching_offset_keeps_crc_valid() {
        let mut b = build_batch(0, 1000, &[b"abc"], Compression::Zstd);
        set_offset_and_epoch(&mut b, 42, 7);
        let h = check_batch(&b).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.partition_leader_epoch, 7);
    }

    #[test]
    fn records_of_a_built_batch_read_back() {
        let b = build_batch(5, 1000, &[b"one", b"", b"three"], Compression::None);
        let recs = uncompressed_records(&b).unwrap();
        let values: Vec<_> = recs.iter().map(|r| r.value.unwrap()).collect();
        assert_eq!(values, vec![&b"one"[..], b"", b"three"]);
        assert_eq!(recs[2].offset_delta, 2);
        assert!(recs.iter().all(|r| r.key.is_none()));
        let z = build_batch(5, 1000, &[b"one"], Compression::Zstd);
        assert!(uncompressed_records(&z).is_err());
    }

    #[test]
    fn flipped_payload_byte_fails_crc() {
        let mut b = build_batch(0, 1000, &[b"hello"], Compression::None);
        let last = b.len() - 2;
        b[last] ^= 0xff;
        assert!(matches!(
            check_batch(&b),
            Err(BatchError::CrcMismatch { .. })
        ));
    }
}
