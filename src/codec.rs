//! The one codec of Caudal's own on-disk files (not Kafka's record batches, which
//! `caudal-protocol` owns): a [`Writer`], a bounds-checked [`Reader`], the file header
//! every format starts with, and CRC32C-checked payloads.
//!
//! Every file format Caudal defines starts with a [`FileHeader`]: a 4-byte magic naming
//! the format (the registry is [`magic`]: one place, so two formats can never share
//! one) and a big-endian u16 version. A reader accepts the versions it knows and refuses
//! newer ones with [`CodecError::UnsupportedVersion`] rather than misreading them. The
//! formats written before headers existed count as version 1 of each; their readers
//! recognise them by the missing magic (see each format's module).
//!
//! All integers are big-endian. `str16` is a u16 byte length and UTF-8 bytes;
//! `nullable str16` uses the length 0xffff for "none"; `bytes32` is a u32 length and the
//! bytes; a uuid is its 16 bytes. A checked payload is `{ length: u32, crc32c: u32 (of
//! the payload), payload }`.
//!
//! Decoding never panics and never allocates more than the input could hold: a count
//! read from the input is checked against the bytes left before anything is reserved.
//! This module depends on nothing else in the crate.

use thiserror::Error;
use uuid::Uuid;

/// The magics of Caudal's file formats, each distinct.
pub mod magic {
    /// `meta/metadata.log`: topics, their partitions' replicas, leaders and configs.
    pub const METADATA_LOG: [u8; 4] = *b"CDMT";
    /// `meta/producer-ids-<shard>`: the end of a shard's last reserved producer-id block.
    pub const PRODUCER_IDS: [u8; 4] = *b"CDPI";
    /// `<segment>.index`: a segment's sparse offset index.
    pub const OFFSET_INDEX: [u8; 4] = *b"CDOI";
    /// `<segment>.timeindex`: a segment's time index.
    pub const TIME_INDEX: [u8; 4] = *b"CDTI";
    /// The value of each record of `__offsets-shard-<k>`: a group offsets change.
    pub const GROUP_OFFSETS: [u8; 4] = *b"CDGO";
    /// A partition's `clean-shutdown` marker (`log::clean_marker`).
    pub const CLEAN_MARKER: [u8; 4] = *b"CCLN";
    /// A partition's `leader-epoch.checkpoint` (`log::epochs`).
    pub const LEADER_EPOCHS: [u8; 4] = *b"CEPO";
    /// `<segment>.snapshot` producer-state snapshots, also the replica state inside a
    /// clean-shutdown marker (`replica::producer_state`).
    pub const PRODUCER_SNAPSHOT: [u8; 4] = *b"CDPS";
    /// Each record of a shard's `__journal-shard-<k>/<generation>.journal` (`log::journal`).
    pub const JOURNAL: [u8; 4] = *b"CDJL";
    /// `<segment>.raftindex`: a sealed segment's raft index → (term, offset) table
    /// (`log::raft_index`).
    pub const RAFT_INDEX: [u8; 4] = *b"CRIX";
    /// A partition's `raft.state`: its raft group's table, HardState and ConfState
    /// (`replica::raft_log`).
    pub const RAFT_STATE: [u8; 4] = *b"CRST";
    /// The first frame on an inter-node connection (`cluster::wire`): not a file, but
    /// registered here so no format can be mistaken for it.
    pub const PEER_HELLO: [u8; 4] = *b"CDPH";
    /// `meta/node.identity`: the node and cluster a data directory belongs to, and its
    /// disk identity (`metadata::node_identity`).
    pub const NODE_IDENTITY: [u8; 4] = *b"CDNI";
    /// `meta/peer.disks`: the disk identity of each peer when first heard from
    /// (`metadata::peer_disks`).
    pub const PEER_DISKS: [u8; 4] = *b"CDPD";

