//! Watch fan-out: how fast the connection coming up wakes 1, 100 and 10,000
//! tasks awaiting `ConnectionWatch::connected()`, and what each waiting task
//! costs in memory.
//!
//! Every fan-out parks N waiter tasks on a tokio multi-thread runtime with
//! two workers, releases the change, and times it until the last waiter has
//! woken. Three ways, side by side in one criterion group:
//!
//! - `redial`: the waiters await `watch.connected()` on a `redial::Reconnect`
//!   whose make future waits on a oneshot, driven by a task awaiting
//!   `ready()`. Releasing the oneshot wakes the driver, the make future
//!   resolves, the service publishes `Connected` and the waiters wake.
//! - `watch_task`: the floor along the same path, a plain
//!   `tokio::sync::watch`: the waiters await `rx.wait_for(|up| *up)`, and a
//!   driver task awaits the oneshot, then sends.
//! - `watch_inline`: the bare floor: the bench thread sends, with no task
//!   in between.
//!
//! Only the fan-out is timed (`iter_custom`), from just before the release
//! to the moment the last waiter counts itself woken; spawning and parking
//! the waiters is set-up. The waiters park on the change being timed: the
//! `redial` ones are spawned once the service shows `Connecting`.
//!
//! Then a table, from a pass of its own that runs the sources in turn,
//! round after round, so that load from elsewhere on the machine falls on
//! all of them alike: median and p90 per source, the part after the state
//! change, the median of the per-round ratio to `watch_task`, and polls per
//! waiter. It adds `redial_subscribe` (waiters on `watch.subscribe()` +
//! `wait_for`), to tell what `connected()` itself adds, and `notify_gate`
//! (waiters on a flag and a `tokio::sync::Notify`), what `connected()` would
//! cost on such a gate instead of a watch receiver. Memory is measured
//! apart, on tasks spawned as a user would (awaiting `connected()` or
//! `wait_for` and nothing else): the live heap bytes with N of them parked,
//! from the counting global allocator below, divided by N.
//!
//! Run with `cargo bench --bench fanout`; add
//! `-- --warm-up-time 1 --measurement-time 3` for a quick look.

#[path = "common/noop.rs"]
mod noop;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    convert::Infallible,
    future::{poll_fn, Future},
    mem::size_of_val,
    pin::pin,
    sync::{
        atomic::{
            AtomicBool, AtomicIsize, AtomicUsize,
            Ordering::{AcqRel, Acquire, Relaxed, Release},
        },
        Arc, Mutex,
    },
    time::Duration,
};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use noop::{connection, make};
use redial::{ConnectionWatch, Phase, Reconnect};
use tokio::{
    runtime::Runtime,
    sync::{oneshot, watch, Notify},
    time::Instant,
};
use tower::{service_fn, ServiceExt};

/// The numbers of waiting tasks.
const WAITERS: [usize; 3] = [1, 100, 10_000];
/// The runtime's worker threads.
const WORKERS: usize = 2;
/// The goal: 10,000 waiters woken in under 10 ms.
const GOAL: Duration = Duration::from_millis(10);

// ===== the counting allocator =====

/// Counts live heap bytes while [`COUNTING`] is on, so the memory pass sees
/// what N parked waiters hold. While timing it is off and costs one relaxed
/// load per call.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn count(delta: isize) {
    if COUNTING.load(Relaxed) {
        LIVE.fetch_add(delta, Relaxed);
    }
}

// SAFETY: every method forwards its arguments to `System` unchanged and
// returns its result; the counting touches only atomics and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract, and
        // `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, and
        // `ptr` came from `System` through this allocator.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        new
    }
}

// ===== one fan-out =====

/// Who sends the change the waiters wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `redial::Reconnect` connecting; waiters on `connected()`.
    Redial,
    /// As `Redial`, but the waiters park while the service is still `Idle`,
    /// so its `Connecting` wakes them too. Counted, not timed.
    RedialFromIdle,
    /// As `Redial`, but each waiter awaits `subscribe()` + `wait_for`.
    RedialSubscribe,
    /// A plain watch, sent by a task woken by the oneshot; waiters on
    /// `wait_for`.
    WatchTask,
    /// A plain watch, sent by the bench thread.
    WatchInline,
    /// A [`Gate`], opened by a task woken by the oneshot. Not a redial API:
    /// what `connected()` would cost if it waited on one.
    NotifyGate,
}

