//! Per-request cost of a shared, clone-able client on a healthy connection.
//!
//! Two handles over the same no-op connection
//! (`service_fn(|x: u64| ready(Ok(x)))`), side by side in one group:
//!
//! - `buffer_reconnect`: `tower::buffer::Buffer` over
//!   `tower::reconnect::Reconnect`, which is what tonic's `Channel` is;
//! - `redial_shared`: `redial::Reconnect::new(make, ()).spawn(1024)`.
//!
//! Both queue up to 1,024 requests for a worker task, on a tokio
//! multi-thread runtime with 2 workers. Each is measured with 1 caller and
//! with 64 concurrent callers: a sample of `n` requests spawns the callers,
//! each with its own clone of the handle, splits the `n` requests among
//! them (each `ready().await`, `call`, then awaits the response), and times
//! the whole batch. Criterion's time per iteration is thus the time per
//! request, at that concurrency; spawning the callers is a fixed cost of a
//! few microseconds per sample, spread over thousands of requests.
//!
//! Both sides cross threads for every request (caller, worker, caller), so
//! the result depends on how the OS and tokio schedule the two workers: on
//! a small machine it can change by 2× from one run to the next, for both
//! handles. Compare the ratio over several runs on a quiet machine.
//!
//! Run with `cargo bench --bench shared`; add
//! `-- --warm-up-time 1 --measurement-time 3` for a quick look. After
//! criterion's report, a table gives the medians side by side and their
//! ratio.

#[path = "common/estimates.rs"]
mod estimates;
#[path = "common/interleave.rs"]
mod interleave;
#[path = "common/noop.rs"]
mod noop;

use std::{
    fmt,
    hint::black_box,
    time::{Duration, SystemTime},
};

use criterion::{criterion_group, BenchmarkId, Criterion};
use estimates::Estimate;
use interleave::interleave;
use noop::make;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// The concurrent callers of each measurement.
const CALLERS: [u64; 2] = [1, 64];