    /// A partition's `raft.snapshot`: where its raft log was cut or a leader's snapshot
    /// was installed (`replica::raft_snapshot`); also the data of a snapshot message.
    pub const RAFT_SNAPSHOT: [u8; 4] = *b"CRSN";

    /// Every magic above, for the check that they are distinct.
    pub const ALL: [[u8; 4]; 15] = [
        RAFT_SNAPSHOT,
        PEER_DISKS,
        PEER_HELLO,
        NODE_IDENTITY,
        JOURNAL,
        RAFT_STATE,
        RAFT_INDEX,
        METADATA_LOG,
        PRODUCER_IDS,
        OFFSET_INDEX,
        TIME_INDEX,
        GROUP_OFFSETS,
        CLEAN_MARKER,
        LEADER_EPOCHS,
        PRODUCER_SNAPSHOT,
    ];
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// The input ends before a field does.
    #[error("truncated: {needed} bytes needed at byte {at}, {left} left")]
    Truncated {
        /// Position of the field.
        at: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        left: usize,
    },
    /// The file does not start with the magic of the expected format.
    #[error("not a {expected} file (magic {found:02x?})", expected = String::from_utf8_lossy(expected))]
    BadMagic {
        /// Magic expected.
        expected: [u8; 4],
        /// Bytes found instead.
        found: Vec<u8>,
    },
    /// The format version is one this build cannot read (written by a newer release).
    #[error("{format} version {found} is not supported (this build reads {min}..={max})", format = String::from_utf8_lossy(magic))]
    UnsupportedVersion {
        /// Magic of the format.
        magic: [u8; 4],
        /// Version found.
        found: u16,
        /// Oldest version this build reads.
        min: u16,
        /// Newest version this build reads.
        max: u16,
    },
    /// A checked payload's CRC32C does not match its bytes.
    #[error("checksum mismatch at byte {at}")]
    Checksum {
        /// Position of the checked payload's length field.
        at: usize,
    },
    /// A string is not UTF-8.
    #[error("invalid UTF-8 in string at byte {at}")]
    Utf8 {
        /// Position of the string's bytes.
        at: usize,
    },
    /// Bytes are left after the last field.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// A field holds a value its format does not allow.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Result of a decode.
pub type CodecResult<T> = Result<T, CodecError>;

/// Builds an encoded buffer. Writing cannot fail; fields that are too long for their
/// length prefix are cut (see each method).
#[derive(Debug, Clone, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

/// Length of the longest `str16`.
pub const STR16_MAX: usize = u16::MAX as usize;
/// Length of the longest `nullable str16` (0xffff means none).
pub const NULLABLE_STR16_MAX: usize = u16::MAX as usize - 1;
/// The `nullable str16` length that means none.
const NULL_LEN: u16 = u16::MAX;

/// `s` cut to at most `max` bytes on a character boundary, so it stays UTF-8.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Writer {
    /// An empty buffer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// A writer that appends to `buf` (what [`Writer::finish`] then returns).
    pub fn appending(buf: Vec<u8>) -> Writer {
        Writer { buf }
    }

    /// A buffer that starts with a file header.
    pub fn with_header(header: FileHeader) -> Writer {
        let mut w = Writer::new();
        w.put_header(header);
        w
    }

    /// Appends a file header.
    pub fn put_header(&mut self, header: FileHeader) {
        self.buf.extend_from_slice(&header.magic);
        self.put_u16(header.version);
    }

