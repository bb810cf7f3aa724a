//! What each fuzz target does with one input, shared by the libFuzzer binaries in
//! `fuzz_targets/` and by the seeded pass in the root crate's `tests/fuzz_seeded.rs`
//! (which includes this file with `#[path]`), so both run exactly the same code.
//!
//! Each function takes arbitrary bytes and must never panic; the asserts state the
//! properties the parsers promise (a value that parses re-encodes to the same bytes,
//! recovery is idempotent, a validated batch lies inside the buffer, ...).
//!
//! Input layouts (the seeds under `fuzz/seeds/<target>/` follow them):
//! - `frame`: byte 0 even: bytes 1..5 are a declared frame size (i32 BE) and the rest
//!   is a frame as it follows the size on the wire. Byte 0 odd: bytes 1..5 are an api
//!   key and version (i16 BE each, folded into `SUPPORTED`), and the rest is a request
//!   body that is put behind a valid header for that key and version.
//! - `record_batch`: one or more record batches, as a producer sends them.
//! - `disk_parsers`: byte 0 (mod 11) picks the file, the rest is its content: 0 offset
//!   index (bytes 1..9: segment length, u64 BE), 1 time index, 2 producer-state
//!   snapshot, 3 snapshot body whose CRC is appended here, 4 metadata log, 5 metadata
//!   log whose record CRCs are recomputed here, 6 producer-id block file, 7 group
//!   offsets record value, 8 a sealed segment's raft-index table, 9 a raft group's
//!   `raft.state`, 10 a raft record of the shard journal. Each in any version the broker reads (the headerless
//!   version 1 of releases up to 617d542, or a versioned file of `caudal::codec`).
//! - `raft_message`: one raft message in Caudal's framing.
//! - `peer_frame`: byte 0 even: the rest is the body of a hello or a hello reply; odd:
//!   the rest is the body of a raft or control frame, decoded twice on one connection
//!   (the second time the beats the first remembered are in play).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use caudal::codec::{magic, HEADER_LEN as FILE_HEADER_LEN};
use caudal::dispatch::{decode_only, SUPPORTED};
use caudal::group::offsets::OffsetRecord;
use caudal::log::offset_index::OffsetIndex;
use caudal::log::raft_index::RaftIndex;
use caudal::log::recovery::IndexBuilder;
use caudal::log::time_index::TimeIndex;
use caudal::metadata::store::{MetaStore, FILE_NAME as METADATA_FILE};
use caudal::protocol::frame::{check_frame_size, peek_header, MIN_REQUEST};
use caudal::protocol::record_batch::{
    check_batch, compute_crc, parse_header, peek_batch_size, uncompressed_records,
    validate_produced_batch, BatchHeader, HEADER_LEN,
};
use caudal::replica::producer_state::{ProducerStateTable, SequenceCheck};
use caudal::replica::raft_state::{RaftRecord, SavedState};
use caudal::shard::producer_ids::{
    decode_block_end, encode_block_end, VERSION as PRODUCER_IDS_VERSION,
};

/// `socket.request.max.bytes` as the broker uses it by default.
pub const MAX_REQUEST: usize = 100 << 20;

/// Index interval used when a run of batches is scanned like a segment; small, so that
/// short inputs already produce index entries.
const INDEX_INTERVAL: u64 = 64;

/// The raft message decoder (`caudal::replica::raft_message`): never panics, and what
/// it accepts encodes back to the same bytes (the layout has one encoding per message).
pub fn raft_message(data: &[u8]) {
    if let Ok(m) = caudal::replica::raft_message::decode(data) {
        assert_eq!(
            caudal::replica::raft_message::encode(&m),
            data,
            "a decoded raft message re-encodes to its bytes"
        );
    }
}

/// The inter-node frames (`caudal::cluster::wire`): never panic; a hello that decodes
/// encodes back to the same body, and a raft frame's messages are between the nodes of
/// the connection.
pub fn peer_frame(data: &[u8]) {
    use caudal::cluster::wire::{
        decode_frame, encode_control_into, BeatCache, Frame, Hello, HelloReply, FRAME_HEADER,
    };
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(hello) = Hello::decode(rest) {
            assert_eq!(&hello.encode()[FRAME_HEADER..], rest, "a hello re-encodes");
        }
        if let Ok(reply) = HelloReply::decode(rest) {
            assert_eq!(&reply.encode()[FRAME_HEADER..], rest, "a reply re-encodes");
        }
    } else {
        let mut beats = BeatCache::default();
        let body = bytes::Bytes::copy_from_slice(rest);
        for _ in 0..2 {
            match decode_frame(1, 2, &body, &mut beats) {
                Ok(Frame::Raft(messages)) => {
                    for (_, m) in messages {
                        assert_eq!((m.from, m.to), (1, 2), "messages of this connection only");
                    }
                }
                Ok(Frame::Control(c)) => {
                    let again = encode_control_into(Vec::new(), &c);
                    assert_eq!(&again[FRAME_HEADER..], rest, "a control message re-encodes");
                }
                Err(_) => {}
            }
        }
    }
}

