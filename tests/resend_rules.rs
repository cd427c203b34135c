//! The shared handle's rules for requests handed back, on a scripted
//! connection and a paused clock: a request handed back unwritten is sent
//! on the next connection, once; it waits or fails fast by the mode, within
//! the wait timeout counted from the call; one handed back twice, or after
//! close, fails; a plain `Reconnect` gives it back to its caller; and a
//! proptest model: every caller answered, at most two sends, never twice on
//! one connection, `resent()` exact. (tests/resend.rs has the same rules
//! against real servers.)

use std::{
    collections::VecDeque,
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use redial::{
    error::{Closed, Resend, Unavailable},
    Backoff, Phase, Reconnect, ReconnectLayer,
};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

/// What the connection does with the next request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Ok,
    /// Hands it back unwritten and closes, after this long.
    Unwritten(Duration),
    /// Hands it back unanswered and closes.
    Unanswered,
    /// Answers, and closes as it takes the request (a response with
    /// `Connection: close`): right after the call, the connection is down.
    Last,
}

/// The connections' script and log, shared by all of them.
#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    /// (connection, request) for every request a connection got.
    log: Arc<Mutex<Vec<(usize, u32)>>>,
    connects: Arc<AtomicUsize>,
    refuse: Arc<AtomicBool>,
    /// The next dial panics, inside the shared handle's task.
    panic: Arc<AtomicBool>,
}

impl Script {
    fn new(answers: impl IntoIterator<Item = Answer>) -> Self {
        let script = Self::default();
        script.answers.lock().unwrap().extend(answers);
        script
    }

    fn log(&self) -> Vec<(usize, u32)> {
        self.log.lock().unwrap().clone()
    }

    /// A make service dialling connections that follow the script.
    fn make(
        &self,
    ) -> impl Service<(), Response = Conn, Error = io::Error, Future = impl Future + Send>
           + Clone
           + Send
           + 'static {
        let script = self.clone();
        service_fn(move |()| {
            let script = script.clone();
            async move {
                if script.refuse.load(Ordering::SeqCst) {
                    return Err(io::Error::from(io::ErrorKind::ConnectionRefused));
                }
                assert!(!script.panic.load(Ordering::SeqCst), "the dial panicked");
                let id = script.connects.fetch_add(1, Ordering::SeqCst);
                Ok(Conn {
                    id,
                    closed: Arc::new(AtomicBool::new(false)),
                    script,
                })
            }
        })
    }
}

/// A connection that answers `n` with `n`, or hands it back and closes.
struct Conn {
    id: usize,
    closed: Arc<AtomicBool>,
    script: Script,
}

impl Service<u32> for Conn {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.closed.load(Ordering::SeqCst) {
            true => Poll::Ready(Err("connection closed".into())),
            false => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, n: u32) -> Self::Future {
        self.script.log.lock().unwrap().push((self.id, n));
        let answer = self.script.answers.lock().unwrap().pop_front();
        let closed = self.closed.clone();
        if matches!(answer, Some(Answer::Last)) {
            closed.store(true, Ordering::SeqCst);
        }
        Box::pin(async move {
            match answer.unwrap_or(Answer::Ok) {
                Answer::Ok | Answer::Last => Ok(n),
                Answer::Unwritten(after) => {
                    tokio::time::sleep(after).await;
                    closed.store(true, Ordering::SeqCst);
                    Err(Resend::unwritten(n, io::Error::from(io::ErrorKind::NotConnected)).into())
                }
                Answer::Unanswered => {
                    closed.store(true, Ordering::SeqCst);
                    Err(
                        Resend::unanswered(n, io::Error::from(io::ErrorKind::ConnectionReset))
                            .into(),
                    )
                }
            }
        })
    }
}

fn layer() -> ReconnectLayer<()> {
    ReconnectLayer::new(()).backoff(Backoff::constant(Duration::from_millis(100)))
}

