//! Memory: the size of a `Reconnect` and of a `Shared` handle, the heap each
//! holds, and no growth over 100,000 connect/disconnect cycles, measured by
//! a global allocator that keeps the live bytes of each thread.
//!
//! Each thread keeps its own count, so tests running in parallel do not
//! count each other's memory. Everything measured runs on the test's own
//! thread (a current-thread runtime).

mod support;

use std::{
    convert::Infallible,
    fmt,
    future::{ready, Future, Ready},
    hint::black_box,
    mem::size_of,
    pin::pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use redial::{error::Unavailable, future::ResponseFuture, Reconnect, Shared};
use support::{
    alloc::{Counting, ThreadLive},
    echo::{make_echo, request, runtime, MakeEcho},
};
use tower::{Service, ServiceExt};

#[global_allocator]
static GLOBAL: Counting<ThreadLive> = Counting::new();

/// This thread's live heap bytes.
fn live() -> isize {
    ThreadLive::live()
}

type EchoReconnect = Reconnect<MakeEcho, ()>;
type EchoShared = Shared<u64, ResponseFuture<Ready<Result<u64, Infallible>>>>;

/// A `Reconnect` and a `Shared` handle stay small enough to embed by value
/// and to clone per caller.
///
/// It guards numbers, not behaviour: it fails when one grows past its bound
/// (the measured figure plus a little slack, in the comments below). A
/// change that grows one on purpose raises the bound to the new measurement
/// and says why.
#[test]
fn sizes() {
    let reconnect = size_of::<EchoReconnect>();
    let shared = size_of::<EchoShared>();
    println!("size_of Reconnect<MakeEcho, ()> = {reconnect} bytes");
    println!("size_of Shared<u64, ..> = {shared} bytes");
    println!(
        "size_of tower::reconnect::Reconnect<MakeEcho, ()> = {} bytes",
        size_of::<tower::reconnect::Reconnect<MakeEcho, ()>>()
    );
    println!(
        "size_of tower::buffer::Buffer<u64, ..> = {} bytes",
        size_of::<tower::buffer::Buffer<u64, Ready<Result<u64, tower::BoxError>>>>()
    );
    // Measured 400 bytes on x86_64: the settings (with the backoff policy,
    // and the idle and wait timeouts and the maximum age, 48 of them), the
    // running schedule (which copies the policy's numbers), the state enum,
    // three instants, the counters, the boxed timer and the wait's, the
    // idle timeout's shared activity, the maximum age's boxed ageing, the
    // make service and target (zero-sized here); the make future is boxed,
    // the connection held inline. The bound leaves a word of slack.
    assert!(reconnect <= 408, "Reconnect is {reconnect} bytes");
    // Measured 72 bytes: the queue's sender, a reserved slot, the boxed
    // slow path (`PollSender`, made only once the queue was full), the
    // shared `Arc` and the watch (receiver and edges); it does not depend on
    // the make service or the connection.
    assert!(shared <= 80, "Shared is {shared} bytes");
}

/// The heap a connected `Reconnect` holds, and what it leaves behind when
/// dropped: nothing.
///
/// It guards numbers, not behaviour: it fails when one grows past its bound
/// (the measured figure plus a little slack, in the comments below). A
/// change that grows one on purpose raises the bound to the new measurement
/// and says why.
#[test]
fn heap_per_reconnect() {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    let start = live();
    let mut svc = Reconnect::new(make_echo(), ());
    let idle = live() - start;
    assert_eq!(request(&mut svc, &mut cx, 1), 1);
    let connected = live() - start;
    drop(svc);
    let dropped = live() - start;
    println!(
        "heap of a Reconnect: {idle} bytes idle, {connected} connected, {dropped} once dropped"
    );
    // Measured 528 bytes: the watch channel's shared state (a tokio `watch`
    // of `ConnectionState`, 416 bytes) and the edges `connected()` and
    // `disconnected()` wait on (112, with the slot a pool's connection
    // keeps its membership in); once connected the connect timer and the
    // make future are freed. The bound leaves a word of slack.
    assert!(
        idle <= 536 && connected == idle,
        "{idle} bytes idle, {connected} connected"
    );
    assert_eq!(dropped, 0);
}

/// What `make` costs on the heap once its service is up, what each clone
/// that has sent a request adds (its own size included), and what is left
/// once every handle is dropped and the task ended.
async fn heap_of_handle<S>(make: impl FnOnce() -> S) -> (isize, isize, isize)
where
    S: Service<u64, Response = u64> + Clone,
    S::Error: fmt::Debug,
{
    const CLONES: usize = 100;
    let start = live();
    let mut svc = make();
    assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), 0);
    let spawned = live() - start;
    let before = live();
    let mut clones = vec![svc.clone(); CLONES];
    for (n, clone) in clones.iter_mut().enumerate() {
        let n = n as u64;
        assert_eq!(clone.ready().await.unwrap().call(n).await.unwrap(), n);
    }
    let per_clone = (live() - before) / CLONES as isize;
    drop((svc, clones));
    // Let the task see the queue close and end.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    (spawned, per_clone, live() - start)
}