/// The frame reader and every request decoder.
pub fn frame(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let Some((size, frame)) = rest.split_first_chunk::<4>() else {
            return;
        };
        check_size(i32::from_be_bytes(*size), frame.len());
        decode_frame(frame);
    } else {
        let Some((selector, body)) = rest.split_first_chunk::<4>() else {
            return;
        };
        let key = i16::from_be_bytes([selector[0], selector[1]]);
        let version = i16::from_be_bytes([selector[2], selector[3]]);
        decode_frame(&with_header(key, version, body));
    }
}

fn check_size(declared: i32, present: usize) {
    for max in [MAX_REQUEST, present] {
        if let Ok(size) = check_frame_size(declared, max) {
            assert!(
                size >= MIN_REQUEST && size <= max,
                "size {size} passed, max {max}"
            );
            assert_eq!(i64::try_from(size).ok(), Some(i64::from(declared)));
        }
    }
}

fn decode_frame(frame: &[u8]) {
    let prefix = peek_header(frame);
    if let Ok(key) = decode_only(Bytes::copy_from_slice(frame)) {
        let prefix = prefix.expect("a frame that decodes has a header");
        assert_eq!(key as i16, prefix.api_key);
        let spec = SUPPORTED
            .iter()
            .find(|s| s.key == key)
            .expect("decoded key is supported");
        assert!((spec.min..=spec.max).contains(&prefix.api_version));
    }
}

/// A frame (without the size) holding a valid request header for the supported key and
/// version that `key` and `version` fold to, followed by `body`.
pub fn with_header(key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let spec = SUPPORTED
        .iter()
        .find(|s| s.key as i16 == key)
        .unwrap_or(&SUPPORTED[usize::from(key.unsigned_abs()) % SUPPORTED.len()]);
    let version = if (spec.min..=spec.max).contains(&version) {
        version
    } else {
        let span = (spec.max - spec.min + 1) as u16;
        spec.min + (version as u16 % span) as i16
    };
    let mut out = BytesMut::with_capacity(body.len() + 32);
    out.put_i16(spec.key as i16);
    out.put_i16(version);
    out.put_i32(0x0c0ffee);
    out.put_i16(11);
    out.put_slice(b"caudal-fuzz");
    if spec.key.request_header_version(version) >= 2 {
        out.put_u8(0); // no tagged fields
    }
    out.put_slice(body);
    out.to_vec()
}

/// The record-batch validator, on the input as it is and with its CRCs made valid, and
/// the two walks over a run of batches: the produce path's and recovery's.
pub fn record_batch(data: &[u8]) {
    one_batch(data);
    produce_run(data);
    log_scan(data);
    let mut fixed = data.to_vec();
    if fix_batch_crcs(&mut fixed) {
        one_batch(&fixed);
        produce_run(&fixed);
        log_scan(&fixed);
    }
}

fn one_batch(b: &[u8]) {
    let parsed = parse_header(b);
    let checked = check_batch(b);
    let valid = validate_produced_batch(b);
    if let Ok(h) = &valid {
        assert_eq!(checked.as_ref().ok(), Some(h));
        assert!(h.compression().is_some());
        assert_eq!(i64::from(h.records_count), h.offset_count());
    }
    if let Ok(h) = &checked {
        assert_eq!(parsed.as_ref().ok(), Some(h));
    }
    if let Ok(h) = &parsed {
        assert!(h.size >= HEADER_LEN && h.size <= b.len(), "size {}", h.size);
        assert_eq!(peek_batch_size(b), Some(h.size));
    }
    if let Ok(records) = uncompressed_records(b) {
        let h = parsed.expect("records read only from a parsed batch");
        assert_eq!(
            i64::try_from(records.len()).ok(),
            Some(i64::from(h.records_count))
        );
        let payload: usize = records
            .iter()
            .map(|r| r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len))
            .sum();
        assert!(payload <= h.size - HEADER_LEN);
    }
}

