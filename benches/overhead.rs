//! Per-request overhead of `redial::Reconnect` on a healthy connection.
//!
//! One request is `poll_ready`, `call`, and one poll of the response future,
//! against a no-op connection (`service_fn(|x: u64| ready(Ok(x)))`) reached
//! three ways, side by side in one group:
//!
//! - `direct`: the connection itself, the baseline;
//! - `tower_reconnect`: through `tower::reconnect::Reconnect`;
//! - `redial`: through `redial::Reconnect` with its default settings.
//!
//! Every future is ready at once, so the loop polls with a no-op waker and
//! needs no executor; what is left is the cost of the middleware's state
//! machine. Connecting happens once, before measuring.
//!
//! Run with `cargo bench --bench overhead`; add
//! `-- --warm-up-time 1 --measurement-time 3` for a quick look. After
//! criterion's report, a table gives the medians side by side, redial's
//! ratio to `tower_reconnect` and its distance from `direct`.

#[path = "common/estimates.rs"]
mod estimates;
#[path = "common/noop.rs"]
mod noop;

use std::{
    fmt,
    future::Future,
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::SystemTime,
};

use criterion::{criterion_group, Criterion};
use estimates::Estimate;
use noop::{connection, make};
use tower::Service;

/// One request: `poll_ready`, `call`, one poll of the response future.
fn request<S>(svc: &mut S, cx: &mut Context<'_>, req: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: fmt::Debug,
{
    let Poll::Ready(Ok(())) = svc.poll_ready(cx) else {
        panic!("service not ready on a healthy connection");
    };
    match pin!(svc.call(req)).poll(cx) {
        Poll::Ready(Ok(res)) => res,
        Poll::Ready(Err(err)) => panic!("request failed: {err:?}"),
        Poll::Pending => panic!("response future of a no-op service is pending"),
    }
}

fn overhead(c: &mut Criterion) {
    let mut cx = Context::from_waker(Waker::noop());

    // `redial::Reconnect` arms its tokio timer while connecting, which needs
    // a runtime context; once connected it touches no timer.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let _guard = rt.enter();

    // The connection answers every request at once with the request; the
    // make service hands it out.
    let mut direct = connection();
    let mut tower_reconnect = tower::reconnect::Reconnect::new(make(), ());
    let mut redial = redial::Reconnect::new(make(), ());

    // Connect both before measuring, and check that they did.
    assert_eq!(request(&mut tower_reconnect, &mut cx, 7), 7);
    assert_eq!(request(&mut redial, &mut cx, 7), 7);
    assert!(redial.watch().is_connected());

    let mut group = c.benchmark_group("overhead");
    group.bench_function("direct", |b| {
        b.iter(|| request(&mut direct, &mut cx, black_box(1)))
    });
    group.bench_function("tower_reconnect", |b| {
        b.iter(|| request(&mut tower_reconnect, &mut cx, black_box(1)))
    });
    group.bench_function("redial", |b| {
        b.iter(|| request(&mut redial, &mut cx, black_box(1)))
    });
    group.finish();

    // Measuring went through the connection made above: no reconnect.
    assert_eq!(redial.watch().state().connects(), 1);
}

criterion_group!(benches, overhead);

fn main() {
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    table(started);
}

// ===== the side-by-side table =====

/// The benchmarks of the group, in the table's order.
const NAMES: [&str; 3] = ["direct", "tower_reconnect", "redial"];

/// Prints the medians this run measured side by side, read back from
/// criterion's estimates; prints nothing when criterion measured nothing
/// (`--test`, `--list`, or a filter that left this group out).
fn table(started: SystemTime) {
    let [direct, tower, redial] =
        NAMES.map(|name| Estimate::read(&format!("overhead/{name}"), started));
    if [&direct, &tower, &redial].iter().all(|e| e.is_none()) {
        return;
    }
    println!("\noverhead: median time per request (95 % confidence interval of the median)");
    for (name, estimate) in NAMES.iter().zip([&direct, &tower, &redial]) {
        println!("{name:>16}  {}", Estimate::show(estimate, 2));
    }
    if let (Some(t), Some(r)) = (&tower, &redial) {
        println!("redial / tower_reconnect: {:.2}×", r.median / t.median);
    }
    if let (Some(d), Some(r)) = (&direct, &redial) {
        println!("redial − direct: {:+.2} ns", r.median - d.median);
    }
}
