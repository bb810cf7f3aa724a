//! Record batches: built once from a template and reused, and parsed on the consumer side.
//!
//! Produced values have a fixed layout so that the consumer can measure end-to-end
//! latency and check that every message arrived:
//! ```text
//! value = { send_time_us: u64 BE (µs since the Unix epoch, see `clock`),
//!           message_id: u64 BE (lane << 40 | sequence), filler: [u8] }
//! ```
//! Values shorter than 16 bytes carry no stamp and are not checked.

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use caudal_protocol::record_batch::{self, parse_header, HEADER_LEN, LOG_OVERHEAD};

/// Bytes at the start of each value that hold the send time and the message id.
pub const STAMP_LEN: usize = 16;

/// Compression codecs the load generator can produce (the consumer also reads gzip and
/// snappy batches written by other clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// No compression.
    None,
    /// LZ4 frame format (Kafka's LZ4).
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Codec {
    /// The codec id in the batch attributes.
    pub fn attribute(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    /// Parses `none|lz4|zstd`.
    pub fn parse(s: &str) -> Result<Codec> {
        Ok(match s {
            "none" => Codec::None,
            "lz4" => Codec::Lz4,
            "zstd" => Codec::Zstd,
            other => bail!("unknown compression {other:?} (none, lz4, zstd)"),
        })
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Reads a zigzag varint at `*pos`, advancing it. `None` past the end or on overlong input.
fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((z >> 1) as i64) ^ -((z & 1) as i64))
}

/// Deterministic filler that compresses about as well as text (so compressed runs are
/// neither trivially small nor incompressible).
pub fn filler(len: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize]
        })
        .collect()
}

/// An uncompressed records section with fixed-size values and null keys, plus where each
/// value starts, so stamps can be written into a copy without re-encoding.
#[derive(Debug, Clone)]
pub struct BatchTemplate {
    records: Vec<u8>,
    value_offsets: Vec<usize>,
    value_len: usize,
    codec: Codec,
}

impl BatchTemplate {
    /// A template of `count` records of `value_len` bytes each.
    pub fn new(count: usize, value_len: usize, codec: Codec, seed: u64) -> BatchTemplate {
        let value = filler(value_len, seed);
        let mut records = Vec::new();
        let mut value_offsets = Vec::with_capacity(count);
        for i in 0..count {
            let body_len = 1
                + varint_len(0)
                + varint_len(i as i64)
                + varint_len(-1)
                + varint_len(value_len as i64)
                + value_len
                + varint_len(0);
            put_varint(&mut records, body_len as i64);
            records.push(0); // attributes
            put_varint(&mut records, 0); // timestamp delta
            put_varint(&mut records, i as i64); // offset delta
            put_varint(&mut records, -1); // null key
            put_varint(&mut records, value_len as i64);
            value_offsets.push(records.len());
            records.extend_from_slice(&value);
            put_varint(&mut records, 0); // no headers
        }
        BatchTemplate {
            records,
            value_offsets,
            value_len,
            codec,
        }
    }

    /// Records in the batch.
    pub fn count(&self) -> usize {
        self.value_offsets.len()
    }

    /// Value bytes in the batch (the payload that throughput figures count).
    pub fn payload_bytes(&self) -> usize {
        self.count() * self.value_len
    }

    /// The batch as it is, with unstamped values: built once, sent many times.
    pub fn build(&self, timestamp_ms: i64) -> Result<Bytes> {
        assemble(&self.records, self.count(), self.codec, timestamp_ms)
    }

    /// A batch whose value `i` carries `(send_times_us[i], first_id + i)`.
    pub fn build_stamped(
        &self,
        timestamp_ms: i64,
        send_times_us: &[u64],
        first_id: u64,
    ) -> Result<Bytes> {
        let mut records = self.records.clone();
        if self.value_len >= STAMP_LEN {
            for (i, &at) in self.value_offsets.iter().enumerate() {
                let t = send_times_us.get(i).copied().unwrap_or(0);
                records[at..at + 8].copy_from_slice(&t.to_be_bytes());
                records[at + 8..at + 16].copy_from_slice(&(first_id + i as u64).to_be_bytes());
            }
        }
        assemble(&records, self.count(), self.codec, timestamp_ms)
    }
}