/// The heap of the task and queue behind a `Shared` handle, and what each
/// clone adds, side by side with `Buffer<tower::reconnect::Reconnect>`.
///
/// It guards numbers, not behaviour: it fails when one grows past its bound
/// (the measured figure plus a little slack, in the comments below). A
/// change that grows one on purpose raises the bound to the new measurement
/// and says why.
#[test]
fn heap_per_shared_handle() {
    let rt = runtime();
    let buffer =
        || tower::buffer::Buffer::new(tower::reconnect::Reconnect::new(make_echo(), ()), 1024);
    let shared = || -> EchoShared { Reconnect::new(make_echo(), ()).spawn(1024) };
    let (buffer, shared) = rt.block_on(async {
        // The first round also grows the runtime's own queues: measure the second.
        heap_of_handle(buffer).await;
        heap_of_handle(shared).await;
        (heap_of_handle(buffer).await, heap_of_handle(shared).await)
    });
    println!(
        "heap of Buffer<Reconnect>: {} bytes for the task and queue, {} per clone, {} left",
        buffer.0, buffer.1, buffer.2
    );
    println!(
        "heap of Shared: {} bytes for the task and queue, {} per clone, {} left",
        shared.0, shared.1, shared.2
    );
    // Nothing outlives the last handle.
    assert_eq!((buffer.2, shared.2), (0, 0));
    // A clone's heap is the boxed reserve future of its `PollSender`, as
    // `Buffer`'s; it differs only by its size on the stack.
    let inline = size_of::<EchoShared>() as isize
        - size_of::<tower::buffer::Buffer<u64, Ready<Result<u64, tower::BoxError>>>>() as isize;
    assert!(
        shared.1 <= buffer.1 + inline,
        "{} > {} + {inline}",
        shared.1,
        buffer.1
    );
    // Measured 4,448 bytes (Buffer: 2,784): the queue's first block of 32
    // requests, as Buffer's, plus what Buffer lacks: the watch channel, the
    // signal, the queue of requests to send again (empty: it allocates
    // nothing until one comes) and the `Reconnect`'s own state in the task.
    // The block grew by the request's wait claim. Per connection, not per
    // request; the bound leaves a little over 500 bytes. (With a tokio
    // channel as that second queue, its first block made it 6,992.)
    assert!(
        shared.0 <= 5 * 1024,
        "{} bytes for the task and queue",
        shared.0
    );
}

// ===== connect/disconnect cycles =====

/// Why a connection went away.
#[derive(Debug)]
struct Reset;

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset")
    }
}

impl std::error::Error for Reset {}

/// A connection the test can break: its `poll_ready` fails while the
/// shared flag is set. The make service clears the flag, so each new
/// connection starts healthy.
struct Breakable {
    broken: Arc<AtomicBool>,
}

