//! Criterion's medians, read back after a run for the side-by-side tables of
//! `benches/overhead.rs` and `benches/shared.rs`: [`Estimate`], one
//! benchmark's median with its confidence interval, and where criterion
//! keeps them.
//!
//! Each bench includes it with `#[path = "common/estimates.rs"] mod
//! estimates;`. It lives in a subfolder without a `main.rs`, so cargo does
//! not build it as a bench of its own.

use std::{path::PathBuf, time::SystemTime};

/// A median in nanoseconds, with its confidence interval.
pub(crate) struct Estimate {
    pub(crate) median: f64,
    pub(crate) lower: f64,
    pub(crate) upper: f64,
}

impl Estimate {
    /// The median criterion wrote for `id` during this run, if any.
    pub(crate) fn read(id: &str, started: SystemTime) -> Option<Self> {
        let path = criterion_home().join(id).join("new/estimates.json");
        if std::fs::metadata(&path).ok()?.modified().ok()? < started {
            return None;
        }
        let json = std::fs::read_to_string(path).ok()?;
        // `"median":{"confidence_interval":{…,"lower_bound":…,"upper_bound":…},"point_estimate":…}`
        let median = &json[json.find("\"median\"")?..];
        let number = |key: &str| -> Option<f64> {
            let rest = &median[median.find(key)? + key.len()..];
            let rest = rest.trim_start_matches([' ', ':']);
            rest[..rest.find([',', '}'])?].trim().parse().ok()
        };
        Some(Self {
            median: number("\"point_estimate\"")?,
            lower: number("\"lower_bound\"")?,
            upper: number("\"upper_bound\"")?,
        })
    }

    /// The median and its interval with `digits` decimals, as
    /// `3.21 ns (3.19–3.24)`, or `-` for none.
    pub(crate) fn show(estimate: &Option<Self>, digits: usize) -> String {
        match estimate {
            Some(e) => format!(
                "{:.digits$} ns ({:.digits$}–{:.digits$})",
                e.median, e.lower, e.upper
            ),
            None => "-".into(),
        }
    }
}

/// Where criterion writes its estimates, found as criterion finds it.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}