impl BatchTemplate {
    /// Stamps an uncompressed batch built by `build` in place (values at the same
    /// offsets) and recomputes its CRC: one pass instead of re-encoding.
    pub fn stamp_in_place(&self, batch: &mut [u8], send_times_us: &[u64], first_id: u64) -> bool {
        if self.codec != Codec::None || self.value_len < STAMP_LEN {
            return false;
        }
        let end = HEADER_LEN + self.records.len();
        if batch.len() < end {
            return false;
        }
        for (i, &at) in self.value_offsets.iter().enumerate() {
            let at = HEADER_LEN + at;
            let t = send_times_us.get(i).copied().unwrap_or(0);
            batch[at..at + 8].copy_from_slice(&t.to_be_bytes());
            batch[at + 8..at + 16].copy_from_slice(&(first_id + i as u64).to_be_bytes());
        }
        let crc = record_batch::compute_crc(&batch[..end]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        true
    }
}

fn compress(codec: Codec, records: &[u8]) -> Result<Vec<u8>> {
    Ok(match codec {
        Codec::None => records.to_vec(),
        Codec::Zstd => zstd::bulk::compress(records, 1).context("zstd compress")?,
        Codec::Lz4 => {
            let info =
                lz4_flex::frame::FrameInfo::new().block_size(lz4_flex::frame::BlockSize::Max64KB);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            enc.write_all(records)?;
            enc.finish().context("lz4 compress")?
        }
    })
}

/// Wraps a records section in a v2 batch header (base offset 0, no producer id) with
/// its CRC.
fn assemble(records: &[u8], count: usize, codec: Codec, timestamp_ms: i64) -> Result<Bytes> {
    let payload = compress(codec, records)?;
    let mut b = Vec::with_capacity(HEADER_LEN + payload.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset: the broker assigns it
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + payload.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&codec.attribute().to_be_bytes());
    b.extend_from_slice(&(count as i32 - 1).to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&(count as i32).to_be_bytes());
    b.extend_from_slice(&payload);
    let crc = record_batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(b))
}

/// What a consumer saw in one fetched records blob.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Records at or after the fetch offset.
    pub records: u64,
    /// Their value bytes.
    pub value_bytes: u64,
    /// Batch bytes on the wire (compressed size).
    pub wire_bytes: u64,
    /// Offset to fetch next.
    pub next_offset: i64,
}

fn decompress(codec: i16, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match codec {
        1 => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .context("gzip")?;
        }
        2 => out = snappy_xerial(data)?,
        3 => {
            lz4_flex::frame::FrameDecoder::new(data)
                .read_to_end(&mut out)
                .context("lz4")?;
        }
        4 => {
            zstd::stream::read::Decoder::new(data)
                .context("zstd")?
                .read_to_end(&mut out)
                .context("zstd")?;
        }
        other => bail!("unknown compression codec {other}"),
    }
    Ok(out)
}

/// Snappy as the Java client writes it (xerial framing), or one raw block.
fn snappy_xerial(data: &[u8]) -> Result<Vec<u8>> {
    const MAGIC: &[u8] = b"\x82SNAPPY\x00";
    let mut dec = snap::raw::Decoder::new();
    if !data.starts_with(MAGIC) {
        return dec.decompress_vec(data).context("snappy");
    }
    let mut out = Vec::new();
    let mut pos = 16;
    while pos + 4 <= data.len() {
        let len = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        pos += 4;
        let end = pos
            .checked_add(len as usize)
            .filter(|&e| e <= data.len())
            .context("snappy block past the end")?;
        out.extend_from_slice(&dec.decompress_vec(&data[pos..end]).context("snappy")?);
        pos = end;
    }
    Ok(out)
}

/// Walks every batch in `blob` (a Fetch response's records), decompressing as needed,
/// and calls `on_value(offset, value)` for each record at or after `fetch_offset`. A
/// partial batch at the end (the broker cut it at the size limit) is left for the next
/// fetch.
pub fn walk_records(
    blob: &[u8],
    fetch_offset: i64,
    mut on_value: impl FnMut(i64, &[u8]),
) -> Result<Consumed> {
    let mut seen = Consumed {
        next_offset: fetch_offset,
        ..Default::default()
    };
    let mut pos = 0;
    while pos < blob.len() {
        let rest = &blob[pos..];
        let header = match parse_header(rest) {
            Ok(h) => h,
            Err(record_batch::BatchError::Truncated { .. }) => break,
            Err(e) => return Err(e.into()),
        };
        let batch = &rest[..header.size];
        pos += header.size;
        let last = header.last_offset();
        if last < seen.next_offset {
            continue;
        }
        seen.wire_bytes += header.size as u64;
        if !header.is_control() {
            let codec = header.attributes & 0x07;
            let owned;
            let records = if codec == 0 {
                &batch[HEADER_LEN..]
            } else {
                owned = decompress(codec, &batch[HEADER_LEN..])?;
                &owned[..]
            };
            let from = seen.next_offset;
            walk_uncompressed(records, header.base_offset, from, &mut seen, &mut on_value)?;
        }
        seen.next_offset = seen.next_offset.max(last + 1);
    }
    Ok(seen)
}