/// Lets the task run until it has nothing left to do.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Connects, and lets the connection live past the first retry delay:
/// a connection lost sooner counts as a failed attempt, and the
/// fail-fast handle would answer `Unavailable` while it reconnects.
async fn proven(watch: &redial::ConnectionWatch) {
    watch.connected().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// A request the connection hands back unwritten is answered on the
/// next connection, and the watch counts it.
#[tokio::test(start_paused = true)]
async fn an_unwritten_request_is_sent_on_the_next_connection() {
    let script = Script::new([Answer::Unwritten(Duration::ZERO), Answer::Ok]);
    let shared = layer().layer(script.make()).spawn(8);
    proven(&shared.watch()).await;
    assert_eq!(shared.clone().oneshot(7).await.unwrap(), 7);
    assert_eq!(script.log(), [(0, 7), (1, 7)]);
    let state = shared.watch().state();
    assert_eq!((state.resent(), state.connects()), (1, 2));
}

/// A pool's watch counts the requests its connections sent again.
#[tokio::test(start_paused = true)]
async fn a_pools_watch_counts_what_its_connections_resent() {
    let script = Script::new([Answer::Unwritten(Duration::ZERO), Answer::Ok]);
    let pool = layer().pool(1).layer(script.make());
    proven(&pool.watch()).await;
    assert_eq!(pool.clone().oneshot(7).await.unwrap(), 7);
    assert_eq!(script.log(), [(0, 7), (1, 7)]);
    assert_eq!(pool.connections()[0].state().resent(), 1);
    let state = pool.watch().state();
    assert_eq!((state.resent(), state.connects()), (1, 2), "{state:?}");
}

/// Nothing is left to send once a request sent again is answered: when
/// the connection that answered it closes at once and every handle then
/// goes, the task closes while it waits to redial, and dials no more.
#[tokio::test(start_paused = true)]
async fn handles_gone_after_a_resend_close_the_task_without_dialling_again() {
    let script = Script::new([Answer::Unwritten(Duration::ZERO), Answer::Last]);
    // Waiting for ready: the task's `poll_ready` stays pending until the
    // redial, so nothing reads the (now empty) second queue in between.
    let shared = layer().wait_for_ready(true).layer(script.make()).spawn(8);
    let watch = shared.watch();
    proven(&watch).await;
    assert_eq!(shared.clone().oneshot(7).await.unwrap(), 7);
    assert_eq!(script.log(), [(0, 7), (1, 7)]);
    settle().await;
    let state = watch.state();
    assert!(
        state.phase() == Phase::Disconnected && state.retry_at().is_some(),
        "waits to redial: {state:?}"
    );

    drop(shared);
    settle().await;
    assert_eq!(watch.phase(), Phase::Closed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(script.connects.load(Ordering::SeqCst), 2, "no dial after");
}

/// A request handed back after the task died (its next dial panicked)
/// is not left waiting for a task that is gone: its caller gets
/// `Closed`.
#[tokio::test(start_paused = true)]
async fn a_request_handed_back_after_the_task_died_fails_closed() {
    let script = Script::new([Answer::Unwritten(Duration::from_millis(50))]);
    let shared = layer().wait_for_ready(true).layer(script.make()).spawn(8);
    proven(&shared.watch()).await;
    script.panic.store(true, Ordering::SeqCst);
    let answer = tokio::time::timeout(Duration::from_secs(3_600), shared.clone().oneshot(7))
        .await
        .expect("answered, not left waiting");
    let err = answer.unwrap_err();
    assert!(err.is::<redial::error::Closed>(), "{err:?}");
    assert!(shared.watch().state().is_closed());
}

/// A request handed back a second time is not sent a third: the caller
/// gets the `Resend`, with the request and the connection's own error.
#[tokio::test(start_paused = true)]
async fn a_request_is_sent_at_most_twice() {
    let script = Script::new([
        Answer::Unanswered,
        Answer::Unwritten(Duration::ZERO),
        Answer::Ok,
    ]);
    let shared = layer().layer(script.make()).spawn(8);
    proven(&shared.watch()).await;
    let err = shared.clone().oneshot(7).await.unwrap_err();
    let resend = err.downcast::<Resend<u32>>().expect("the Resend");
    assert!(resend.is_unwritten(), "the second hand-back's kind");
    let (request, error) = resend.into_parts();
    assert_eq!(request, 7);
    let io = error
        .downcast::<io::Error>()
        .expect("the connection's own error");
    assert_eq!(io.kind(), io::ErrorKind::NotConnected);
    assert_eq!(script.log(), [(0, 7), (1, 7)]);
    assert_eq!(shared.watch().state().resent(), 1);
    // The next request is a new one.
    proven(&shared.watch()).await;
    assert_eq!(shared.clone().oneshot(8).await.unwrap(), 8);
}

/// Fail-fast mode: a request to send again while the peer is away fails
/// fast with `Unavailable`, as a new one would, and is not sent.
#[tokio::test(start_paused = true)]
async fn a_request_to_resend_fails_fast_while_disconnected() {
    let script = Script::new([Answer::Unwritten(Duration::from_millis(10))]);
    let shared = layer().layer(script.make()).spawn(8);
    let watch = shared.watch();
    // Proven: a young connection's loss would fail fast by itself.
    proven(&watch).await;
    let pending = tokio::spawn(shared.clone().oneshot(7));
    // The peer goes away before the request comes back.
    script.refuse.store(true, Ordering::SeqCst);
    let err = pending.await.unwrap().unwrap_err();
    assert!(err.is::<Unavailable>(), "{err:?}");
    assert_eq!(watch.phase(), Phase::Disconnected);
    assert_eq!(script.log(), [(0, 7)]);
}

/// Wait-for-ready mode: the request to send again waits for the peer,
/// and is answered once it is back.
#[tokio::test(start_paused = true)]
async fn a_request_to_resend_waits_for_the_peer_in_wait_for_ready_mode() {
    let script = Script::new([Answer::Unwritten(Duration::from_millis(10))]);
    let shared = layer().wait_for_ready(true).layer(script.make()).spawn(8);
    let watch = shared.watch();
    watch.connected().await.unwrap();
    let pending = tokio::spawn(shared.clone().oneshot(7));
    script.refuse.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(watch.phase(), Phase::Disconnected);
    assert!(!pending.is_finished(), "the request waits");
    script.refuse.store(false, Ordering::SeqCst);
    assert_eq!(pending.await.unwrap().unwrap(), 7);
    assert_eq!(script.log(), [(0, 7), (1, 7)]);
    assert_eq!(watch.state().resent(), 1);
}

/// With an idle timeout, a connection lost with nothing in flight leaves
/// the task idle, waiting for a request before dialling: a request the
/// connection handed back is one, and is sent on a new connection
/// without any other request coming.
#[tokio::test(start_paused = true)]
async fn a_request_handed_back_with_an_idle_timeout_needs_no_other_request() {
    let script = Script::new([Answer::Unwritten(Duration::from_millis(10)), Answer::Ok]);
    let shared = layer()
        .idle_timeout(Duration::from_secs(60))
        .layer(script.make())
        .spawn(8);
    let watch = shared.watch();
    proven(&watch).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), shared.clone().oneshot(7))
        .await
        .expect("answered without another request");
    assert_eq!(answer.unwrap(), 7);
    assert_eq!(script.log(), [(0, 7), (1, 7)]);
    let state = watch.state();
    assert_eq!((state.resent(), state.connects()), (1, 2));
}

