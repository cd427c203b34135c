//! Heap allocations per request on a healthy connection, counted by a
//! global allocator: none through `Reconnect`, with or without a classifier.
//!
//! Each thread counts its own allocations, so the test harness and the
//! other tests of this binary, running on their own threads, do not disturb
//! the count.

mod support;

use std::{
    fmt,
    hint::black_box,
    task::{Context, Waker},
};

use redial::ReconnectLayer;
use support::{
    alloc::{Counting, ThreadAllocations},
    echo::{make_echo, request, runtime},
};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static GLOBAL: Counting<ThreadAllocations> = Counting::new();

/// How many allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ThreadAllocations::count();
    f();
    ThreadAllocations::count() - before
}

const REQUESTS: u64 = 10_000;

/// Connects `svc` and makes a few requests, then counts the allocations of
/// `REQUESTS` more.
fn steady_allocations<S>(mut svc: S) -> usize
where
    S: Service<u64, Response = u64>,
    S::Error: fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    for n in 0..100 {
        assert_eq!(request(&mut svc, &mut cx, n), n);
    }
    allocations(|| {
        for n in 0..REQUESTS {
            assert_eq!(request(&mut svc, &mut cx, black_box(n)), n);
        }
    })
}

/// The counter sees allocations made on this thread, and only those.
#[test]
fn counter_counts_this_thread() {
    assert_eq!(allocations(|| drop(black_box(Box::new(1u64)))), 1);
    assert_eq!(allocations(|| drop(black_box(vec![1u8; 64]))), 1);
    // Another thread's allocations are not counted.
    let other = std::thread::spawn(|| {
        for _ in 0..1000 {
            drop(black_box(Box::new(1u64)));
        }
    });
    assert_eq!(
        allocations(|| std::thread::sleep(std::time::Duration::from_millis(5))),
        0
    );
    other.join().unwrap();
}

/// A connected `Reconnect` with default settings makes no heap allocation
/// per request.
#[test]
fn reconnect_steady_path_allocates_nothing() {
    let rt = runtime();
    let _guard = rt.enter();
    let svc = redial::Reconnect::new(make_echo(), ());
    let watch = svc.watch();
    assert_eq!(steady_allocations(svc), 0);
    assert_eq!(watch.state().connects(), 1);
}

/// With a `disconnect_on` classifier, each response future holds a clone of
/// an `Arc` to report fatal errors: a reference count, not an allocation.
#[test]
fn classifier_steady_path_allocates_nothing() {
    let rt = runtime();
    let _guard = rt.enter();
    let svc = ReconnectLayer::new(())
        .disconnect_on(|err| err.is::<std::io::Error>())
        .layer(make_echo());
    let watch = svc.watch();
    assert_eq!(steady_allocations(svc), 0);
    assert_eq!(watch.state().connects(), 1);
}

/// For comparison, `tower::reconnect::Reconnect` allocates nothing per
/// request either: the zero above is the baseline, not a lucky inner service.
#[test]
fn tower_reconnect_steady_path_allocates_nothing() {
    assert_eq!(
        steady_allocations(tower::reconnect::Reconnect::new(make_echo(), ())),
        0
    );
}

