//! The runtime under Caudal's broker and load generator: executors that never stay
//! asleep with work ready, deadlines for work that must not hang, and the allocator that
//! survives hostile length fields. Depends on nothing of the broker.
#![warn(missing_docs)]

pub mod alloc_guard;
pub mod executor;
pub mod notify;
pub mod task;