/// With a wait timeout, a request sent again waits within the caller's
/// one wait, counted from the call: while the peer is away (waiting for
/// ready) it fails with `Unavailable` at the call plus the wait timeout,
/// and is never sent a second time, even once the peer is back.
#[tokio::test(start_paused = true)]
async fn a_request_to_resend_is_bounded_by_the_wait_timeout_from_the_call() {
    const WAIT: Duration = Duration::from_secs(1);
    let script = Script::new([Answer::Unwritten(Duration::from_millis(10))]);
    let shared = layer()
        .wait_for_ready(true)
        .wait_timeout(WAIT)
        .layer(script.make())
        .spawn(8);
    let watch = shared.watch();
    proven(&watch).await;
    let t0 = tokio::time::Instant::now();
    let pending = tokio::spawn(shared.clone().oneshot(7));
    // The peer goes away before the request comes back.
    script.refuse.store(true, Ordering::SeqCst);
    let err = pending.await.unwrap().unwrap_err();
    assert_eq!(t0.elapsed(), WAIT);
    let err = err
        .downcast::<Unavailable>()
        .unwrap_or_else(|err| panic!("expected Unavailable, got {err:?}"));
    assert_eq!(err.waited(), Some(WAIT));
    assert_ne!(watch.phase(), Phase::Connected);
    // The peer comes back: the request stays unsent.
    script.refuse.store(false, Ordering::SeqCst);
    watch.connected().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(script.log(), [(0, 7)]);
    assert_eq!(watch.state().resent(), 0);
    // A new request is sent, with a wait of its own.
    assert_eq!(shared.clone().oneshot(8).await.unwrap(), 8);
}

/// With a wait timeout, a request handed back after the caller's wait
/// has run out fails at once with `Unavailable` and is not sent again,
/// though the peer is there.
#[tokio::test(start_paused = true)]
async fn a_request_handed_back_after_its_wait_fails_unavailable() {
    const WAIT: Duration = Duration::from_secs(1);
    let script = Script::new([Answer::Unwritten(2 * WAIT)]);
    let shared = layer()
        .wait_for_ready(true)
        .wait_timeout(WAIT)
        .layer(script.make())
        .spawn(8);
    let watch = shared.watch();
    proven(&watch).await;
    let t0 = tokio::time::Instant::now();
    let err = shared.clone().oneshot(7).await.unwrap_err();
    assert_eq!(t0.elapsed(), 2 * WAIT);
    let err = err
        .downcast::<Unavailable>()
        .unwrap_or_else(|err| panic!("expected Unavailable, got {err:?}"));
    assert_eq!(err.waited(), Some(WAIT));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(script.log(), [(0, 7)]);
    assert_eq!(watch.state().resent(), 0);
}