    /// Appends a u8.
    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Appends a u16.
    pub fn put_u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends a u32.
    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends an i32.
    pub fn put_i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends an i64.
    pub fn put_i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends a u64.
    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends a `str16`, cut to [`STR16_MAX`] bytes on a character boundary (callers
    /// bound their strings far below that: topic names, config keys and values).
    pub fn put_str16(&mut self, s: &str) {
        let s = cut(s, STR16_MAX);
        self.put_u16(s.len() as u16);
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// Appends a `nullable str16`, cut to [`NULLABLE_STR16_MAX`] bytes on a character
    /// boundary.
    pub fn put_nullable_str16(&mut self, s: Option<&str>) {
        match s {
            None => self.put_u16(NULL_LEN),
            Some(s) => {
                let s = cut(s, NULLABLE_STR16_MAX);
                self.put_u16(s.len() as u16);
                self.buf.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// Appends a `bytes32`, cut to `u32::MAX` bytes.
    pub fn put_bytes32(&mut self, b: &[u8]) {
        let b = &b[..b.len().min(u32::MAX as usize)];
        self.put_u32(b.len() as u32);
        self.buf.extend_from_slice(b);
    }

    /// Appends a `bytes32` whose content `f` writes in place (no buffer of its own to
    /// copy from). Content past `u32::MAX` bytes is not cut: the caller keeps it smaller.
    pub fn put_bytes32_with(&mut self, f: impl FnOnce(&mut Writer)) {
        let at = self.buf.len();
        self.put_u32(0);
        f(self);
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends bytes as they are, with no length.
    pub fn put_raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// Appends a uuid.
    pub fn put_uuid(&mut self, id: &Uuid) {
        self.buf.extend_from_slice(id.as_bytes());
    }

    /// Appends a checked payload: `{ length: u32, crc32c: u32, payload }`.
    pub fn put_checked(&mut self, payload: &[u8]) {
        let payload = &payload[..payload.len().min(u32::MAX as usize)];
        self.put_u32(payload.len() as u32);
        self.put_u32(crc32c::crc32c(payload));
        self.buf.extend_from_slice(payload);
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Decodes a buffer front to back; every `take_*` checks bounds and returns an error
/// instead of panicking.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The bytes not yet consumed, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    /// Fails unless every byte has been consumed.
    pub fn finish(&self) -> CodecResult<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }

    /// The next `n` bytes.
    pub fn take_bytes(&mut self, n: usize) -> CodecResult<&'a [u8]> {
        let rest = self.rest();
        let Some(head) = rest.get(..n) else {
            return Err(CodecError::Truncated {
                at: self.pos,
                needed: n,
                left: rest.len(),
            });
        };
        self.pos += n;
        Ok(head)
    }

    fn take_array<const N: usize>(&mut self) -> CodecResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take_bytes(N)?);
        Ok(out)
    }

    /// A u8.
    pub fn take_u8(&mut self) -> CodecResult<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    /// A u16.
    pub fn take_u16(&mut self) -> CodecResult<u16> {
        self.take_array().map(u16::from_be_bytes)
    }

    /// A u32.
    pub fn take_u32(&mut self) -> CodecResult<u32> {
        self.take_array().map(u32::from_be_bytes)
    }

    /// An i32.
    pub fn take_i32(&mut self) -> CodecResult<i32> {
        self.take_array().map(i32::from_be_bytes)
    }

    /// An i64.
    pub fn take_i64(&mut self) -> CodecResult<i64> {
        self.take_array().map(i64::from_be_bytes)
    }

    /// A u64.
    pub fn take_u64(&mut self) -> CodecResult<u64> {
        self.take_array().map(u64::from_be_bytes)
    }

    fn take_utf8(&mut self, n: usize) -> CodecResult<String> {
        let at = self.pos;
        let bytes = self.take_bytes(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| CodecError::Utf8 { at })
    }

    /// A `str16`.
    pub fn take_str16(&mut self) -> CodecResult<String> {
        let n = self.take_u16()?;
        self.take_utf8(usize::from(n))
    }

    /// A `nullable str16`.
    pub fn take_nullable_str16(&mut self) -> CodecResult<Option<String>> {
        match self.take_u16()? {
            NULL_LEN => Ok(None),
            n => self.take_utf8(usize::from(n)).map(Some),
        }
    }

    /// A `bytes32`.
    pub fn take_bytes32(&mut self) -> CodecResult<&'a [u8]> {
        let n = self.take_u32()?;
        let n = usize::try_from(n).map_err(|_| CodecError::Invalid("length"))?;
        self.take_bytes(n)
    }

    /// A uuid.
    pub fn take_uuid(&mut self) -> CodecResult<Uuid> {
        self.take_array().map(Uuid::from_bytes)
    }

    /// A u32 element count, refused when `count * min_element_len` exceeds the bytes
    /// left: a damaged count then fails here instead of reserving gigabytes.
    pub fn take_count(&mut self, min_element_len: usize) -> CodecResult<usize> {
        let at = self.pos;
        let n = self.take_u32()? as usize;
        let needed = n.saturating_mul(min_element_len.max(1));
        if needed > self.remaining() {
            return Err(CodecError::Truncated {
                at,
                needed,
                left: self.remaining(),
            });
        }
        Ok(n)
    }

    /// A checked payload (`{ length: u32, crc32c: u32, payload }`), its CRC verified.
    pub fn take_checked(&mut self) -> CodecResult<&'a [u8]> {
        let at = self.pos;
        let len = self.take_u32()?;
        let crc = self.take_u32()?;
        let len = usize::try_from(len).map_err(|_| CodecError::Invalid("length"))?;
        let payload = self.take_bytes(len)?;
        if crc32c::crc32c(payload) != crc {
            return Err(CodecError::Checksum { at });
        }
        Ok(payload)
    }

    /// A file header of format `magic`, its version checked against `versions`.
    pub fn take_header(
        &mut self,
        magic: [u8; 4],
        versions: std::ops::RangeInclusive<u16>,
    ) -> CodecResult<u16> {
        let found: [u8; 4] = self.take_array().map_err(|_| CodecError::BadMagic {
            expected: magic,
            found: self.rest().to_vec(),
        })?;
        if found != magic {
            return Err(CodecError::BadMagic {
                expected: magic,
                found: found.to_vec(),
            });
        }
        let version = self.take_u16()?;
        if !versions.contains(&version) {
            return Err(CodecError::UnsupportedVersion {
                magic,
                found: version,
                min: *versions.start(),
                max: *versions.end(),
            });
        }
        Ok(version)
    }
}

/// What every Caudal file starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Names the format (one of [`magic`]).
    pub magic: [u8; 4],
    /// Version of the format.
    pub version: u16,
}