impl Service<u64> for Breakable {
    type Response = u64;
    type Error = Reset;
    type Future = Ready<Result<u64, Reset>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Reset>> {
        if self.broken.load(Ordering::Relaxed) {
            Poll::Ready(Err(Reset))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// Hands out `Breakable` connections sharing one flag, which it clears.
#[derive(Clone)]
struct MakeBreakable {
    broken: Arc<AtomicBool>,
}

fn make_breakable(broken: Arc<AtomicBool>) -> MakeBreakable {
    MakeBreakable { broken }
}

impl Service<()> for MakeBreakable {
    type Response = Breakable;
    type Error = Infallible;
    type Future = Ready<Result<Breakable, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        self.broken.store(false, Ordering::Relaxed);
        ready(Ok(Breakable {
            broken: self.broken.clone(),
        }))
    }
}

const CYCLES: u64 = 100_000;
const WARM_CYCLES: u64 = 1_000;

/// Runs `cycle` `CYCLES` times on a `Reconnect` over breakable connections,
/// on a paused clock, and returns the live heap bytes after `WARM_CYCLES`
/// cycles and after all of them.
fn live_over_cycles<F>(cycle: F) -> (isize, isize)
where
    F: AsyncFn(&mut Reconnect<MakeBreakable, ()>, &AtomicBool, u64),
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    let (after_warm, after_all) = rt.block_on(async {
        let broken = Arc::new(AtomicBool::new(false));
        let mut svc = Reconnect::new(make_breakable(broken.clone()), ());
        let watch = svc.watch();
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(request(&mut svc, &mut cx, 0), 0);

        let mut after_warm = 0;
        for n in 1..=CYCLES {
            cycle(&mut svc, &broken, n).await;
            if n == WARM_CYCLES {
                after_warm = live();
            }
        }
        let state = watch.state();
        assert_eq!(state.connects(), CYCLES + 1);
        assert_eq!(state.disconnects(), CYCLES);
        assert!(state.is_connected());
        (after_warm, live())
    });
    println!("live bytes: {after_warm} after {WARM_CYCLES} cycles, {after_all} after {CYCLES}");
    (after_warm, after_all)
}

/// 100,000 times: a connection that lived past the first backoff delay
/// breaks, and the same `poll_ready` reconnects at once (default settings).
/// Live heap bytes after 1,000 cycles and after 100,000 are the same:
/// nothing accumulates per connection.
#[test]
fn no_growth_over_100k_reconnects() {
    let (after_warm, after_all) = live_over_cycles(async |svc, broken, n| {
        let mut cx = Context::from_waker(Waker::noop());
        // Past the default first delay (2 s): the connection proved
        // itself, so losing it reconnects at once.
        tokio::time::advance(Duration::from_secs(3)).await;
        broken.store(true, Ordering::Relaxed);
        assert_eq!(request(svc, &mut cx, black_box(n)), n);
    });
    assert_eq!(after_all, after_warm);
}

/// 100,000 times: a connection breaks as soon as it is made, so each loss
/// counts as a failed attempt: the request fails fast, the retry timer runs
/// out, and the next request reconnects. The attempt count grows, the heap
/// does not.
#[test]
fn no_growth_over_100k_retries() {
    let (after_warm, after_all) = live_over_cycles(async |svc, broken, n| {
        let mut cx = Context::from_waker(Waker::noop());
        broken.store(true, Ordering::Relaxed);
        let Poll::Ready(Ok(())) = svc.poll_ready(&mut cx) else {
            panic!("fail-fast mode is ready while disconnected");
        };
        let Poll::Ready(Err(err)) = pin!(svc.call(n)).poll(&mut cx) else {
            panic!("a request while disconnected fails at once");
        };
        assert!(err.is::<Unavailable>(), "{err}");
        // The longest delay of the default schedule is 120 s, jitter included.
        tokio::time::advance(Duration::from_secs(121)).await;
        assert_eq!(request(svc, &mut cx, black_box(n)), n);
    });
    assert_eq!(after_all, after_warm);
}
