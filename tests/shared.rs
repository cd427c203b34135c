//! The shared, eager handle: eagerness, idle detection, many clones, close.
mod support;

use std::time::Duration;

use redial::{
    error::{Closed, GaveUp, Unavailable},
    Backoff, Phase, ReconnectLayer, Shared,
};
use support::{advance_ms, errors::find, net::alive_tasks, Dial, Make};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};

type Handle = Shared<u32, redial::future::ResponseFuture<<support::Conn as Service<u32>>::Future>>;

fn layer() -> ReconnectLayer<&'static str> {
    ReconnectLayer::new("peer").backoff(Backoff::default().jitter(0.0))
}

fn spawn(layer: ReconnectLayer<&'static str>, make: &Make, bound: usize) -> Handle {
    layer.layer(make.clone()).spawn(bound)
}

/// Lets the worker task run until it has nothing left to do.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// The handle connects as soon as it is built, without a request.
#[tokio::test(start_paused = true)]
async fn connects_eagerly_without_a_request() {
    let make = Make::new();
    let shared = spawn(layer(), &make, 8);
    shared.watch().connected().await.unwrap();
    assert_eq!(make.dials(), 1);
    assert_eq!(make.conn().calls(), 0);
}

/// The lazy form waits for the first request, then connects.
#[tokio::test(start_paused = true)]
async fn lazy_connects_at_the_first_request() {
    let make = Make::new();
    let shared: Handle = layer().layer(make.clone()).spawn_lazy(8);
    settle().await;
    assert_eq!(make.dials(), 0);
    assert_eq!(shared.watch().phase(), Phase::Idle);
    assert_eq!(shared.clone().oneshot(1).await.unwrap(), 2);
    assert_eq!(make.dials(), 1);
}

/// An idle connection that goes away is noticed through its poll_ready waker and replaced, with no request.
#[tokio::test(start_paused = true)]
async fn idle_disconnect_is_noticed_without_a_request() {
    let make = Make::new();
    let shared = spawn(layer(), &make, 8);
    let watch = shared.watch();
    watch.connected().await.unwrap();
    advance_ms(10_000).await;

    let polls = make.conn().polls();
    make.conn().kill();
    settle().await;
    let state = watch.state();
    assert_eq!(state.disconnects(), 1);
    assert_eq!(state.connects(), 2, "reconnected in the background");
    assert_eq!(make.dials(), 2);
    // Woken by the connection, not by a polling loop: no polls while idle.
    advance_ms(60_000).await;
    settle().await;
    assert_eq!(make.conns()[1].polls(), 1);
    assert!(
        polls <= 2,
        "an idle connection is polled once, not in a loop"
    );
}

/// Two clones waiting on one slow connect are both woken and both served.
#[tokio::test(start_paused = true)]
async fn two_clones_waiting_on_one_connect_both_proceed() {
    let make = Make::new();
    make.push([Dial::ConnectAfter(Duration::from_secs(1))]);
    let shared = spawn(layer(), &make, 8);
    let started = Instant::now();
    let a = tokio::spawn(shared.clone().oneshot(1));
    let b = tokio::spawn(shared.clone().oneshot(2));
    assert_eq!(a.await.unwrap().unwrap(), 2);
    assert_eq!(b.await.unwrap().unwrap(), 3);
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(make.dials(), 1);
}

/// While Disconnected every clone fails fast with Unavailable, and no request dials.
#[tokio::test(start_paused = true)]
async fn every_clone_fails_fast_without_dialling() {
    let make = Make::new();
    make.otherwise(Dial::Fail("refused"));
    let shared = spawn(layer(), &make, 64);
    settle().await;
    let calls: Vec<_> = (0..50)
        .map(|_| tokio::spawn(shared.clone().oneshot(1)))
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(err.is::<Unavailable>(), "{err:?}");
    }
    assert_eq!(make.dials(), 1);
    // The retries run in the background on their schedule: 2 s, 5.2 s.
    advance_ms(1999).await;
    settle().await;
    assert_eq!(make.dials(), 1);
    advance_ms(1).await;
    settle().await;
    assert_eq!(make.dials(), 2);
    advance_ms(3200).await;
    settle().await;
    assert_eq!(make.dials(), 3);
}