/// Allocations per request through a handle shared over a queue, on a
/// current-thread runtime so the worker's allocations are counted too:
/// redial's `Shared` makes no more than `Buffer<tower::reconnect::Reconnect>`.
#[test]
fn shared_allocates_no_more_than_buffer() {
    let rt = runtime();
    async fn count<S>(mut svc: S) -> usize
    where
        S: Service<u64, Response = u64>,
        S::Error: fmt::Debug,
    {
        for n in 0..100 {
            assert_eq!(svc.ready().await.unwrap().call(n).await.unwrap(), n);
        }
        let before = ThreadAllocations::count();
        for n in 0..REQUESTS {
            let res = svc.ready().await.unwrap().call(black_box(n)).await;
            assert_eq!(res.unwrap(), n);
        }
        ThreadAllocations::count() - before
    }
    let (buffer, shared) = rt.block_on(async {
        let buffer = count(tower::buffer::Buffer::new(
            tower::reconnect::Reconnect::new(make_echo(), ()),
            1024,
        ))
        .await;
        let shared = count(redial::Reconnect::new(make_echo(), ()).spawn(1024)).await;
        (buffer, shared)
    });
    // Both send each request with a `tokio::sync::oneshot` for its response
    // future: one allocation per request (1.000 each when written).
    println!(
        "allocations per request: Buffer<Reconnect> {:.3}, Shared {:.3}",
        buffer as f64 / REQUESTS as f64,
        shared as f64 / REQUESTS as f64,
    );
    assert!(shared <= buffer, "Shared {shared} > Buffer {buffer}");
}

/// A pool of four makes no more allocations per request than one shared
/// handle: choosing the connection and counting its load allocate nothing.
#[test]
fn pool_allocates_no_more_than_shared() {
    let rt = runtime();
    async fn count<S>(mut svc: S) -> usize
    where
        S: Service<u64, Response = u64>,
        S::Error: fmt::Debug,
    {
        // Enough for every connection's queue to have made (and recycled)
        // its blocks, as one handle's has after 100.
        for n in 0..1_000 {
            assert_eq!(svc.ready().await.unwrap().call(n).await.unwrap(), n);
        }
        let before = ThreadAllocations::count();
        for n in 0..REQUESTS {
            let res = svc.ready().await.unwrap().call(black_box(n)).await;
            assert_eq!(res.unwrap(), n);
        }
        ThreadAllocations::count() - before
    }
    let (shared, pool) = rt.block_on(async {
        let shared = count(redial::Reconnect::new(make_echo(), ()).spawn(1024)).await;
        let pool = ReconnectLayer::new(()).pool(4).layer(make_echo());
        pool.watch().connected().await.unwrap();
        let pool = count(pool).await;
        (shared, pool)
    });
    println!(
        "allocations per request: Shared {:.3}, Pool of 4 {:.3}",
        shared as f64 / REQUESTS as f64,
        pool as f64 / REQUESTS as f64,
    );
    assert!(pool <= shared, "Pool {pool} > Shared {shared}");
}

/// A clone per request, as tower's docs suggest for a shared service,
/// allocates no more than one handle used again and again: while the queue
/// has room, a fresh handle takes its slot without building the waiting
/// machinery (tokio-util's `PollSender`) that only a full queue needs.
#[test]
fn shared_clone_per_request_allocates_no_more_than_one_handle() {
    let rt = runtime();
    async fn count<S>(svc: &S, fresh: bool) -> usize
    where
        S: Service<u64, Response = u64> + Clone,
        S::Error: fmt::Debug,
    {
        let mut reused = svc.clone();
        let before = ThreadAllocations::count();
        for n in 0..REQUESTS {
            let mut clone;
            let handle = if fresh {
                clone = svc.clone();
                &mut clone
            } else {
                &mut reused
            };
            let res = handle.ready().await.unwrap().call(black_box(n)).await;
            assert_eq!(res.unwrap(), n);
        }
        ThreadAllocations::count() - before
    }
    let (reused, fresh) = rt.block_on(async {
        let shared = redial::Reconnect::new(make_echo(), ()).spawn(1024);
        for n in 0..100 {
            assert_eq!(shared.clone().oneshot(n).await.unwrap(), n);
        }
        (count(&shared, false).await, count(&shared, true).await)
    });
    println!(
        "allocations per request: one handle {:.3}, a clone each {:.3}",
        reused as f64 / REQUESTS as f64,
        fresh as f64 / REQUESTS as f64,
    );
    assert!(
        fresh <= reused,
        "a clone each {fresh} > one handle {reused}"
    );
}
