//! Decompression of record batches, for the few places off the data path that must look
//! inside compressed records (ListOffsets by timestamp). Produce and Fetch never call it.
//!
//! Kafka's codecs: gzip; snappy in the xerial framing the Java client writes (and raw
//! snappy, which librdkafka may write); LZ4 frame format; zstd. Output is capped so a
//! small hostile batch cannot expand into unbounded memory.

use std::io::Read;

use super::record_batch::{BatchError, Compression};

const XERIAL_MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

fn too_big() -> BatchError {
    BatchError::InvalidHeader("records decompress past the size limit")
}

fn corrupt() -> BatchError {
    BatchError::InvalidHeader("compressed records do not decompress")
}

/// Reads at most `max` bytes from a decoder; more is an error.
fn read_capped(r: impl Read, max: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    r.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| corrupt())?;
    if out.len() > max {
        return Err(too_big());
    }
    Ok(out)
}

fn snappy_raw(block: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), BatchError> {
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
pub fn decompress(codec: Compression, data: &[u8], max: usize) -> Result<Vec<u8>, BatchError> {
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
    use crate::protocol::record_batch::{build_batch, record_timestamps};

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
