//! The interleaved pass of the side-by-side benches: round after round, one
//! batch through each client in turn, which goes first alternating, so that
//! whatever else the machine does (another build, the OS moving threads,
//! tokio's workers sharing a thread for a while or not) falls on both sides
//! alike. What to quote is the median of the per-round ratio.
//!
//! `benches/shared.rs`, `benches/grpc.rs` and `benches/https.rs` include it
//! with `#[path = "common/interleave.rs"] mod interleave;`. It lives in a
//! subfolder without a `main.rs`, so cargo does not build it as a bench of
//! its own.

use std::{future::Future, time::Duration};

use tokio::runtime::Runtime;

/// The rounds of an interleaved pass: `default`, or `REDIAL_ROUNDS` to
/// shorten or lengthen it. `cargo bench` passes `--bench`; `cargo test
/// --benches` does not, and then one round checks that the pass runs.
pub(crate) fn rounds(default: usize) -> usize {
    if !std::env::args().any(|arg| arg == "--bench") {
        return 1;
    }
    match std::env::var("REDIAL_ROUNDS") {
        Ok(n) => n
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .expect("REDIAL_ROUNDS takes a whole number above 0"),
        Err(_) => default,
    }
}

/// Each round's time for side `a` and side `b`.
pub(crate) struct Rounds(Vec<[Duration; 2]>);

/// Runs `rounds` rounds on `rt`: each awaits one batch of `a` and one of
/// `b`, `a` first in even rounds and `b` first in odd ones. Each batch
/// returns the time it took.
pub(crate) fn interleave<A, B, FA, FB>(rt: &Runtime, rounds: usize, mut a: A, mut b: B) -> Rounds
where
    A: FnMut() -> FA,
    B: FnMut() -> FB,
    FA: Future<Output = Duration>,
    FB: Future<Output = Duration>,
{
    let times = (0..rounds)
        .map(|round| {
            rt.block_on(async {
                if round % 2 == 0 {
                    let ta = a().await;
                    [ta, b().await]
                } else {
                    let tb = b().await;
                    [a().await, tb]
                }
            })
        })
        .collect();
    Rounds(times)
}

impl Rounds {
    /// The median over rounds of `f(a, b)`, each side's time in seconds:
    /// `|a, _| a` for `a`'s median time, `|a, b| b / a` for the ratio of
    /// `b`'s time to `a`'s, `|a, b| a / b` for that of their throughputs.
    pub(crate) fn median_of(&self, f: impl Fn(f64, f64) -> f64) -> f64 {
        median(
            self.0
                .iter()
                .map(|[a, b]| f(a.as_secs_f64(), b.as_secs_f64()))
                .collect(),
        )
    }

    /// The rounds in which `b` took less time than `a`.
    pub(crate) fn b_faster(&self) -> usize {
        self.0.iter().filter(|[a, b]| b < a).count()
    }
}

/// The median (the upper one of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