fn walk_uncompressed(
    records: &[u8],
    base_offset: i64,
    from: i64,
    seen: &mut Consumed,
    on_value: &mut dyn FnMut(i64, &[u8]),
) -> Result<()> {
    let mut pos = 0;
    while pos < records.len() {
        let len = get_varint(records, &mut pos).context("record length")?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= records.len())
            .context("record past the end of its batch")?;
        let rec = &records[pos..end];
        pos = end;
        let mut p = 1; // attributes
        get_varint(rec, &mut p).context("timestamp delta")?;
        let delta = get_varint(rec, &mut p).context("offset delta")?;
        let key_len = get_varint(rec, &mut p).context("key length")?;
        if key_len > 0 {
            p = p
                .checked_add(key_len as usize)
                .filter(|&e| e <= rec.len())
                .context("key past the end")?;
        }
        let value_len = get_varint(rec, &mut p).context("value length")?;
        let value = if value_len > 0 {
            let e = p
                .checked_add(value_len as usize)
                .filter(|&e| e <= rec.len())
                .context("value past the end")?;
            &rec[p..e]
        } else {
            &[][..]
        };
        let offset = base_offset + delta;
        if offset >= from {
            seen.records += 1;
            seen.value_bytes += value.len() as u64;
            on_value(offset, value);
        }
    }
    Ok(())
}

/// Reads the stamp of a produced value: `(send_time_us, message_id)`.
pub fn read_stamp(value: &[u8]) -> Option<(u64, u64)> {
    if value.len() < STAMP_LEN {
        return None;
    }
    let t = u64::from_be_bytes(value[0..8].try_into().ok()?);
    let id = u64::from_be_bytes(value[8..16].try_into().ok()?);
    Some((t, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use caudal_protocol::record_batch::check_batch;

    #[test]
    fn template_batches_pass_the_broker_checks() {
        for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
            let t = BatchTemplate::new(10, 100, codec, 1);
            let b = t.build(1_700_000_000_000).unwrap();
            let h = caudal_protocol::record_batch::validate_produced_batch(&b).unwrap();
            assert_eq!(h.records_count, 10);
            assert_eq!(t.payload_bytes(), 1000);
        }
    }

    #[test]
    fn stamped_values_come_back_from_the_parser() {
        for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
            let t = BatchTemplate::new(5, 64, codec, 2);
            let times = [10, 20, 30, 40, 50];
            let mut a = t.build_stamped(0, &times, 100).unwrap().to_vec();
            check_batch(&a).unwrap();
            // A second batch at offset 5 behind the first, as a fetch returns them.
            let mut b = t.build_stamped(0, &times, 200).unwrap().to_vec();
            b[0..8].copy_from_slice(&5i64.to_be_bytes());
            a.extend_from_slice(&b);
            let mut got = Vec::new();
            let seen = walk_records(&a, 3, |off, v| got.push((off, read_stamp(v)))).unwrap();
            assert_eq!(seen.records, 7);
            assert_eq!(seen.value_bytes, 7 * 64);
            assert_eq!(seen.next_offset, 10);
            assert_eq!(got[0], (3, Some((40, 103))));
            assert_eq!(got[6], (9, Some((50, 204))));
        }
    }

    #[test]
    fn stamping_in_place_matches_a_fresh_stamped_build() {
        let t = BatchTemplate::new(4, 40, Codec::None, 5);
        let times = [1, 2, 3, 4];
        let mut b = t.build(7).unwrap().to_vec();
        b.extend_from_slice(&[0, 0, 0]); // a request trailer after the batch
        assert!(t.stamp_in_place(&mut b, &times, 9));
        let want = t.build_stamped(7, &times, 9).unwrap();
        assert_eq!(&b[..want.len()], &want[..]);
        check_batch(&b).unwrap();
        assert!(!BatchTemplate::new(4, 40, Codec::Lz4, 5).stamp_in_place(&mut b, &times, 9));
    }

    #[test]
    fn a_cut_last_batch_is_left_for_the_next_fetch() {
        let t = BatchTemplate::new(4, 32, Codec::None, 3);
        let mut blob = t.build(0).unwrap().to_vec();
        let second = t.build(0).unwrap();
        let mut second = second.to_vec();
        second[0..8].copy_from_slice(&4i64.to_be_bytes());
        blob.extend_from_slice(&second[..second.len() - 10]);
        let seen = walk_records(&blob, 0, |_, _| {}).unwrap();
        assert_eq!(seen.records, 4);
        assert_eq!(seen.next_offset, 4);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let t = BatchTemplate::new(3, 32, Codec::None, 4);
        let mut b = t.build(0).unwrap().to_vec();
        let n = b.len();
        b[HEADER_LEN] = 0x7f; // absurd first record length
        assert!(walk_records(&b, 0, |_, _| {}).is_err());
        b[16] = 1; // magic 1
        assert!(walk_records(&b[..n], 0, |_, _| {}).is_err());
    }
}