/// In wait-for-ready mode clones wait through the outage and are all served when it ends.
#[tokio::test(start_paused = true)]
async fn wait_for_ready_clones_wait_then_succeed() {
    let make = Make::new();
    make.push([Dial::Fail("refused"), Dial::Fail("refused")]);
    let shared = spawn(layer().wait_for_ready(true), &make, 16);
    let started = Instant::now();
    let calls: Vec<_> = (1..=10u32)
        .map(|n| tokio::spawn(shared.clone().oneshot(n)))
        .collect();
    for (n, call) in (1..=10u32).zip(calls) {
        assert_eq!(call.await.unwrap().unwrap(), n + 1);
    }
    assert_eq!(started.elapsed(), Duration::from_millis(5200));
    assert_eq!(make.conn().calls(), 10);
}

/// The queue is bounded: when it is full, poll_ready is Pending until a slot frees.
#[tokio::test(start_paused = true)]
async fn full_queue_applies_backpressure() {
    let make = Make::new();
    make.push([Dial::ConnectAfter(Duration::from_secs(1))]);
    let shared = spawn(layer(), &make, 2);
    let mut a = shared.clone();
    let mut b = shared.clone();
    let mut c = shared.clone();
    let fa = {
        assert_ready_ok!(support::poll_ready(&mut a));
        a.call(1)
    };
    let fb = {
        assert_ready_ok!(support::poll_ready(&mut b));
        b.call(2)
    };
    let mut third = task::spawn(async move { c.ready().await.map(|_| ()) });
    assert_pending!(third.poll());

    advance_ms(1000).await;
    assert_eq!(fa.await.unwrap(), 2);
    assert_eq!(fb.await.unwrap(), 3);
    assert!(third.is_woken());
    assert_ready_ok!(third.poll());
}

/// close() fails queued calls with Closed, drops the connection, publishes Closed once and ends the task.
#[tokio::test(start_paused = true)]
async fn close_fails_pending_calls_and_leaves_nothing() {
    let make = Make::new();
    make.push([Dial::Connect]);
    let before = alive_tasks();
    let shared = spawn(layer(), &make, 8);
    let watch = shared.watch();
    watch.connected().await.unwrap();
    let conn = make.conn();
    conn.set_busy(true); // requests queue up behind a busy connection
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(shared.clone().oneshot(1)))
        .collect();
    settle().await;

    let mut rx = watch.subscribe();
    shared.close();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(err.is::<Closed>(), "{err:?}");
    }
    assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
    settle().await;
    assert!(!conn.is_held(), "the connection was dropped");
    assert_eq!(conn.calls(), 0, "queued requests were never sent");
    assert!(rx.changed().await.is_ok());
    assert!(
        rx.changed().await.is_err(),
        "Closed published once, then the sender is gone"
    );
    assert_eq!(alive_tasks(), before, "the worker task ended");
    assert!(shared.clone().oneshot(1).await.unwrap_err().is::<Closed>());
}

/// The task outlives close() while a clone holds a slot reserved before it, so a request sent into that slot is answered with Closed rather than stranded; the clone's call fails with Closed and the task then ends.
#[tokio::test(start_paused = true)]
async fn task_outlives_close_until_reserved_slots_are_given_back() {
    let make = Make::new();
    make.push([Dial::Connect]);
    let before = alive_tasks();
    let shared = spawn(layer(), &make, 8);
    shared.watch().connected().await.unwrap();
    let mut reserved = shared.clone();
    ServiceExt::<u32>::ready(&mut reserved).await.unwrap();

    shared.close();
    settle().await;
    assert_eq!(
        alive_tasks(),
        before + 1,
        "the task still serves the queue while a slot is reserved"
    );
    let err = reserved.call(1).await.unwrap_err();
    assert!(err.is::<Closed>(), "{err:?}");
    settle().await;
    assert_eq!(
        alive_tasks(),
        before,
        "the task ended once the slot was given back"
    );
}