impl Source {
    /// The criterion group.
    const BENCHED: [Source; 3] = [Source::Redial, Source::WatchTask, Source::WatchInline];
    /// The table.
    const TABLE: [Source; 5] = [
        Source::Redial,
        Source::RedialSubscribe,
        Source::WatchTask,
        Source::WatchInline,
        Source::NotifyGate,
    ];

    fn name(self) -> &'static str {
        match self {
            Source::Redial => "redial",
            Source::RedialFromIdle => "redial_from_idle",
            Source::RedialSubscribe => "redial_subscribe",
            Source::WatchTask => "watch_task",
            Source::WatchInline => "watch_inline",
            Source::NotifyGate => "notify_gate",
        }
    }
}

/// What one fan-out measured.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// From the release to the last waiter woken.
    total: Duration,
    /// From the state change (the make future resolving, or the send) to
    /// the last waiter woken.
    after_change: Duration,
    /// Polls of all the waiters together.
    polls: usize,
}

/// What the waiters of one fan-out share.
struct Tally {
    n: usize,
    parked: AtomicUsize,
    all_parked: Notify,
    woken: AtomicUsize,
    extra_polls: AtomicUsize,
    last: Mutex<Option<oneshot::Sender<Instant>>>,
}

impl Tally {
    fn new(n: usize) -> (Arc<Self>, oneshot::Receiver<Instant>) {
        let (last_tx, last_rx) = oneshot::channel();
        let tally = Arc::new(Self {
            n,
            parked: AtomicUsize::new(0),
            all_parked: Notify::new(),
            woken: AtomicUsize::new(0),
            extra_polls: AtomicUsize::new(0),
            last: Mutex::new(Some(last_tx)),
        });
        (tally, last_rx)
    }
}

/// One waiter: counts itself parked after its first poll (which must be
/// pending), and takes the time if it is the last to wake.
async fn waiter(wait: impl Future<Output = ()>, tally: Arc<Tally>) {
    let mut wait = pin!(wait);
    let mut polls = 0;
    poll_fn(|cx| {
        polls += 1;
        let poll = wait.as_mut().poll(cx);
        if polls == 1 {
            assert!(poll.is_pending(), "a waiter must park before the change");
            if tally.parked.fetch_add(1, AcqRel) + 1 == tally.n {
                tally.all_parked.notify_one();
            }
        }
        poll
    })
    .await;
    // Two polls (park, wake) are the norm; only more touch a shared line.
    if polls > 2 {
        tally.extra_polls.fetch_add(polls - 2, Relaxed);
    }
    if tally.woken.fetch_add(1, AcqRel) + 1 == tally.n {
        let now = Instant::now();
        let last = tally.last.lock().expect("not poisoned").take();
        let _ = last.expect("one last waiter").send(now);
    }
}

/// Polls `fut`, and tells `parked` once a poll was pending.
async fn signal_parked<F: Future>(fut: F, parked: oneshot::Sender<()>) -> F::Output {
    let mut fut = pin!(fut);
    let mut parked = Some(parked);
    poll_fn(|cx| {
        let poll = fut.as_mut().poll(cx);
        if poll.is_pending() {
            if let Some(parked) = parked.take() {
                let _ = parked.send(());
            }
        }
        poll
    })
    .await
}

/// Spawns the waiters and returns once all have parked.
async fn park<W, F>(tally: &Arc<Tally>, mut wait: W)
where
    W: FnMut() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    for _ in 0..tally.n {
        drop(tokio::spawn(waiter(wait(), tally.clone())));
    }
    tally.all_parked.notified().await;
}

