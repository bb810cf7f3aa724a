//! The runtime under Caudal's broker and load generator: executors that never stay
//! asleep with work ready, deadlines for work that must not hang, and the allocator that
//! survives hostile length fields. Depends on nothing of the broker.
#![warn(missing_docs)]

pub mod alloc_guard;
pub mod executor;
pub mod notify;
pub mod task;

/// The allocator's own tests need it installed, as every Caudal binary has it.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc_guard::GuardedAlloc = alloc_guard::GuardedAlloc;
