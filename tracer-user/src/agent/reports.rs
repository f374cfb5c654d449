//! `--report-dir`: every interval's JSON report as `DIR/<comm>-<pid>-<unix seconds>.json`, the
//! oldest of a target removed beyond `--report-keep`.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// The file name's `<comm>` part: a comm may hold any byte but NUL (`/` too), so anything
/// outside `[A-Za-z0-9._+]` becomes `_`.
pub fn file_comm(comm: &str) -> String {
    let cleaned: String = comm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.starts_with('.') {
        format!("_{cleaned}")
    } else {
        cleaned
    }
}

/// Writes `json` as this interval's report of `comm`/`pid` and removes that target's oldest
/// reports beyond `keep`. Returns the path written. The file is written under a temporary name
/// and renamed, so a reader never sees half a report.
pub fn write(
    dir: &Path,
    comm: &str,
    pid: u32,
    unix_seconds: u64,
    json: &str,
    keep: usize,
) -> Result<PathBuf> {
    let prefix = format!("{}-{pid}-", file_comm(comm));
    let path = dir.join(format!("{prefix}{unix_seconds}.json"));
    let partial = dir.join(format!(".{prefix}{unix_seconds}.json.partial"));
    std::fs::write(&partial, json)
        .with_context(|| format!("cannot write a report to {}", partial.display()))?;
    std::fs::rename(&partial, &path)
        .with_context(|| format!("cannot write a report to {}", path.display()))?;
    rotate(dir, &prefix, keep)?;
    Ok(path)
}

/// Removes the oldest `<prefix><unix seconds>.json` files of `dir` beyond `keep`.
fn rotate(dir: &Path, prefix: &str, keep: usize) -> Result<()> {
    let mut reports: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let seconds = name
                .to_str()?
                .strip_prefix(prefix)?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()?;
            Some((seconds, entry.path()))
        })
        .collect();
    if reports.len() <= keep {
        return Ok(());
    }
    reports.sort();
    for (_, path) in &reports[..reports.len() - keep] {
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the old report {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("leaktrace-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_oldest_reports_of_a_target_go_beyond_keep_and_other_files_stay() {
        let dir = temp_dir("rotation");
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        // Other targets: same comm and another pid; another comm.
        write(&dir, "srv", 7, 50, "{}", 2).unwrap();
        write(&dir, "srv-2", 42, 5, "{}", 2).unwrap();
        // Out of order on purpose: age is the time in the name, not the order written.
        for seconds in [100, 90, 110, 9] {
            write(&dir, "srv", 42, seconds, "{\"n\":1}", 2).unwrap();
        }
        assert_eq!(
            names(&dir),
            [
                "notes.txt",
                "srv-42-100.json",
                "srv-42-110.json",
                "srv-7-50.json",
                "srv_2-42-5.json"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("srv-42-110.json")).unwrap(),
            "{\"n\":1}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_comm_cannot_leave_the_directory() {
        assert_eq!(file_comm("../etc/x"), "_.._etc_x");
        assert_eq!(file_comm("kworker/0:1"), "kworker_0_1");
        assert_eq!(file_comm(""), "_");
        assert_eq!(file_comm("srv-2"), "srv_2");
    }

    #[test]
    fn an_unwritable_directory_is_an_error() {
        let err = write(Path::new("/nonexistent/dir"), "a", 1, 1, "{}", 1).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/dir"), "{err:#}");
    }
}
