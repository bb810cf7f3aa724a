//! A time bound on work that must not hang (a test, a shutdown): past it the process
//! prints what every thread was doing and aborts, instead of waiting in silence.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Armed on creation; dropping it disarms it.
#[must_use = "the deadline is disarmed when dropped"]
pub struct Deadline {
    _disarm: mpsc::Sender<()>,
}

impl Deadline {
    /// Aborts the process, after dumping every thread's backtrace to stderr, if this value
    /// is still alive `bound` from now. `what` names the work in the message.
    pub fn start(what: impl Into<String>, bound: Duration) -> Deadline {
        let what = what.into();
        let (tx, rx) = mpsc::channel::<()>();
        let name = what.clone();
        let spawned = std::thread::Builder::new()
            .name("caudal-deadline".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(bound) {
                    expire(&what, bound);
                }
            });
        if let Err(e) = spawned {
            // No thread, no bound: say so rather than fail the work itself.
            eprintln!("caudal: no deadline for {name}: cannot start its thread: {e}");
        }
        Deadline { _disarm: tx }
    }
}

fn expire(what: &str, bound: Duration) -> ! {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\n=== DEADLINE: {what} did not finish within {bound:?}; every thread's state \
         follows, then the process aborts ==="
    );
    let _ = err.write_all(executor_report().as_bytes());
    let _ = err.write_all(thread_report().as_bytes());
    let _ = err.flush();
    drop(err);
    std::process::abort();
}

/// What the wake guard knows of each executor of this process.
fn executor_report() -> String {
    let mut out = format!(
        "--- executors (wake guard period {:?})\n",
        super::wake_guard::period()
    );
    for e in super::wake_guard::snapshot() {
        out.push_str(&format!(
            "{}: running {} nudges {} guard-task runs {}\n",
            e.name,
            e.running(),
            e.nudges(),
            e.guard_polls()
        ));
    }
    out
}

/// Backtraces of every thread from gdb when it is installed, otherwise each thread's
/// name, state and kernel wait channel from /proc.
pub fn thread_report() -> String {
    let pid = std::process::id();
    // Yama's ptrace scope 1 lets only an ancestor attach unless we allow it.
    // SAFETY: prctl with these arguments only changes this process's ptrace policy.
    unsafe {
        libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0);
    }
    let gdb = Command::new("timeout")
        // gdb can ignore the TERM while attached: KILL it 5 s later.
        .args([
            "-k",
            "5",
            "120",
            "gdb",
            "-p",
            &pid.to_string(),
            "-batch",
            "-nx",
        ])
        .args(["-ex", "set pagination off", "-ex", "thread apply all bt"])
        .stdin(Stdio::null())
        .output();
    let mut out = String::from("--- threads\n");
    if let Ok(o) = gdb {
        let text = String::from_utf8_lossy(&o.stdout);
        if text.contains("Thread ") {
            out.push_str(&text);
            return out;
        }
    }
    out.push_str("(gdb gave no backtraces; /proc instead)\n");
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let p = t.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        let stat = read("stat");
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        out.push_str(&format!(
            "tid {} {} state {} wchan {}\n{}",
            t.file_name().to_string_lossy(),
            read("comm").trim(),
            state,
            read("wchan"),
            read("stack")
        ));
    }
    out
}