/// A request handed back after the handle closed fails with `Closed`;
/// nothing sends it.
#[tokio::test(start_paused = true)]
async fn a_request_handed_back_after_close_fails_closed() {
    let script = Script::new([Answer::Unwritten(Duration::from_millis(10))]);
    let shared = layer().layer(script.make()).spawn(8);
    let watch = shared.watch();
    watch.connected().await.unwrap();
    let pending = tokio::spawn(shared.clone().oneshot(7));
    tokio::task::yield_now().await;
    shared.close();
    let err = pending.await.unwrap().unwrap_err();
    assert!(err.is::<Closed>(), "{err:?}");
    assert_eq!(script.log(), [(0, 7)]);
    assert_eq!(watch.state().resent(), 0);
}

/// A plain `Reconnect` has handed its response future to the caller and
/// cannot send again: the caller gets the `Resend`, and the request.
#[tokio::test(start_paused = true)]
async fn plain_reconnect_hands_the_request_back_to_the_caller() {
    let script = Script::new([Answer::Unwritten(Duration::ZERO)]);
    let svc: Reconnect<_, ()> = layer().layer(script.make());
    let watch = svc.watch();
    let err = svc.oneshot(7).await.unwrap_err();
    let resend = err.downcast::<Resend<u32>>().expect("handed back");
    assert!(resend.is_unwritten());
    assert_eq!(resend.into_request(), 7);
    assert_eq!(watch.state().resent(), 0);
}

// ===== the model =====

use proptest::{collection::vec, option, prelude::*};

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        3 => Just(Answer::Ok),
        2 => (0_u64..30).prop_map(|ms| Answer::Unwritten(Duration::from_millis(ms))),
        1 => Just(Answer::Unanswered),
    ]
}

proptest! {
    /// Whatever the connections do with each request (answer it, hand
    /// it back unwritten now or later, hand it back unanswered), the
    /// peer's outages, the mode and a close at any time: every caller
    /// gets an answer, no request reaches a connection more than
    /// twice, an answer is the caller's own, a request sent twice went
    /// to two different connections, a caller gets a `Resend` only for
    /// a request sent twice, and the watch counts exactly the requests
    /// sent again.
    #[test]
    fn every_request_is_answered_and_sent_at_most_twice(
        answers in vec(answer(), 0..24),
        requests in 1_u32..12,
        wait_for_ready in any::<bool>(),
        outages in vec((0_u64..300, 1_u64..300), 0..3),
        close_at in option::of(0_u64..600),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let script = Script::new(answers);
            let shared = layer()
                .wait_for_ready(wait_for_ready)
                .layer(script.make())
                .spawn(4);
            let watch = shared.watch();
            let refuse = script.refuse.clone();
            tokio::spawn(async move {
                for (start, length) in outages {
                    tokio::time::sleep(Duration::from_millis(start)).await;
                    refuse.store(true, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(length)).await;
                    refuse.store(false, Ordering::SeqCst);
                }
            });
            if let Some(at) = close_at {
                let shared = shared.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(at)).await;
                    shared.close();
                });
            }
            let mut callers = Vec::new();
            for id in 1..=requests {
                callers.push(tokio::spawn(shared.clone().oneshot(id)));
                tokio::time::sleep(Duration::from_millis(7)).await;
            }
            let mut answers = Vec::new();
            for caller in callers {
                // Hours of paused time: a caller still waiting then was lost.
                let answer = tokio::time::timeout(Duration::from_secs(3_600), caller).await;
                answers.push(answer.expect("every caller gets an answer").unwrap());
            }
            let log = script.log();
            let sent = |id: u32| log.iter().filter(|(_, n)| *n == id).count();
            for (id, answer) in (1..=requests).zip(&answers) {
                assert!(sent(id) <= 2, "request {id} sent {} times", sent(id));
                match answer {
                    Ok(n) => assert_eq!(*n, id),
                    // A `Resend` only for a request handed back on
                    // its second connection too.
                    Err(err) if err.is::<Resend<u32>>() => {
                        assert_eq!(sent(id), 2, "request {id}: {err:?}")
                    }
                    Err(_) => {}
                }
                if sent(id) == 2 {
                    let first = log.iter().position(|(_, n)| *n == id).unwrap();
                    let second = log.iter().rposition(|(_, n)| *n == id).unwrap();
                    assert_ne!(log[first].0, log[second].0, "sent again on the same connection");
                }
            }
            let twice = (1..=requests).filter(|&id| sent(id) == 2).count() as u64;
            assert_eq!(watch.state().resent(), twice);
            shared.close();
        });
    }
}