/// Walks batches as `replica::Partition` validates them on produce, then applies the
/// idempotent-producer checks to them; the resulting state must survive a snapshot.
fn produce_run(data: &[u8]) {
    let mut rest = data;
    let mut table = ProducerStateTable::default();
    let mut next: i64 = 0;
    while let Ok(h) = validate_produced_batch(rest) {
        rest = rest
            .get(h.size..)
            .expect("a validated batch lies in the buffer");
        if let Ok(SequenceCheck::Append) = table.check(&h, false) {
            table.record(&h, next);
            next += h.offset_count();
        }
    }
    let snapshot = table.to_bytes();
    assert_eq!(ProducerStateTable::from_bytes(&snapshot), Some(table));
}

/// Walks batches as recovery scans a segment (contiguous offsets, valid CRCs) and builds
/// its indexes; the files it would write must be accepted on the next start.
fn log_scan(data: &[u8]) {
    let base = parse_header(data).map_or(0, |h| h.base_offset);
    let mut next = base;
    let mut pos = 0usize;
    let mut builder = IndexBuilder::new(INDEX_INTERVAL);
    let mut offsets = OffsetIndex::default();
    let mut times = TimeIndex::default();
    let mut producers: Vec<BatchHeader> = Vec::new();
    while let Some(window) = data.get(pos..) {
        let Some(batch) = peek_batch_size(window).and_then(|size| window.get(..size)) else {
            break;
        };
        let Ok(h) = check_batch(batch) else {
            break;
        };
        if h.base_offset != next || h.last_offset_delta < 0 {
            break;
        }
        let (Ok(rel), Ok(position)) = (u32::try_from(next - base), u32::try_from(pos)) else {
            break;
        };
        let Some(after) = next.checked_add(h.offset_count()) else {
            break;
        };
        builder.on_batch(
            &mut offsets,
            &mut times,
            rel,
            position,
            h.size as u64,
            h.max_timestamp,
        );
        if h.producer_id >= 0 {
            producers.push(h);
        }
        next = after;
        pos += h.size;
    }
    assert_eq!(
        OffsetIndex::from_bytes(&offsets.to_bytes(), pos as u64),
        Some(offsets)
    );
    assert_eq!(TimeIndex::from_bytes(&times.to_bytes()), Some(times));
    let mut table = ProducerStateTable::default();
    for h in &producers {
        table.record(h, h.base_offset);
    }
    assert_eq!(
        ProducerStateTable::from_bytes(&table.to_bytes()),
        Some(table)
    );
}

