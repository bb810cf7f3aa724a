//! The fuzz targets' inputs, replayed by `cargo test` in a few seconds: every committed
//! seed under `fuzz/seeds/`, a fixed set of deterministic mutations of each (bit flips,
//! truncations, length fields overwritten with 0, -1 and i32::MAX, ...), and every input
//! under `fuzz/regressions/` (what the fuzzer once crashed on). The code run on each
//! input is the fuzz targets' own (`fuzz/src/lib.rs`); `make fuzz` runs the
//! coverage-guided search itself. See docs/reliability.md, "Hostile input".

#[path = "../../fuzz/src/lib.rs"]
mod checks;
mod seeds;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use caudal::dispatch::{decode_only, SUPPORTED};
use caudal::protocol::frame::peek_header;
use caudal::protocol::record_batch::check_batch;

/// What a target does with one input.
type Check = fn(&[u8]);

/// The targets, by the name of their corpus directory.
const TARGETS: [(&str, Check); 5] = [
    ("frame", checks::frame),
    ("record_batch", checks::record_batch),
    ("disk_parsers", checks::disk_parsers),
    ("raft_message", checks::raft_message),
    ("peer_frame", checks::peer_frame),
];

/// Random mutations per seed, on top of the length-field sweep.
const RANDOM_MUTATIONS: usize = 200;

/// Values written over every 4-byte window of a seed: the lengths that break decoders.
const HOSTILE_I32: [i32; 3] = [0, -1, i32::MAX];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted by name (none if it does not exist).
fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("read seed dir entry").path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
        .map(|p| {
            let data = std::fs::read(&p).expect("read seed");
            (p.file_name().unwrap().to_string_lossy().into_owned(), data)
        })
        .collect();
    out.sort();
    out
}

/// xorshift64*: deterministic, no dependency, good enough to pick positions.
struct Rng(u64);

