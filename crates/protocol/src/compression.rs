//! Decompression of record batches, for the few places off the data path that must look
//! inside compressed records (ListOffsets by timestamp). Produce and Fetch never call it.
//!
//! Kafka's codecs: gzip; snappy in the xerial framing the Java client writes (and raw
//! snappy, which librdkafka may write); LZ4 frame format; zstd. Output is capped so a
//! small hostile batch cannot expand into unbounded memory.

use std::io::Read;

use thiserror::Error;

/// Why records did not decompress.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DecompressError {
    /// The output would exceed the caller's cap.
    #[error("records decompress past the size limit")]
    TooLarge,
    /// The codec rejected the input.
    #[error("compressed records do not decompress")]
    Corrupt,
}

/// Compression codec named by the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed records.
    None,
    /// gzip.
    Gzip,
    /// Snappy (xerial framing).
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The codec's value in the batch attributes' low three bits.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// Compresses a records section with `codec` (the load generator, tests and benchmarks
/// build batches; the broker never compresses). A codec failure gives an empty payload.
pub fn compress(codec: Compression, records: &[u8]) -> Vec<u8> {
    match codec {
        Compression::None => records.to_vec(),
        Compression::Zstd => zstd::bulk::compress(records, 1).unwrap_or_default(),
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            std::io::Write::write_all(&mut enc, records).ok();
            enc.finish().unwrap_or_default()
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut enc, records).ok();
            enc.finish().unwrap_or_default()
        }
        Compression::Snappy => snap::raw::Encoder::new()
            .compress_vec(records)
            .unwrap_or_default(),
    }
}

const XERIAL_MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

fn too_big() -> DecompressError {
    DecompressError::TooLarge
}

fn corrupt() -> DecompressError {
    DecompressError::Corrupt
}

/// Reads at most `max` bytes from a decoder; more is an error.
fn read_capped(r: impl Read, max: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    r.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| corrupt())?;
    if out.len() > max {
        return Err(too_big());
    }
    Ok(out)
}

fn snappy_raw(block: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
    let len = snap::raw::decompress_len(block).map_err(|_| corrupt())?;
    if out.len() + len > max {
        return Err(too_big());
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|_| corrupt())?;
    Ok(())
}

/// Decompresses a records section compressed with `codec`, to at most `max` bytes.
pub fn decompress(codec: Compression, data: &[u8], max: usize) -> Result<Vec<u8>, DecompressError> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => read_capped(flate2::read::MultiGzDecoder::new(data), max),
        Compression::Lz4 => read_capped(lz4_flex::frame::FrameDecoder::new(data), max),
        Compression::Zstd => read_capped(
            zstd::stream::read::Decoder::new(data).map_err(|_| corrupt())?,
            max,
        ),
        Compression::Snappy => {
            let mut out = Vec::new();
            match data.strip_prefix(XERIAL_MAGIC) {
                Some(rest) => {
                    // 4-byte version and 4-byte compatible version, then length-prefixed blocks.
                    let mut rest = rest.get(8..).ok_or_else(corrupt)?;
                    while !rest.is_empty() {
                        let (len, tail) = rest.split_at_checked(4).ok_or_else(corrupt)?;
                        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                        let (block, tail) = tail.split_at_checked(len).ok_or_else(corrupt)?;
                        snappy_raw(block, max, &mut out)?;
                        rest = tail;
                    }
                }
                None => snappy_raw(data, max, &mut out)?,
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decompression_bomb_is_refused() {
        let big = vec![0u8; 1 << 20];
        let z = zstd::bulk::compress(&big, 1).unwrap();
        assert!(decompress(Compression::Zstd, &z, 1000).is_err());
        assert_eq!(
            decompress(Compression::Zstd, &z, 2 << 20).unwrap().len(),
            1 << 20
        );
    }

    #[test]
    fn xerial_framed_snappy_is_read() {
        let raw = b"hello hello hello";
        let block = snap::raw::Encoder::new().compress_vec(raw).unwrap();
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1u32.to_be_bytes());
        framed.extend_from_slice(&1u32.to_be_bytes());
        framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
        framed.extend_from_slice(&block);
        assert_eq!(decompress(Compression::Snappy, &framed, 100).unwrap(), raw);
    }
}
