//! Which timer-channel semantics a Go program runs with: decided by its runtime version and, on
//! Go 1.23 to 1.26, by the `asynctimerchan` GODEBUG setting (from the binary's build info and
//! the process environment), not by the runtime version alone.
//!
//! Facts, from the Go sources of 1.23-1.27:
//! - `time.syncTimer` (time/sleep.go, Go 1.23-1.26): with `asynctimerchan=1` the time package
//!   does not tell the runtime that a timer is a channel timer, so the runtime keeps it in a
//!   P's heap until it fires (a ticker: forever), like Go 1.22 and older. `asynctimerchan=0`
//!   (the default) and `=2` both give garbage-collectable channel timers.
//! - Precedence (internal/godebug `update`, runtime/runtime1.go `parsedebugvars`): the
//!   `GODEBUG` environment variable first, then the binary's default (`DefaultGODEBUG` in the
//!   build info, where the `go` line of the main module's go.mod, its `godebug` block and
//!   `//go:debug` lines end up); within one string the last `name=value` wins.
//! - Go 1.27 removed the setting (internal/godebugs/table.go: `Removed: 27`): always collected.
use serde::{Deserialize, Serialize};

use super::GoVersion;

/// Which semantics unstopped, unreferenced channel timers (`NewTimer`, `After`, `NewTicker`,
/// `Tick`) have in the target, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerChannels {
    /// `go1.22-`: they stay in the runtime's heap until they fire (tickers forever), a leak;
    /// `go1.23+`: the GC collects them.
    pub semantics: String,
    /// The sentence that says what decided it (version, setting and where it came from).
    pub why: String,
}

impl TimerChannels {
    /// Unreferenced, unstopped channel timers are collected by the GC (not a leak).
    pub fn collected(&self) -> bool {
        self.semantics == "go1.23+"
    }
}

/// The value of setting `name` in a GODEBUG string (`k=v,k2=v2`): the last occurrence wins, a
/// `#pattern` suffix (bisect) is dropped, as internal/godebug `parse` does.
pub fn setting<'a>(godebug: &'a str, name: &str) -> Option<&'a str> {
    godebug.split(',').rev().find_map(|item| {
        let (key, value) = item.split_once('=')?;
        (key.trim() == name).then(|| value.split('#').next().unwrap_or(value))
    })
}

/// `GODEBUG` of the process environment as the runtime saw it at start (`/proc/PID/environ`
/// is the environment given to exec: a later `os.Setenv("GODEBUG")` in the program is not
/// visible there). The first occurrence counts, as for the runtime's `gogetenv`. Ok(None) when
/// it is not set.
pub fn environ_godebug(pid: u32) -> std::io::Result<Option<String>> {
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    Ok(environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"GODEBUG="))
        .map(|value| String::from_utf8_lossy(value).into_owned()))
}

/// The timer-channel semantics of a Go `version` program whose build info's `DefaultGODEBUG`
/// is `default` and whose environment has `GODEBUG=env`.
pub fn timer_channels(
    version: GoVersion,
    default: Option<&str>,
    env: Option<&str>,
) -> TimerChannels {
    const SETTING: &str = "asynctimerchan";
    let old = |why: String| TimerChannels {
        semantics: "go1.22-".into(),
        why,
    };
    let new = |why: String| TimerChannels {
        semantics: "go1.23+".into(),
        why,
    };
    if (version.major, version.minor) < (1, 23) {
        return old(format!(
            "Go {version} runtime: unstopped channel timers stay in the heap until they fire, tickers forever"
        ));
    }
    let from_env = env.and_then(|e| setting(e, SETTING));
    let from_default = default.and_then(|d| setting(d, SETTING));
    if (version.major, version.minor) >= (1, 27) {
        let ignored = from_env
            .or(from_default)
            .map(|v| format!(" ({SETTING}={v} is ignored)"))
            .unwrap_or_default();
        return new(format!(
            "Go {version} runtime: Go 1.27 removed {SETTING}, unreferenced channel timers are always collected by the GC{ignored}"
        ));
    }
    let (value, source) = match (from_env, from_default) {
        (Some(v), _) => (
            v,
            "GODEBUG in the process environment (it overrides the binary's default)",
        ),
        (None, Some(v)) => (
            v,
            "the binary's default GODEBUG (build info DefaultGODEBUG: the main module's go.mod declares go < 1.23, or a godebug directive sets it)",
        ),
        (None, None) => {
            return new(format!(
                "Go {version} runtime and no {SETTING} setting: unreferenced channel timers are collected by the GC"
            ))
        }
    };
    if value == "1" {
        old(format!(
            "Go {version} runtime with {SETTING}=1 from {source}: channel timers keep the pre-Go 1.23 behaviour, unstopped ones stay in the heap until they fire, tickers forever"
        ))
    } else {
        new(format!(
            "Go {version} runtime with {SETTING}={value} from {source}: only {SETTING}=1 keeps the pre-Go 1.23 timers, so unreferenced channel timers are collected by the GC"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(minor: u32) -> GoVersion {
        GoVersion {
            major: 1,
            minor,
            patch: 0,
        }
    }

    #[test]
    fn settings_last_wins_and_bisect_patterns_are_dropped() {
        assert_eq!(
            setting("a=1,asynctimerchan=1,b=2", "asynctimerchan"),
            Some("1")
        );
        assert_eq!(
            setting("asynctimerchan=1,asynctimerchan=0", "asynctimerchan"),
            Some("0")
        );
        assert_eq!(setting("asynctimerchan=1#+1", "asynctimerchan"), Some("1"));
        assert_eq!(setting("xasynctimerchan=1", "asynctimerchan"), None);
        assert_eq!(setting("", "asynctimerchan"), None);
    }

    #[test]
    fn the_setting_decides_on_go_1_23_to_1_26_only() {
        let default = Some("asynctimerchan=1,tls3des=1");
        assert!(!timer_channels(go(22), None, None).collected());
        assert!(timer_channels(go(26), None, None).collected());
        let by_default = timer_channels(go(26), default, None);
        assert!(!by_default.collected());
        assert!(
            by_default.why.contains("DefaultGODEBUG"),
            "{}",
            by_default.why
        );
        // The environment overrides the default, either way.
        assert!(timer_channels(go(23), default, Some("asynctimerchan=0")).collected());
        let by_env = timer_channels(go(24), None, Some("asynctimerchan=1"));
        assert!(!by_env.collected());
        assert!(by_env.why.contains("environment"), "{}", by_env.why);
        // =2: asynchronous channels, but collectable timers.
        assert!(timer_channels(go(25), None, Some("asynctimerchan=2")).collected());
        // Go 1.27 removed the setting.
        let removed = timer_channels(go(27), default, Some("asynctimerchan=1"));
        assert!(removed.collected());
        assert!(removed.why.contains("ignored"), "{}", removed.why);
    }

    #[test]
    fn reads_godebug_from_the_environment() {
        // This test process: whatever its GODEBUG, the reader agrees with std::env.
        let pid = std::process::id();
        assert_eq!(environ_godebug(pid).unwrap(), std::env::var("GODEBUG").ok());
        assert!(environ_godebug(u32::MAX).is_err());
    }
}