impl Rng {
    fn new(name: &str) -> Rng {
        // FNV-1a of the seed's name, so each seed gets its own fixed stream.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Rng(h | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One random mutation of `seed`.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut m = seed.to_vec();
    let len = m.len();
    match rng.below(8) {
        0 => {
            for _ in 0..=rng.below(4) {
                if len > 0 {
                    let i = rng.below(len);
                    m[i] ^= 1 << rng.below(8);
                }
            }
        }
        1 => m.truncate(rng.below(len)),
        2 => {
            let v = HOSTILE_I32[rng.below(3)].to_be_bytes();
            overwrite(&mut m, rng.below(len), &v);
        }
        3 => {
            let v = [0i16, -1, i16::MAX][rng.below(3)].to_be_bytes();
            overwrite(&mut m, rng.below(len), &v);
        }
        4 => {
            // Unsigned varint u32::MAX: a compact length of four billion.
            overwrite(&mut m, rng.below(len), &[0xff, 0xff, 0xff, 0xff, 0x0f]);
        }
        5 => {
            let at = rng.below(len + 1);
            let extra: Vec<u8> = (0..=rng.below(16)).map(|_| rng.next() as u8).collect();
            m.splice(at..at, extra);
        }
        6 => {
            let at = rng.below(len);
            let end = (at + 1 + rng.below(16)).min(len);
            m.drain(at..end);
        }
        _ => {
            for _ in 0..=rng.below(8) {
                if len > 0 {
                    let i = rng.below(len);
                    m[i] = rng.next() as u8;
                }
            }
        }
    }
    m
}

fn overwrite(m: &mut [u8], at: usize, with: &[u8]) {
    for (i, b) in with.iter().enumerate() {
        if let Some(slot) = m.get_mut(at + i) {
            *slot = *b;
        }
    }
}

/// Runs `check` on `input`, naming the input if it panics.
fn run(target: &str, name: &str, what: &str, check: Check, input: &[u8]) {
    let outcome = std::panic::catch_unwind(|| check(input));
    if outcome.is_err() {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!(
            "{target}: {name} ({what}) panicked; input ({} bytes): {hex}",
            input.len()
        );
    }
}

#[test]
fn seeds_and_their_mutations_never_panic_the_parsers() {
    let started = Instant::now();
    let mut total = 0usize;
    for (target, check) in TARGETS {
        let seeds = inputs("seeds", target);
        assert!(!seeds.is_empty(), "no seeds under fuzz/seeds/{target}");
        let mut count = 0usize;
        for (name, seed) in &seeds {
            run(target, name, "as committed", check, seed);
            count += 1;
            // Every 4-byte window overwritten with each hostile length.
            for at in 0..seed.len().saturating_sub(3) {
                for v in HOSTILE_I32 {
                    let mut m = seed.clone();
                    overwrite(&mut m, at, &v.to_be_bytes());
                    run(target, name, &format!("i32 {v} at {at}"), check, &m);
                    count += 1;
                }
            }
            let mut rng = Rng::new(name);
            for i in 0..RANDOM_MUTATIONS {
                let m = mutate(seed, &mut rng);
                run(target, name, &format!("mutation {i}"), check, &m);
                count += 1;
            }
        }
        eprintln!("{target}: {} seeds, {count} inputs", seeds.len());
        total += count;
    }
    checks::remove_scratch_dir();
    eprintln!("{total} inputs in {:.2?}", started.elapsed());
}

#[test]
fn regression_inputs_never_panic_the_parsers() {
    for (target, check) in TARGETS {
        for (name, input) in inputs("regressions", target) {
            run(target, &name, "regression", check, &input);
        }
    }
    checks::remove_scratch_dir();
}

#[test]
fn committed_seeds_cover_every_supported_request_version() {
    let stale = "fuzz/seeds is stale: run `cargo test --test fuzz -- --ignored write_seed_corpora`";
    let mut raw = BTreeSet::new();
    let mut body = BTreeSet::new();
    for (name, data) in inputs("seeds", "frame") {
        let (frame, set) = match data.split_first() {
            Some((mode, rest)) if mode & 1 == 0 => (rest[4..].to_vec(), &mut raw),
            Some((_, rest)) => {
                let key = i16::from_be_bytes([rest[0], rest[1]]);
                let version = i16::from_be_bytes([rest[2], rest[3]]);
                (checks::with_header(key, version, &rest[4..]), &mut body)
            }
            None => panic!("empty seed {name}"),
        };
        let prefix = peek_header(&frame).expect("seed has a header");
        let supported = SUPPORTED.iter().any(|s| {
            s.key as i16 == prefix.api_key && (s.min..=s.max).contains(&prefix.api_version)
        });
        if !supported {
            continue; // not (or no longer) supported: harmless as a fuzzer seed
        }
        let decoded = decode_only(Bytes::from(frame.clone()));
        assert!(
            decoded.is_ok(),
            "seed {name} does not decode: {decoded:?}; {stale}"
        );
        set.insert((prefix.api_key, prefix.api_version));
    }
    for spec in SUPPORTED {
        for v in spec.min..=spec.max {
            let kv = (spec.key as i16, v);
            assert!(
                raw.contains(&kv),
                "no raw frame seed for {:?} v{v}; {stale}",
                spec.key
            );
            assert!(
                body.contains(&kv),
                "no body seed for {:?} v{v}; {stale}",
                spec.key
            );
        }
    }
    for (name, data) in inputs("seeds", "record_batch") {
        assert!(
            check_batch(&data).is_ok(),
            "batch seed {name} is not valid; {stale}"
        );
    }
}

/// Rewrites `fuzz/seeds/` from the encoders (run after adding an API or version).
#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_seed_corpora() {
    for (target, _) in TARGETS {
        let dir = fuzz_dir().join("seeds").join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create seed dir");
    }
    let all = seeds::all();
    for (target, name, data) in &all {
        std::fs::write(fuzz_dir().join("seeds").join(target).join(name), data).expect("write seed");
    }
    eprintln!("wrote {} seeds", all.len());
}
