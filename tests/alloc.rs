//! Heap allocations per request on a healthy connection, counted by a
//! global allocator: none through `Reconnect`, with or without a classifier.
//!
//! Each thread counts its own allocations, so the test harness and the
//! other tests of this binary, running on their own threads, do not disturb
//! the count.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    convert::Infallible,
    fmt,
    future::{ready, Future, Ready},
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
};

use redial::ReconnectLayer;
use tower::{service_fn, util::ServiceFn, Layer, Service, ServiceExt};

/// `System`, counting the allocations (and reallocations) of each thread
/// apart, so that tests running in parallel do not count each other's.
struct Counting;

thread_local! {
    // Const-initialised and without a destructor: using it allocates
    // nothing, so it is safe inside the allocator.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn counted() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed unchanged to `System`; counting touches
// only a const thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const REQUESTS: u64 = 10_000;

/// One request as the overhead bench makes it: `poll_ready`, `call`, and one
/// poll of the response future, with a no-op waker and no executor.
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

/// A connection that answers every request at once with the request.
type Conn = ServiceFn<fn(u64) -> Ready<Result<u64, Infallible>>>;

/// A make service whose future is `std::future::Ready` (`Unpin`, as
/// `tower::reconnect` requires), handing out a `Conn`.
type Make = ServiceFn<fn(()) -> Ready<Result<Conn, Infallible>>>;

fn make() -> Make {
    service_fn(|()| ready(Ok(service_fn(|x| ready(Ok(x))))))
}

/// The connecting `Reconnect` arms a tokio timer, which needs a runtime.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
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
    let svc = redial::Reconnect::new(make(), ());
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
        .layer(make());
    let watch = svc.watch();
    assert_eq!(steady_allocations(svc), 0);
    assert_eq!(watch.state().connects(), 1);
}

/// For comparison, `tower::reconnect::Reconnect` allocates nothing per
/// request either: the zero above is the baseline, not a lucky inner service.
#[test]
fn tower_reconnect_steady_path_allocates_nothing() {
    assert_eq!(
        steady_allocations(tower::reconnect::Reconnect::new(make(), ())),
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
        let before = ALLOCATIONS.with(Cell::get);
        for n in 0..REQUESTS {
            let res = svc.ready().await.unwrap().call(black_box(n)).await;
            assert_eq!(res.unwrap(), n);
        }
        ALLOCATIONS.with(Cell::get) - before
    }
    let (buffer, shared) = rt.block_on(async {
        let buffer = count(tower::buffer::Buffer::new(
            tower::reconnect::Reconnect::new(make(), ()),
            1024,
        ))
        .await;
        let shared = count(redial::Reconnect::new(make(), ()).spawn(1024)).await;
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
