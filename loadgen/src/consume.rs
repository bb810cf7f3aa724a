//! Consumers: each reads with fetch lanes (`fetch.rs`), either on manually assigned
//! partitions or as a member of a consumer group (`group.rs`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use crate::fetch::{run_lanes, FetchCtx, Positions};
use crate::group;
use crate::run::lock;

/// What one consumer does.
#[derive(Debug, Clone)]
pub enum ConsumerSpec {
    /// Reads the given partitions from the given offsets.
    Manual {
        /// Index into `Shared::groups` this reader counts towards.
        group_idx: usize,
        /// `(partition, start offset)`.
        partitions: Vec<(i32, i64)>,
    },
    /// Joins `group_id` and reads what it is assigned.
    Group {
        /// Index into `Shared::groups`.
        group_idx: usize,
        /// Consumer group id.
        group_id: String,
        /// Start here when the group has no committed offset (or an older one, in e2e).
        start: HashMap<i32, i64>,
    },
}

/// Runs one consumer until the run says stop.
pub async fn run_consumer(spec: ConsumerSpec, ctx: Rc<FetchCtx>) {
    let result = match spec {
        ConsumerSpec::Manual {
            group_idx,
            partitions,
        } => {
            let positions: Positions = Rc::new(RefCell::new(partitions.iter().copied().collect()));
            ctx.shared.consumer_ready();
            ctx.shared.wait_for_go(Duration::from_secs(120)).await;
            run_lanes(&ctx, group_idx, &positions, &|| false).await
        }
        ConsumerSpec::Group {
            group_idx,
            group_id,
            start,
        } => group::run_member(&ctx, group_idx, &group_id, &start).await,
    };
    // A consumer that failed must not hold up the start.
    ctx.shared.consumer_ready();
    if let Err(e) = result {
        lock(&ctx.rec).errors += 1;
        ctx.shared.report_error(format!("consumer: {e:#}"));
    }
}
