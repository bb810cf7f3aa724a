//! A global allocator that keeps hostile length fields from aborting the process, and
//! the policy for freed memory: kept for reuse while the broker is busy, handed back to
//! the kernel once it is quiet.
//!
//! The `kafka-protocol` decoders size each array with `Vec::with_capacity(n)` where `n`
//! is the length read off the wire, before checking that `n` elements could fit in the
//! frame. A four-byte length of 2^31 - 1 then asks for hundreds of gigabytes; the system
//! allocator refuses, and Rust aborts the whole broker. Here, allocations of 1 GiB or
//! more are served by an `mmap` with `MAP_NORESERVE`: the kernel hands out address space
//! without committing memory, the decoder fails on the first missing element, and the
//! untouched mapping is returned. Real buffers never come near 1 GiB (requests are
//! capped at `socket.request.max.bytes`), so the data path never takes this branch.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Allocations at least this large are reserved, not committed.
const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

/// The system allocator, with huge allocations served by reserve-only mappings.
pub struct GuardedAlloc;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE && layout.align() <= PAGE
}

/// Allocations at least this large are counted: the buffers whose churn freed memory is
/// kept for (request frames, batches, DMA chunks).
const LARGE: usize = 64 << 10;

/// Bytes of large allocations since the process started.
static LARGE_BYTES: AtomicU64 = AtomicU64::new(0);

fn count(size: usize) {
    if size >= LARGE {
        LARGE_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every method either forwards to `System` or pairs mmap with munmap for the
// same size, chosen by the same `is_huge` test on the layout the caller passes back.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        if is_huge(&layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        if is_huge(&layout) {
            // Fresh anonymous pages read as zero.
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_huge(&layout) && !is_huge(&new_layout) {
            count(new_size);
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Largest allocation glibc serves from its heaps instead of a fresh mapping (its cap).
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Free memory a heap may keep at its top before glibc hands it back to the kernel.
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Keeps freed buffers in the allocator for reuse instead of returning them to the kernel.
///
/// Request frames, batches and tail-cache entries are 100 KiB to 1 MiB and churn at the
/// produce rate. By default glibc serves such sizes with fresh `mmap`s (until its dynamic
/// threshold catches up) and trims heap tops back to the kernel, so the broker paid a page
/// fault per 4 KiB of every buffer: profiles showed `exc_page_fault` under `memmove`,
/// and e2e p99 at 700 k msg/s fell from ~150 ms to ~10 ms with this set (docs/benchmarks.md).
/// While the broker is busy, memory use stays at its peak, which the tail cache and
/// request budget bound; [`return_memory_when_quiet`] hands it back afterwards.
/// Call before starting threads.
pub fn retain_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Large allocations in a period below which the process counts as quiet (a consumer
/// polling an idle topic, metrics scrapes).
const QUIET_BYTES: u64 = 16 << 20;

/// Decides, a period at a time, when to hand freed memory back: once, at the first quiet
/// period after a busy one. Trimming during a load would make the next buffers fault
/// their pages in again; never trimming left a broker that had written 4,000 partitions
/// holding 1.3 GiB while idle.
#[derive(Debug, Default)]
pub struct QuietTrim {
    last: u64,
    busy: bool,
}

impl QuietTrim {
    /// Given the large-allocation total at the end of a period, true when freed memory
    /// should be handed back now.
    pub fn after_period(&mut self, total: u64) -> bool {
        let during = total.saturating_sub(self.last);
        self.last = total;
        if during >= QUIET_BYTES {
            self.busy = true;
            return false;
        }
        std::mem::take(&mut self.busy)
    }
}

/// Hands free memory in every heap back to the kernel (glibc's `malloc_trim`).
pub fn return_freed_memory() {
    // SAFETY: malloc_trim takes each arena's lock itself; it only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Starts a thread that hands freed memory back to the kernel after each busy spell,
/// once a whole `period` has gone by quietly.
pub fn return_memory_when_quiet(period: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("memory-return".into())
        .spawn(move || {
            let mut trim = QuietTrim {
                last: LARGE_BYTES.load(Ordering::Relaxed),
                busy: false,
            };
            loop {
                std::thread::sleep(period);
                if trim.after_period(LARGE_BYTES.load(Ordering::Relaxed)) {
                    return_freed_memory();
                }
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::QuietTrim;

    /// The tests below read this thread's page faults; a trim from another test between
    /// a free and the next allocation would make them fault. They run one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_wire_length_of_two_billion_does_not_abort() {
        // What a decoder does with a hostile array length: reserve, then fail.
        let v: Vec<[u8; 72]> = Vec::with_capacity(i32::MAX as usize);
        assert!(v.capacity() >= i32::MAX as usize);
    }

    /// Minor page faults of the calling thread so far.
    fn thread_minor_faults() -> i64 {
        // SAFETY: getrusage fills the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
        ru.ru_minflt
    }

    #[test]
    fn freed_buffers_are_reused_without_page_faults() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        super::retain_freed_memory();
        const MIB: usize = 1 << 20;
        // Warm this thread's heap with a request-sized buffer, free it, then take one
        // again: it must come back without faulting its 256 pages in anew.
        drop(std::hint::black_box(vec![1u8; MIB]));
        let before = thread_minor_faults();
        let again = std::hint::black_box(vec![2u8; MIB]);
        let faults = thread_minor_faults() - before;
        assert_eq!(again[MIB - 1], 2);
        assert!(
            faults < 32,
            "{faults} page faults for a reused 1 MiB buffer"
        );
    }

    #[test]
    fn freed_memory_goes_back_to_the_kernel_when_returned() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        super::retain_freed_memory();
        const MIB: usize = 1 << 20;
        // Eight request-sized buffers, touched and freed: kept for reuse until returned,
        // after which taking them again faults their pages in anew. A buffer still in use
        // after them keeps them off the heap's top, as a busy broker's live buffers do
        // (glibc returns free memory inside a heap; a thread heap's free top goes back
        // when the heap is empty).
        let held: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8; MIB]).collect();
        let pin = std::hint::black_box(vec![9u8; MIB]);
        drop(std::hint::black_box(held));
        super::return_freed_memory();
        let before = thread_minor_faults();
        let again: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8 + 1; MIB]).collect();
        let faults = thread_minor_faults() - before;
        assert_eq!(again[7][MIB - 1], 8);
        assert_eq!(pin[0], 9);
        assert!(
            faults >= 8 * 128,
            "only {faults} page faults for 8 MiB taken after the memory was returned"
        );
    }

    #[test]
    fn memory_is_returned_once_at_the_first_quiet_period_after_a_busy_one() {
        const MIB: u64 = 1 << 20;
        let mut t = QuietTrim::default();
        assert!(
            !t.after_period(MIB),
            "quiet from the start: nothing to return"
        );
        assert!(!t.after_period(500 * MIB), "busy");
        assert!(!t.after_period(900 * MIB), "still busy");
        assert!(
            t.after_period(901 * MIB),
            "the first quiet period returns memory"
        );
        assert!(!t.after_period(902 * MIB), "once");
        assert!(!t.after_period(902 * MIB), "once");
        assert!(!t.after_period(1000 * MIB), "busy again");
        assert!(t.after_period(1000 * MIB), "and quiet again");
    }
}