/// Rewrites the CRC of every batch whose length field fits the buffer, so that
/// mutations behind the CRC reach the checks after it. False if nothing was fixed.
pub fn fix_batch_crcs(data: &mut [u8]) -> bool {
    let mut pos = 0usize;
    let mut fixed = false;
    while let Some(window) = data.get_mut(pos..) {
        let Some(size) = peek_batch_size(window).filter(|&s| s >= HEADER_LEN) else {
            break;
        };
        let Some(batch) = window.get_mut(..size) else {
            break;
        };
        let crc = compute_crc(batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        fixed = true;
        pos += size;
    }
    fixed
}

/// The parsers of files the broker reads back at start.
pub fn disk_parsers(data: &[u8]) {
    let Some((&tag, rest)) = data.split_first() else {
        return;
    };
    match tag % 11 {
        0 => {
            let Some((len, index)) = rest.split_first_chunk::<8>() else {
                return;
            };
            let segment_len = u64::from_be_bytes(*len);
            if let Some(i) = OffsetIndex::from_bytes(index, segment_len) {
                // Whatever version was read, the current one is written and reads back.
                let written = i.to_bytes();
                assert_eq!(
                    OffsetIndex::from_bytes(&written, segment_len),
                    Some(i.clone())
                );
                if index.starts_with(&magic::OFFSET_INDEX) {
                    assert_eq!(written, index);
                }
                let probe = index
                    .first_chunk::<4>()
                    .map_or(0, |b| u32::from_be_bytes(*b));
                assert!(i.lookup(probe) == 0 || u64::from(i.lookup(probe)) < segment_len);
            }
        }
        1 => {
            if let Some(t) = TimeIndex::from_bytes(rest) {
                let written = t.to_bytes();
                assert_eq!(TimeIndex::from_bytes(&written), Some(t.clone()));
                if rest.starts_with(&magic::TIME_INDEX) {
                    assert_eq!(written, rest);
                }
                let _ = t.lookup(t.last_timestamp().unwrap_or(0));
            }
        }
        2 => producer_snapshot(rest),
        3 => {
            let mut with_crc = rest.to_vec();
            with_crc.extend_from_slice(&crc32c::crc32c(rest).to_be_bytes());
            producer_snapshot(&with_crc);
        }
        4 => metadata_log(rest),
        5 => {
            let mut fixed = rest.to_vec();
            fix_metadata_crcs(&mut fixed);
            metadata_log(&fixed);
        }
        6 => {
            if let Ok((end, _)) = decode_block_end(rest) {
                let written = encode_block_end(end);
                assert_eq!(decode_block_end(&written), Ok((end, PRODUCER_IDS_VERSION)));
                if rest.starts_with(&magic::PRODUCER_IDS) {
                    assert_eq!(written, rest);
                }
            }
        }
        8 => {
            // `<base>.raftindex`: a sealed segment's raft-index table.
            if let Ok(t) = RaftIndex::from_bytes(rest) {
                let written = t.to_bytes();
                assert_eq!(RaftIndex::from_bytes(&written), Ok(t));
                assert_eq!(written, rest);
            }
        }
        9 => {
            // `raft.state`: a raft group's HardState, ConfState and table tail.
            if let Ok(s) = SavedState::decode(rest) {
                let written = s.encode();
                assert_eq!(SavedState::decode(&written), Ok(s));
                assert_eq!(written, rest);
            }
        }
        10 => {
            // A raft record of the shard journal.
            if let Ok(r) = RaftRecord::decode(rest) {
                let written = r.encode();
                assert_eq!(RaftRecord::decode(&written), Ok(r));
                assert_eq!(written, rest);
            }
        }
        _ => {
            if let Ok(r) = OffsetRecord::decode(rest) {
                let written = r.encode();
                assert_eq!(OffsetRecord::decode(&written), Ok(r));
                if rest.starts_with(&magic::GROUP_OFFSETS) {
                    assert_eq!(written, rest);
                }
            }
        }
    }
}

fn producer_snapshot(data: &[u8]) {
    if let Some(t) = ProducerStateTable::from_bytes(data) {
        assert_eq!(ProducerStateTable::from_bytes(&t.to_bytes()), Some(t));
    }
}

/// Replays `data` as `meta/metadata.log`. A versioned log keeps a prefix of itself; a
/// log of a newer version is refused and left as it was; any other is read as version 1
/// and rewritten versioned. Either way a second start finds exactly what the first one
/// kept.
fn metadata_log(data: &[u8]) {
    let dir = scratch_dir();
    let path = dir.join(METADATA_FILE);
    std::fs::write(&path, data).expect("write scratch metadata log");
    let (store, first) = match MetaStore::open(dir, 0) {
        Ok(opened) => opened,
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            assert!(data.starts_with(&magic::METADATA_LOG), "{e}");
            let kept = std::fs::read(&path).expect("read scratch metadata log");
            assert_eq!(kept, data, "a refused log was changed");
            return;
        }
    };
    drop(store);
    let kept = std::fs::read(&path).expect("read scratch metadata log");
    let header = caudal::metadata::store::HEADER;
    let mut current = header.magic.to_vec();
    current.extend_from_slice(&header.version.to_be_bytes());
    if data.starts_with(&current) {
        assert!(
            data.starts_with(&kept),
            "recovery kept bytes that were not in the file"
        );
    } else if data.starts_with(&magic::METADATA_LOG) {
        // An older version is rewritten in the current one, records unchanged.
        assert!(kept.starts_with(&current), "not upgraded");
    } else {
        assert!(kept.starts_with(&magic::METADATA_LOG), "not upgraded");
    }
    let (store, second) = MetaStore::open(dir, 0).expect("reopen scratch metadata log");
    drop(store);
    assert_eq!(first, second);
    assert_eq!(std::fs::read(&path).expect("reread"), kept);
}

/// Rewrites each record's CRC in a metadata log (a versioned file header, if any, then
/// `{ len: u32, crc: u32, payload }*`).
pub fn fix_metadata_crcs(data: &mut [u8]) {
    let mut pos = if data.starts_with(&magic::METADATA_LOG) {
        FILE_HEADER_LEN
    } else {
        0
    };
    while let Some(header) = data.get(pos..pos.saturating_add(8)) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let start = pos + 8;
        let Some(end) = start.checked_add(len).filter(|&e| e <= data.len()) else {
            break;
        };
        let crc = crc32c::crc32c(&data[start..end]);
        data[pos + 4..start].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

/// A directory for files the parsers read, on tmpfs when there is one so that the
/// fsyncs of recovery cost nothing; one per process.
pub fn scratch_dir() -> &'static Path {
    SCRATCH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = root.join(format!("caudal-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    })
}

/// Removes this process's scratch directory, if it made one.
pub fn remove_scratch_dir() {
    if let Some(dir) = SCRATCH.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
