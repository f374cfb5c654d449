//! A kernel without some tracepoints, simulated without any hook in leaktrace: leaktrace runs
//! in a private mount namespace where tracefs directories (relative to `events/`) are covered
//! by empty tmpfs mounts. A covered category is missing as on an older kernel; a covered
//! tracepoint still seems to exist but cannot be attached (its `id` is gone), as when the kernel
//! refuses it.
use std::process::{Command, Output};

pub fn leaktrace_without(hide: &[&str], args: &[&str]) -> Output {
    let mounts: Vec<String> = hide
        .iter()
        .map(|dir| format!("mount -t tmpfs none /sys/kernel/tracing/events/{dir}"))
        .collect();
    let script = format!("{} && exec \"$0\" \"$@\"", mounts.join(" && "));
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(env!("CARGO_BIN_EXE_leaktrace"))
        .args(args)
        .output()
        .expect("run leaktrace through unshare")
}