/// Parks the waiters of a `redial` source.
async fn park_redial(source: Source, watch: &ConnectionWatch, tally: &Arc<Tally>) {
    if source == Source::RedialSubscribe {
        park(tally, || {
            let mut rx = watch.subscribe();
            async move {
                rx.wait_for(|s| s.is_connected()).await.expect("connects");
            }
        })
        .await;
    } else {
        park(tally, || {
            let watch = watch.clone();
            async move { watch.connected().await.expect("connects") }
        })
        .await;
    }
}

/// The time the last waiter woke; a panicking waiter fails the bench rather
/// than hanging it.
async fn last_woken(last: oneshot::Receiver<Instant>) -> Instant {
    tokio::time::timeout(Duration::from_secs(60), last)
        .await
        .expect("every waiter wakes within a minute")
        .expect("the last waiter reports")
}

/// The wait `connected()` could do instead of a watch receiver's: a flag
/// and a [`Notify`], shared by reference, so waiting clones nothing, waking
/// takes no lock on the value, and only the edge that matters wakes anyone.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    notify: Notify,
}

impl Gate {
    async fn opened(&self) {
        loop {
            let mut notified = pin!(self.notify.notified());
            // Registered before the check, so an `open` in between is seen.
            notified.as_mut().enable();
            if self.open.load(Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn open(&self) {
        self.open.store(true, Release);
        self.notify.notify_waiters();
    }
}

/// Sets up one fan-out of `n` waiters, releases it and waits for the last.
async fn fanout(source: Source, n: usize) -> Sample {
    let (tally, last) = Tally::new(n);
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (changed_tx, changed_rx) = oneshot::channel::<Instant>();

    let (start, last) = match source {
        Source::Redial | Source::RedialFromIdle | Source::RedialSubscribe => {
            // One connect per fan-out: the make future waits for the release
            // and stamps the moment it resolves, just before the service
            // publishes `Connected`.
            let mut release = Some(release_rx);
            let mut changed = Some(changed_tx);
            let make = service_fn(move |(): ()| {
                let release = release.take().expect("one connect per fan-out");
                let changed = changed.take().expect("one connect per fan-out");
                async move {
                    release.await.expect("released");
                    let _ = changed.send(Instant::now());
                    Ok::<_, Infallible>(connection())
                }
            });
            let mut svc = Reconnect::new(make, ());
            let watch = svc.watch();
            if source == Source::RedialFromIdle {
                park_redial(source, &watch, &tally).await;
            }
            // Parked means `Connecting` is published and the make future
            // waits for the release.
            let (parked_tx, parked_rx) = oneshot::channel();
            let driver = tokio::spawn(async move {
                signal_parked(ServiceExt::<u64>::ready(&mut svc), parked_tx)
                    .await
                    .expect("connects");
                // Kept until the end: dropping it publishes `Closed`.
                svc
            });
            parked_rx.await.expect("driver parked");
            assert_eq!(watch.phase(), Phase::Connecting);
            if source != Source::RedialFromIdle {
                park_redial(source, &watch, &tally).await;
            } else {
                // Let the waiters `Connecting` woke park again, so that the
                // release is not coalesced with it.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let start = Instant::now();
            release_tx.send(()).expect("make future waiting");
            // The bench thread sleeps through the fan-out: the service stays
            // in the driver's output until then (waiters still queued would
            // see `Closed` if it went earlier).
            let last = last_woken(last).await;
            drop(driver.await.expect("driver"));
            (start, last)
        }
        Source::NotifyGate => {
            let gate = Arc::new(Gate::default());
            park(&tally, || {
                let gate = gate.clone();
                async move { gate.opened().await }
            })
            .await;
            let (parked_tx, parked_rx) = oneshot::channel();
            let driver = tokio::spawn(async move {
                signal_parked(release_rx, parked_tx)
                    .await
                    .expect("released");
                let _ = changed_tx.send(Instant::now());
                gate.open();
            });
            parked_rx.await.expect("driver parked");
            let start = Instant::now();
            release_tx.send(()).expect("driver waiting");
            let last = last_woken(last).await;
            driver.await.expect("driver");
            (start, last)
        }
        Source::WatchTask | Source::WatchInline => {
            let (tx, rx) = watch::channel(false);
            park(&tally, || {
                let mut rx = rx.clone();
                async move {
                    rx.wait_for(|up| *up).await.expect("sender alive");
                }
            })
            .await;
            let send = move |tx: &watch::Sender<bool>| {
                tx.send_if_modified(|up| {
                    *up = true;
                    true
                })
            };
            if source == Source::WatchTask {
                let (parked_tx, parked_rx) = oneshot::channel();
                let driver = tokio::spawn(async move {
                    signal_parked(release_rx, parked_tx)
                        .await
                        .expect("released");
                    let _ = changed_tx.send(Instant::now());
                    send(&tx);
                    tx
                });
                parked_rx.await.expect("driver parked");
                let start = Instant::now();
                release_tx.send(()).expect("driver waiting");
                let last = last_woken(last).await;
                drop(driver.await.expect("driver"));
                (start, last)
            } else {
                let start = Instant::now();
                let _ = changed_tx.send(start);
                send(&tx);
                let last = last_woken(last).await;
                drop(tx);
                (start, last)
            }
        }
    };

    let changed = changed_rx.await.expect("the change was stamped");
    Sample {
        total: last - start,
        after_change: last - changed,
        polls: 2 * n + tally.extra_polls.load(Relaxed),
    }
}

// ===== memory =====

/// Live heap bytes per parked waiter, spawned as a user would: a task that
/// awaits `connected()` (or `wait_for`) and nothing else.
async fn bytes_per_waiter(source: Source, n: usize) -> f64 {
    let mut svc = Reconnect::new(make(), ());
    let watch = svc.watch();
    let (tx, rx) = watch::channel(false);
    let gate = Arc::new(Gate::default());
    // Allocated before counting: the handles are not the waiters' cost.
    let mut waiters = Vec::with_capacity(n);
    // Let the workers free what earlier fan-outs left.
    tokio::time::sleep(Duration::from_millis(20)).await;
    LIVE.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    for _ in 0..n {
        waiters.push(match source {
            Source::Redial | Source::RedialFromIdle => {
                let watch = watch.clone();
                tokio::spawn(async move { watch.connected().await.is_ok() })
            }
            Source::RedialSubscribe => {
                let mut rx = watch.subscribe();
                tokio::spawn(async move { rx.wait_for(|s| s.is_connected()).await.is_ok() })
            }
            Source::WatchTask | Source::WatchInline => {
                let mut rx = rx.clone();
                tokio::spawn(async move { rx.wait_for(|up| *up).await.is_ok() })
            }
            Source::NotifyGate => {
                let gate = gate.clone();
                tokio::spawn(async move {
                    gate.opened().await;
                    true
                })
            }
        });
    }
    // Parking allocates nothing, but let them all park.
    tokio::time::sleep(Duration::from_millis(20)).await;
    COUNTING.store(false, Relaxed);
    let bytes = LIVE.load(Relaxed);
    ServiceExt::<u64>::ready(&mut svc).await.expect("connects");
    tx.send_replace(true);
    gate.open();
    for waiter in waiters {
        assert!(
            waiter.await.expect("waiter"),
            "every waiter sees its change"
        );
    }
    bytes as f64 / n as f64
}

// ===== the benchmark =====

fn bench(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("fanout");
    // A 10,000-waiter fan-out takes milliseconds: equal iterations per
    // sample keep the run short.
    group.sampling_mode(SamplingMode::Flat);
    for n in WAITERS {
        group.throughput(Throughput::Elements(n as u64));
        for source in Source::BENCHED {
            group.bench_with_input(BenchmarkId::new(source.name(), n), &n, |b, &n| {
                b.to_async(rt).iter_custom(|iters| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += fanout(source, n).await.total;
                    }
                    total
                });
            });
        }
    }
    group.finish();
}

// ===== the table =====

/// Rounds of the interleaved pass for `n` waiters: about as many waiters
/// woken in all for each `n`, and at least 100 rounds.
fn rounds(n: usize) -> usize {
    (200_000 / n).clamp(100, 2_000)
}

/// The `q` quantile of `values`.
fn quantile<T: Copy + PartialOrd>(values: &mut [T], q: f64) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn table(rt: &Runtime, quick: bool) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "watch fan-out, {WORKERS} tokio workers on {cores} cores; interleaved pass, \
         times from the release (median, p90)"
    );
    println!(
        "{:<17} {:>6} {:>6} {:>20} {:>12} {:>10} {:>8} {:>8}",
        "source",
        "N",
        "rounds",
        "release→last woken",
        "change→last",
        "vs floor",
        "polls/N",
        "bytes/N"
    );
    let mut goal = None;
    for n in WAITERS {
        let rounds = if quick { 1 } else { rounds(n) };
        let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(rounds); Source::TABLE.len()];
        for _ in 0..rounds {
            for (i, source) in Source::TABLE.into_iter().enumerate() {
                samples[i].push(rt.block_on(fanout(source, n)));
            }
        }
        let floor = Source::TABLE
            .iter()
            .position(|&s| s == Source::WatchTask)
            .expect("the floor is in the table");
        for (i, source) in Source::TABLE.into_iter().enumerate() {
            let mut total: Vec<_> = samples[i].iter().map(|s| s.total).collect();
            let mut after: Vec<_> = samples[i].iter().map(|s| s.after_change).collect();
            let mut ratio: Vec<_> = samples[i]
                .iter()
                .zip(&samples[floor])
                .map(|(s, f)| s.total.as_secs_f64() / f.total.as_secs_f64())
                .collect();
            let polls =
                samples[i].iter().map(|s| s.polls).sum::<usize>() as f64 / (rounds * n) as f64;
            let median = quantile(&mut total, 0.5);
            if source == Source::Redial && n == 10_000 {
                goal = Some(median);
            }
            let bytes = rt.block_on(bytes_per_waiter(source, n));
            println!(
                "{:<17} {:>6} {:>6} {:>20} {:>12} {:>9.2}× {:>8.2} {:>8.0}",
                source.name(),
                n,
                rounds,
                format!("{median:.1?}, {:.1?}", quantile(&mut total, 0.9)),
                format!("{:.1?}", quantile(&mut after, 0.5)),
                quantile(&mut ratio, 0.5),
                polls,
                bytes,
            );
        }
    }

    let n = 10_000;
    let idle = rt.block_on(fanout(Source::RedialFromIdle, n));
    let polls = idle.polls as f64 / n as f64;
    println!(
        "redial, {n} waiters parked while Idle: {polls:.2} polls/N (2 needed): {}",
        if polls > 2.0 {
            "Idle → Connecting wakes connected() waiters for nothing"
        } else {
            "Idle → Connecting wakes no connected() waiter"
        }
    );
    println!(
        "redial, {n} waiters parked while Idle: {:.2} polls/N (2 needed): \
         Idle → Connecting wakes every connected() waiter for nothing",
        idle.polls as f64 / n as f64,
    );

    // What a parked waiter is made of, as a user would spawn it.
    rt.block_on(async {
        let svc = Reconnect::new(make(), ());
        let watch = svc.watch();
        let (_tx, rx) = watch::channel(false);
        let user_redial = {
            let watch = watch.clone();
            async move { watch.connected().await }
        };
        let user_floor = {
            let mut rx = rx.clone();
            async move { rx.wait_for(|up| *up).await.is_ok() }
        };
        println!(
            "futures: connected() {} B, wait_for() {} B; a task's future awaiting them {} B \
             and {} B (a tokio task adds its header and trailer and rounds up to 128 B)",
            size_of_val(&watch.connected()),
            size_of_val(&rx.clone().wait_for(|up| *up)),
            size_of_val(&user_redial),
            size_of_val(&user_floor),
        );
    });

    // One round of a test build says nothing about the goal.
    if let (Some(median), false) = (goal, quick) {
        let verdict = if median < GOAL { "met" } else { "missed" };
        println!(
            "goal: 10,000 woken in under {GOAL:?}: {verdict}, median {median:.2?} \
             ({:.2}× the goal)",
            median.as_secs_f64() / GOAL.as_secs_f64()
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then every part runs once.
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &rt);
    c.final_summary();
    table(&rt, quick);
}