/// Dropping the last handle closes the connection and ends the task.
#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_closes() {
    let make = Make::new();
    let before = alive_tasks();
    let shared = spawn(layer(), &make, 8);
    let watch = shared.watch();
    watch.connected().await.unwrap();
    let clone = shared.clone();
    drop(shared);
    settle().await;
    assert!(watch.is_connected(), "one handle is left");
    drop(clone);
    assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
    settle().await;
    assert!(!make.conn().is_held());
    assert_eq!(alive_tasks(), before);
}

/// `oneshot` on the only handle drops it right after `call`: the request is still sent and
/// answered (the queue is drained, as tower's `Buffer` does), then the task closes.
#[tokio::test(start_paused = true)]
async fn oneshot_on_the_last_handle_is_answered_then_the_task_closes() {
    let make = Make::new();
    let before = alive_tasks();
    let shared = spawn(layer(), &make, 8);
    let watch = shared.watch();
    watch.connected().await.unwrap();
    assert_eq!(shared.oneshot(4).await.unwrap(), 5);
    assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
    settle().await;
    assert_eq!(alive_tasks(), before);
}

/// In wait-for-ready mode, a request queued while the connection is down and whose handle is
/// then dropped is sent once the connection comes up; the task closes after it.
#[tokio::test(start_paused = true)]
async fn a_request_queued_before_the_last_handle_went_is_sent_once_connected() {
    let make = Make::new();
    make.push([Dial::Fail("refused")]);
    let shared = spawn(layer().wait_for_ready(true), &make, 8);
    let watch = shared.watch();
    settle().await;
    assert_eq!(watch.phase(), Phase::Disconnected);
    let call = tokio::spawn(shared.oneshot(1));
    settle().await;
    assert_eq!(
        watch.phase(),
        Phase::Disconnected,
        "the task waits to send it"
    );

    let retry = watch.state().retry_at().expect("a retry is scheduled");
    tokio::time::sleep_until(retry).await;
    assert_eq!(call.await.unwrap().unwrap(), 2);
    assert_eq!(make.conn().calls(), 1);
    assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
    assert_eq!(make.dials(), 2, "no dial after the queue was drained");
}

/// In wait-for-ready mode, with the last handle gone while the peer is down, the first attempt
/// that fails after it went ends the task: the request left fails with `Closed` instead of
/// waiting for ever with nobody able to close it.
#[tokio::test(start_paused = true)]
async fn after_the_last_handle_an_attempt_that_fails_ends_the_task() {
    let make = Make::new();
    make.otherwise(Dial::Fail("refused"));
    let before = alive_tasks();
    let shared = spawn(layer().wait_for_ready(true), &make, 8);
    let watch = shared.watch();
    settle().await;
    assert_eq!(make.dials(), 1);
    let call = tokio::spawn(shared.oneshot(1));
    settle().await;
    assert_eq!(watch.phase(), Phase::Disconnected, "still waiting");

    let err = call.await.unwrap().unwrap_err();
    assert!(err.is::<Closed>(), "{err:?}");
    assert_eq!(
        make.dials(),
        2,
        "closed at the first attempt after the handle went"
    );
    assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
    settle().await;
    assert_eq!(alive_tasks(), before);
}

/// With the last handle gone and only abandoned requests queued, a task waiting for a
/// connection closes at its next wake-up instead of dialling for nobody.
#[tokio::test(start_paused = true)]
async fn a_task_left_with_only_abandoned_requests_closes() {
    let make = Make::new();
    make.otherwise(Dial::Fail("refused"));
    let shared = spawn(layer().wait_for_ready(true), &make, 8);
    let watch = shared.watch();
    settle().await;
    let mut svc = shared.clone();
    assert_ready_ok!(support::poll_ready(&mut svc));
    drop(svc.call(1)); // queued, then abandoned
    drop((svc, shared));
    let retry = watch.state().retry_at().expect("a retry is scheduled");
    tokio::time::sleep_until(retry).await;
    assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
    assert!(make.dials() <= 2, "{} dials", make.dials());
}

/// A panic in the make service reaches callers as Closed, never a hang, and the watch closes.
#[tokio::test(start_paused = true)]
async fn panic_in_the_make_service_surfaces_as_closed() {
    let make = Make::new();
    make.push([Dial::Panic]);
    let shared: Handle = layer()
        .wait_for_ready(true)
        .layer(make.clone())
        .spawn_lazy(8);
    let err = shared.clone().oneshot(1).await.unwrap_err();
    assert_panicked(&*err);
    assert_eq!(shared.watch().disconnected().await.phase(), Phase::Closed);
    assert_panicked(&*shared.clone().oneshot(1).await.unwrap_err());
}

