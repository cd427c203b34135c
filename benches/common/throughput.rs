//! Calls per second through two clients of one local server, side by side:
//! what `benches/grpc.rs` and `benches/https.rs` share.
//!
//! A [`Caller`] makes one call and checks its answer. A batch spreads a
//! number of calls over N concurrent caller tasks, each with its own clone
//! of the client, and times the whole batch. [`criterion`] measures a batch
//! per call count for criterion's own report (time and calls/s per call);
//! [`compare`] then runs the interleaved pass (`common/interleave.rs`) and
//! prints the side-by-side table. [`calls_only`] runs one client alone, for
//! a profiler.
//!
//! Each bench includes it with `#[path = "common/throughput.rs"] mod
//! throughput;`, after `common/interleave.rs` as `interleave`.

use std::{future::Future, time::Duration};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use tokio::{runtime::Runtime, time::Instant};

use crate::interleave::{interleave, rounds};

/// A client handle that makes one call, awaited to its end (the response
/// body included) and checked.
pub(crate) trait Caller: Clone + Send + 'static {
    fn call(&mut self) -> impl Future<Output = ()> + Send;
}

/// Makes `calls` calls through `client` from `callers` tasks at once, each
/// with its own clone, and returns how long they took. Cloning is set-up,
/// not timed; spawning the tasks is, a few microseconds per batch.
pub(crate) async fn batch<C: Caller>(client: &C, callers: u64, calls: u64) -> Duration {
    let clones: Vec<C> = (0..callers).map(|_| client.clone()).collect();
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .zip(clones)
        .map(|(caller, mut client)| {
            let share = calls / callers + u64::from(caller < calls % callers);
            tokio::spawn(async move {
                for _ in 0..share {
                    client.call().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller task");
    }
    start.elapsed()
}

/// Criterion's group `group`: `alt_name` and `redial`, per caller count
/// in `callers`. Criterion's time per iteration is the time per call.
pub(crate) fn criterion<A: Caller, R: Caller>(
    c: &mut Criterion,
    rt: &Runtime,
    group: &str,
    (alt_name, alt): (&str, &A),
    redial: &R,
    callers: &[u64],
) {
    let mut group = c.benchmark_group(group);
    // Every call crosses the loopback and three threads: flat sampling
    // keeps each sample's batch as large as the next.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    for &callers in callers {
        group.bench_with_input(BenchmarkId::new(alt_name, callers), &callers, |b, &n| {
            b.to_async(rt).iter_custom(|calls| batch(alt, n, calls))
        });
        group.bench_with_input(BenchmarkId::new("redial", callers), &callers, |b, &n| {
            b.to_async(rt).iter_custom(|calls| batch(redial, n, calls))
        });
    }
    group.finish();
}

/// The interleaved pass: for each caller count in `callers`, `rounds` rounds (default
/// `default_rounds`, `REDIAL_ROUNDS` to change it) of `per_round(callers)`
/// calls through each client, and a table of calls per second.
pub(crate) fn compare<A: Caller, R: Caller>(
    rt: &Runtime,
    group: &str,
    (alt_name, alt): (&str, &A),
    redial: &R,
    callers: &[u64],
    default_rounds: usize,
    per_round: impl Fn(u64) -> u64,
) {
    let rounds = rounds(default_rounds);
    println!(
        "\n{group}, interleaved: {rounds} rounds per row, calls per second \
         (median of rounds); redial / {alt_name} is the median of the per-round \
         ratio of throughputs"
    );
    println!(
        "{:>8}  {:>15}  {:>16}  {:>16}  {:>16}  {:>14}",
        "callers",
        "calls per round",
        format!("{alt_name} calls/s"),
        "redial calls/s",
        format!("redial / {alt_name}"),
        "redial faster"
    );
    for &callers in callers {
        let calls = per_round(callers);
        let pass = interleave(
            rt,
            rounds,
            || batch(alt, callers, calls),
            || batch(redial, callers, calls),
        );
        let rate = |secs: f64| calls as f64 / secs;
        println!(
            "{callers:>8}  {calls:>15}  {:>16.0}  {:>16.0}  {:>15.2}×  {:>8} of {rounds}",
            rate(pass.median_of(|alt, _| alt)),
            rate(pass.median_of(|_, redial| redial)),
            pass.median_of(|alt, redial| alt / redial),
            pass.b_faster(),
        );
    }
}

/// `REDIAL_CALLS=<alt_name|redial>:<calls>[:<callers>]`: makes that many
/// calls through that one client (from 1 caller, or that many), prints the
/// time they took, and returns `true`, for a profiler (`perf stat`, `perf
/// record`, `valgrind --tool=callgrind`): two runs with different counts
/// give a client's cost per call, the difference of the two over the
/// difference in calls. Returns `false` without the variable.
pub(crate) fn calls_only<A: Caller, R: Caller>(
    rt: &Runtime,
    (alt_name, alt): (&str, &A),
    redial: &R,
) -> bool {
    let Ok(spec) = std::env::var("REDIAL_CALLS") else {
        return false;
    };
    let usage = format!("REDIAL_CALLS=<{alt_name}|redial>:<calls>[:<callers>]");
    let mut parts = spec.split(':');
    let which = parts.next().unwrap_or_default();
    let calls: u64 = parts.next().and_then(|n| n.parse().ok()).expect(&usage);
    let callers: u64 = parts.next().map_or(1, |n| n.parse().expect(&usage));
    let took = match which {
        "redial" => rt.block_on(batch(redial, callers, calls)),
        name if name == alt_name => rt.block_on(batch(alt, callers, calls)),
        _ => panic!("{usage}"),
    };
    println!("{which}: {calls} calls from {callers} callers in {took:.2?}");
    true
}
