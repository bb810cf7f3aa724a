//! The runtime under the shards: executors never stay asleep with tasks ready (glommio
//! 0.9's park defect, bounded by the wake guard), and work that hangs is stopped with
//! every thread's backtrace. Cases that need a process of their own (the guard off, a
//! deadline that aborts) run this binary again as a child with one ignored test.

mod deadline;
mod park;

use std::process::{Command, Output};
use std::time::Duration;

/// Runs the ignored test `name` of this binary in a child process, bounded by `limit`.
pub fn run_child(name: &str, limit: Duration) -> Output {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let child = Command::new("timeout")
        .arg("--signal=KILL")
        .arg(limit.as_secs().to_string())
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            name,
        ])
        .env("CAUDAL_CHILD_TEST", "1")
        .output()
        .expect("running the test binary as a child");
    child
}