/// Bytes of a file header.
pub const HEADER_LEN: usize = 6;

impl FileHeader {
    /// The header of version `version` of format `magic`.
    pub const fn new(magic: [u8; 4], version: u16) -> FileHeader {
        FileHeader { magic, version }
    }

    /// True when `data` starts with `magic`: a file of that format in a versioned
    /// layout, as opposed to one written before headers existed.
    pub fn has_magic(data: &[u8], magic: [u8; 4]) -> bool {
        data.starts_with(&magic)
    }
}

/// A whole file made of a header and one checked payload: how small files (producer-id
/// blocks, indexes) are written, so a torn or damaged file is always detected.
pub fn encode_checked_file(header: FileHeader, payload: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_header(header);
    w.put_checked(payload);
    w.finish()
}

/// Reads a file written by [`encode_checked_file`]: checks magic, version and CRC and
/// that nothing follows the payload. Returns the version and the payload.
pub fn decode_checked_file(
    data: &[u8],
    magic: [u8; 4],
    versions: std::ops::RangeInclusive<u16>,
) -> CodecResult<(u16, &[u8])> {
    let mut r = Reader::new(data);
    let version = r.take_header(magic, versions)?;
    let payload = r.take_checked()?;
    r.finish()?;
    Ok((version, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_has_its_own_magic() {
        for (i, a) in magic::ALL.iter().enumerate() {
            for b in &magic::ALL[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn fields_round_trip() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let mut w = Writer::with_header(FileHeader::new(*b"TEST", 3));
        w.put_u8(7);
        w.put_u16(0xbeef);
        w.put_u32(0xdead_beef);
        w.put_i32(-5);
        w.put_i64(-1 << 40);
        w.put_u64(u64::MAX);
        w.put_str16("héllo");
        w.put_nullable_str16(None);
        w.put_nullable_str16(Some(""));
        w.put_bytes32(b"raw");
        w.put_uuid(&id);
        w.put_checked(b"payload");
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.take_header(*b"TEST", 1..=3), Ok(3));
        assert_eq!(r.take_u8(), Ok(7));
        assert_eq!(r.take_u16(), Ok(0xbeef));
        assert_eq!(r.take_u32(), Ok(0xdead_beef));
        assert_eq!(r.take_i32(), Ok(-5));
        assert_eq!(r.take_i64(), Ok(-1 << 40));
        assert_eq!(r.take_u64(), Ok(u64::MAX));
        assert_eq!(r.take_str16().as_deref(), Ok("héllo"));
        assert_eq!(r.take_nullable_str16(), Ok(None));
        assert_eq!(r.take_nullable_str16(), Ok(Some(String::new())));
        assert_eq!(r.take_bytes32(), Ok(&b"raw"[..]));
        assert_eq!(r.take_uuid(), Ok(id));
        assert_eq!(r.take_checked(), Ok(&b"payload"[..]));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_not_a_panic() {
        let file = encode_checked_file(FileHeader::new(magic::PRODUCER_IDS, 2), b"12345678");
        assert_eq!(
            decode_checked_file(&file, magic::PRODUCER_IDS, 2..=2),
            Ok((2, &b"12345678"[..]))
        );
        for n in 0..file.len() {
            assert!(decode_checked_file(&file[..n], magic::PRODUCER_IDS, 2..=2).is_err());
        }
        for i in 0..file.len() * 8 {
            let mut bad = file.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(decode_checked_file(&bad, magic::PRODUCER_IDS, 2..=2).is_err());
        }
        let mut longer = file.clone();
        longer.push(0);
        assert_eq!(
            decode_checked_file(&longer, magic::PRODUCER_IDS, 2..=2),
            Err(CodecError::Trailing(1))
        );
    }

    #[test]
    fn a_newer_version_is_refused_by_name() {
        let file = encode_checked_file(FileHeader::new(magic::OFFSET_INDEX, 9), b"");
        let err = decode_checked_file(&file, magic::OFFSET_INDEX, 2..=2).unwrap_err();
        assert_eq!(
            err,
            CodecError::UnsupportedVersion {
                magic: magic::OFFSET_INDEX,
                found: 9,
                min: 2,
                max: 2
            }
        );
        assert!(err.to_string().contains("CDOI version 9"), "{err}");
    }

    #[test]
    fn a_huge_count_is_refused_before_allocating() {
        let mut w = Writer::new();
        w.put_u32(u32::MAX);
        w.put_u32(1);
        let bytes = w.finish();
        assert!(Reader::new(&bytes).take_count(4).is_err());
        let mut w = Writer::new();
        w.put_u32(1);
        w.put_u32(1);
        let bytes = w.finish();
        assert_eq!(Reader::new(&bytes).take_count(4), Ok(1));
    }

    #[test]
    fn long_strings_are_cut_on_a_character_boundary() {
        let long = "é".repeat(STR16_MAX);
        let mut w = Writer::new();
        w.put_str16(&long);
        w.put_nullable_str16(Some(&long));
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        let a = r.take_str16().unwrap();
        let b = r.take_nullable_str16().unwrap().unwrap();
        assert!(a.len() <= STR16_MAX && long.starts_with(&a));
        assert!(b.len() <= NULLABLE_STR16_MAX && long.starts_with(&b));
        assert_eq!(r.finish(), Ok(()));
    }
}
