//! Shards: one executor per core, each owning its partitions; the mesh between them.

pub mod cluster_producer_ids;
pub mod cluster_state;
pub mod cluster_tasks;
pub mod cluster_view;
pub mod controller;
pub mod controller_client;
pub mod controller_snapshot;
pub mod forwarded;
pub mod group_coordinators;
pub mod mesh;
pub mod placement;
pub mod producer_ids;
pub mod router;
pub mod runtime;
pub mod state;
