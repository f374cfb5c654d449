//! Units as a person reads them, for every layer that writes text (analysis reasons, reports,
//! the status line): a leaf module, so that writing a reason does not depend on the report.

/// Durations as a person reads them: 950ns, 12.3us, 4.5ms, 2.00s, 3m05s.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        1_000_000_000..60_000_000_000 => format!("{:.2}s", ns as f64 / 1e9),
        _ => {
            let secs = ns / 1_000_000_000;
            format!("{}m{:02}s", secs / 60, secs % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_ns(950), "950ns");
        assert_eq!(human_ns(12_300), "12.3us");
        assert_eq!(human_ns(2_000_000_000), "2.00s");
        assert_eq!(human_ns(185_000_000_000), "3m05s");
    }
}