/// Sends `requests` requests through `svc` from `callers` tasks at once, and
/// returns how long they took.
async fn batch<S>(svc: &S, callers: u64, requests: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: fmt::Debug,
{
    let clones: Vec<S> = (0..callers).map(|_| svc.clone()).collect();
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .zip(clones)
        .map(|(caller, mut svc)| {
            let share = requests / callers + u64::from(caller < requests % callers);
            tokio::spawn(async move {
                for req in 0..share {
                    let svc = svc.ready().await.expect("handle ready");
                    let res = svc.call(black_box(req)).await.expect("response");
                    assert_eq!(res, req);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller task");
    }
    start.elapsed()
}

fn shared(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Both handles spawn their worker task when built.
    let _guard = rt.enter();

    // The connection answers every request at once with the request; the
    // make service hands it out.
    let buffer = tower::buffer::Buffer::new(tower::reconnect::Reconnect::new(make(), ()), 1024);
    let redial = redial::Reconnect::new(make(), ()).spawn(1024);
    let watch = redial.watch();

    // Connect both before measuring, and check that they did.
    rt.block_on(async {
        watch.connected().await.expect("redial connects");
        assert_eq!(buffer.clone().oneshot(7).await.expect("buffer"), 7);
        assert_eq!(redial.clone().oneshot(7).await.expect("redial"), 7);
    });

    let mut group = c.benchmark_group("shared");
    for callers in CALLERS {
        group.bench_with_input(
            BenchmarkId::new("buffer_reconnect", callers),
            &callers,
            |b, &callers| b.to_async(&rt).iter_custom(|n| batch(&buffer, callers, n)),
        );
        group.bench_with_input(
            BenchmarkId::new("redial_shared", callers),
            &callers,
            |b, &callers| b.to_async(&rt).iter_custom(|n| batch(&redial, callers, n)),
        );
    }
    group.finish();

    interleaved(&rt, &buffer, &redial);

    // Measuring went through the connection made above: no reconnect.
    assert_eq!(watch.state().connects(), 1);
}

/// Requests per handle per round of the interleaved pass.
const ROUND: u64 = 2_000;

/// The interleaved pass (`common/interleave.rs`): round after round, a
/// batch through each handle in turn, so that whatever the machine and the
/// scheduler do (on two workers a caller and the worker task may share a
/// thread for a whole run or never, which moves either handle's time by
/// 1.5× from one run to the next) falls on both alike. Reports the medians
/// and the median of the per-round ratio, which is what to quote.
fn interleaved<B, R>(rt: &tokio::runtime::Runtime, buffer: &B, redial: &R)
where
    B: Service<u64, Response = u64> + Clone + Send + 'static,
    B::Future: Send,
    B::Error: fmt::Debug,
    R: Service<u64, Response = u64> + Clone + Send + 'static,
    R::Future: Send,
    R::Error: fmt::Debug,
{
    let rounds = interleave::rounds(200);
    println!(
        "\nshared, interleaved: {rounds} rounds of {ROUND} requests per handle, ns per request"
    );
    println!(
        "{:>8}  {:>12}  {:>12}  {:>22}  {:>14}",
        "callers", "Buffer p50", "Shared p50", "Shared / Buffer p50", "Shared faster"
    );
    for callers in CALLERS {
        let pass = interleave(
            rt,
            rounds,
            || batch(buffer, callers, ROUND),
            || batch(redial, callers, ROUND),
        );
        let per = |secs: f64| secs * 1e9 / ROUND as f64;
        println!(
            "{callers:>8}  {:>12.1}  {:>12.1}  {:>21.2}×  {:>8} of {rounds}",
            per(pass.median_of(|buffer, _| buffer)),
            per(pass.median_of(|_, redial| redial)),
            pass.median_of(|buffer, redial| redial / buffer),
            pass.b_faster(),
        );
    }
}

criterion_group!(benches, shared);

fn main() {
    if let Ok(spec) = std::env::var("REDIAL_INSTRUCTIONS") {
        return instructions(&spec);
    }
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    table(started);
}

// ===== instruction counts =====

/// `REDIAL_INSTRUCTIONS=<buffer|redial>:<requests>[:<callers>]`: sends that
/// many requests through one handle from one caller (or that many) on a
/// current-thread runtime,
/// and exits, for `valgrind --tool=callgrind`. Two runs with different
/// counts give the instructions per request (their difference over the
/// difference in requests), repeatable whatever else the machine does.
fn instructions(spec: &str) {
    let mut parts = spec.split(':');
    let which = parts.next().unwrap_or_default();
    let n: u64 = parts
        .next()
        .and_then(|n| n.parse().ok())
        .expect("REDIAL_INSTRUCTIONS=<buffer|redial>:<requests>[:<callers>]");
    let callers: u64 = parts
        .next()
        .map_or(1, |c| c.parse().expect("a caller count"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _guard = rt.enter();
    rt.block_on(async {
        match which {
            "buffer" => {
                let svc =
                    tower::buffer::Buffer::new(tower::reconnect::Reconnect::new(make(), ()), 1024);
                batch(&svc, callers, n).await
            }
            "redial" => {
                let svc = redial::Reconnect::new(make(), ()).spawn(1024);
                batch(&svc, callers, n).await
            }
            other => panic!("unknown handle {other:?}"),
        }
    });
}

// ===== the side-by-side table =====

/// Prints the medians this run measured side by side, read back from
/// criterion's estimates; prints nothing when criterion measured nothing
/// (`--test`, `--list`, or a filter that left this group out).
fn table(started: SystemTime) {
    let medians: Vec<[Option<Estimate>; 2]> = CALLERS
        .iter()
        .map(|callers| {
            ["buffer_reconnect", "redial_shared"]
                .map(|name| Estimate::read(&format!("shared/{name}/{callers}"), started))
        })
        .collect();
    if medians.iter().flatten().all(Option::is_none) {
        return;
    }
    println!("\nshared: median time per request (95 % confidence interval of the median)");
    println!(
        "{:>8}  {:>30}  {:>30}  {:>15}",
        "callers", "Buffer<tower Reconnect>", "redial Shared", "Shared / Buffer"
    );
    for (callers, [buffer, redial]) in CALLERS.iter().zip(&medians) {
        let ratio = match (buffer, redial) {
            (Some(b), Some(r)) => format!("{:.2}×", r.median / b.median),
            _ => "-".into(),
        };
        println!(
            "{callers:>8}  {:>30}  {:>30}  {ratio:>15}",
            Estimate::show(buffer, 1),
            Estimate::show(redial, 1),
        );
    }
}