/// The error is `Closed`, caused by the task's panic.
fn assert_panicked(err: &(dyn std::error::Error + 'static)) {
    let closed = find::<Closed>(err).unwrap_or_else(|| panic!("not Closed: {err:?}"));
    let cause = std::error::Error::source(closed).expect("Closed names its cause");
    assert_eq!(cause.to_string(), "the connection task panicked", "{err:?}");
}

/// A panic in the connection's `call` or `poll_ready` ends the task the same way: the caller
/// and every queued request get `Closed` caused by the panic, never a hang, and the watch closes.
#[tokio::test(start_paused = true)]
async fn panic_in_the_connection_surfaces_as_closed() {
    for in_poll_ready in [false, true] {
        let make = Make::new();
        let before = alive_tasks();
        let shared = spawn(layer(), &make, 8);
        let watch = shared.watch();
        watch.connected().await.unwrap();
        let conn = make.conn();
        conn.set_busy(true); // requests queue up
        let calls: Vec<_> = (1..=3)
            .map(|n| tokio::spawn(shared.clone().oneshot(n)))
            .collect();
        settle().await;
        conn.panic_next(in_poll_ready);
        conn.set_busy(false);
        for call in calls {
            assert_panicked(&*call.await.unwrap().unwrap_err());
        }
        assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
        assert_panicked(&*shared.clone().oneshot(1).await.unwrap_err());
        settle().await;
        assert_eq!(alive_tasks(), before, "in_poll_ready: {in_poll_ready}");
    }
}

/// Giving up after max_attempts closes the handle with GaveUp as the cause.
#[tokio::test(start_paused = true)]
async fn giving_up_closes_the_handle() {
    let make = Make::new();
    make.otherwise(Dial::Fail("refused"));
    let shared = spawn(
        ReconnectLayer::new("peer")
            .backoff(Backoff::constant(Duration::from_secs(1)))
            .max_attempts(2)
            .wait_for_ready(true),
        &make,
        8,
    );
    let pending = tokio::spawn(shared.clone().oneshot(1));
    let err = pending.await.unwrap().unwrap_err();
    assert!(err.is::<Closed>());
    assert_eq!(find::<GaveUp>(&*err).unwrap().attempts(), 2);
    assert_eq!(make.dials(), 2);
    assert!(shared.is_closed());
}

/// reset_backoff on a handle makes the waiting retry happen now.
#[tokio::test(start_paused = true)]
async fn reset_backoff_on_the_handle_dials_now() {
    let make = Make::new();
    make.push([Dial::Fail("refused")]);
    let shared = spawn(layer(), &make, 8);
    settle().await;
    assert_eq!(make.dials(), 1);
    advance_ms(500).await;
    let reset_at = Instant::now();
    shared.reset_backoff();
    shared.watch().connected().await.unwrap();
    assert_eq!(make.dials(), 2);
    // Without the reset the retry would come 1.5 s later.
    assert!(
        reset_at.elapsed() <= Duration::from_millis(1),
        "{:?}",
        reset_at.elapsed()
    );
}

/// A request whose caller gave up while it was queued is never sent.
#[tokio::test(start_paused = true)]
async fn cancelled_request_is_never_sent() {
    let make = Make::new();
    make.push([Dial::ConnectAfter(Duration::from_secs(1))]);
    let shared = spawn(layer(), &make, 8);
    let mut svc = shared.clone();
    assert_ready_ok!(support::poll_ready(&mut svc));
    drop(svc.call(1)); // queued, then abandoned
    advance_ms(1000).await;
    assert_eq!(shared.clone().oneshot(5).await.unwrap(), 6);
    assert_eq!(make.conn().calls(), 1);
}

/// mark_disconnected on a handle drops the connection at once, the watch counts the loss, and the task reconnects.
#[tokio::test(start_paused = true)]
async fn mark_disconnected_on_the_handle_drops_and_reconnects() {
    let make = Make::new();
    let shared = spawn(layer(), &make, 8);
    let watch = shared.watch();
    watch.connected().await.unwrap();
    advance_ms(10_000).await; // a proven connection: the reconnect is immediate
    assert_eq!(shared.clone().oneshot(1).await.unwrap(), 2);

    shared.mark_disconnected();
    settle().await;
    let state = watch.state();
    assert_eq!(state.disconnects(), 1);
    assert_eq!(state.connects(), 2);
    assert_eq!(make.dials(), 2);
    assert!(!make.conns()[0].is_held(), "the old connection is gone");
    assert_eq!(shared.clone().oneshot(2).await.unwrap(), 3);
    assert_eq!(make.conns()[1].calls(), 1, "served by the new connection");
}

/// ReconnectLayer::shared builds the eager handle inside a ServiceBuilder.
#[tokio::test(start_paused = true)]
async fn shared_layer_builds_an_eager_handle_in_a_service_builder() {
    let make = Make::new();
    let shared: Handle = tower::ServiceBuilder::new()
        .layer(layer().shared(8))
        .service(make.clone());
    shared.watch().connected().await.unwrap();
    assert_eq!(make.dials(), 1, "connected before any request");
    assert_eq!(shared.clone().oneshot(20).await.unwrap(), 21);
    shared.close();
    assert!(shared.watch().disconnected().await.is_closed());
}

/// mark_disconnected then reset_backoff, taken in one wake-up, drop a young connection and redial at once, as on a plain Reconnect.
#[tokio::test(start_paused = true)]
async fn mark_disconnected_then_reset_backoff_redials_at_once() {
    let make = Make::new();
    let shared = spawn(layer(), &make, 8);
    let watch = shared.watch();
    watch.connected().await.unwrap();
    // Younger than the proof of life: losing it counts as a failed attempt,
    // with a delay that only the reset cancels.
    advance_ms(100).await;
    let marked_at = Instant::now();
    shared.mark_disconnected();
    shared.reset_backoff();
    settle().await;
    assert_eq!(make.dials(), 2, "redialled without waiting out the delay");
    assert!(watch.is_connected());
    assert_eq!(marked_at.elapsed(), Duration::ZERO);
}

/// Requests failed fast during an outage are gone: none is sent later on
/// the new connection, though the handle keeps a queue and sends some
/// requests again. (A plain `Reconnect` cannot hold a request it refused;
/// the shared task could.)
#[tokio::test(start_paused = true)]
async fn requests_failed_fast_are_never_sent_on_the_next_connection() {
    let make = Make::new();
    make.push([Dial::Fail("refused")]);
    let shared = spawn(layer(), &make, 16);
    let watch = shared.watch();
    settle().await;
    assert_eq!(watch.phase(), Phase::Disconnected);
    for n in 1..=10 {
        let err = shared.clone().oneshot(n).await.unwrap_err();
        assert!(err.is::<Unavailable>(), "{err:?}");
    }
    watch.connected().await.unwrap();
    settle().await;
    assert_eq!(make.conn().calls(), 0, "a refused request was sent later");
    assert_eq!(shared.clone().oneshot(7).await.unwrap(), 8);
    assert_eq!(make.conn().calls(), 1);
}

/// `Debug` shows the handle's state, a response future's stage and the
/// layer's bound, without bounds on the connection.
#[tokio::test(start_paused = true)]
async fn debug_shows_the_handle_its_futures_and_its_layer() {
    let make = Make::new();
    let shared = spawn(layer(), &make, 8);
    shared.watch().connected().await.unwrap();
    let debug = format!("{shared:?}");
    assert!(debug.starts_with("Shared"), "{debug}");
    assert!(debug.contains("phase: Connected"), "{debug}");
    assert!(debug.contains("closed: false"), "{debug}");

    let mut svc = shared.clone();
    let fut = svc.ready().await.unwrap().call(1);
    let debug = format!("{fut:?}");
    assert!(debug.contains("queued"), "{debug}");
    assert_eq!(fut.await.unwrap(), 2);

    let debug = format!("{:?}", layer().shared::<u32>(16));
    assert!(debug.starts_with("SharedLayer"), "{debug}");
    assert!(debug.contains("bound: 16"), "{debug}");
}
