//! A global allocator that keeps hostile length fields from aborting the process.
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

/// Allocations at least this large are reserved, not committed.
const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

/// The system allocator, with huge allocations served by reserve-only mappings.
pub struct GuardedAlloc;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE && layout.align() <= PAGE
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
        if is_huge(&layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
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
/// Memory use stays at its peak, which the tail cache and request budget already bound.
/// Call before starting threads.
pub fn retain_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

#[cfg(test)]
mod tests {
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
}
