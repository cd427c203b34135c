//! The idle timeout, on a paused clock over the scripted make service: a
//! connection with nothing in flight for the timeout is closed on purpose
//! (phase `Idle`, counted in `idle_closes`, not in `disconnects`), nothing
//! dials while idle, and the next request connects as the first one did.
mod support;

use std::time::Duration;

use redial::{error::ConnectionLost, Backoff, Phase, Reconnect, ReconnectLayer, Shared};
use support::{advance_ms, poll_ready, ConnError, Dial, Make};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};

/// The idle timeout of these tests.
const IDLE: Duration = Duration::from_secs(10);
const IDLE_MS: u64 = 10_000;

type Handle = Shared<u32, redial::future::ResponseFuture<<support::Conn as Service<u32>>::Future>>;

/// Exact delays (2 s, so a connection proves itself after 2 s) and the idle
/// timeout.
fn layer() -> ReconnectLayer<&'static str> {
    ReconnectLayer::new("peer")
        .backoff(Backoff::default().jitter(0.0))
        .idle_timeout(IDLE)
}

/// Lets the worker task run until it has nothing left to do.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

// ===== Reconnect =====

/// The timer wakes the task driving the service at exactly the idle
/// deadline; its next poll closes the connection (an idle close, not a
/// disconnect) and connects anew, as a first request does.
#[tokio::test(start_paused = true)]
async fn reconnect_closes_at_the_idle_deadline_and_the_next_poll_connects_anew() {
    let make = Make::new();
    make.push([Dial::Connect, Dial::ConnectAfter(Duration::from_millis(50))]);
    let mut svc = layer().layer(make.clone());
    let watch = svc.watch();

    let mut owner = task::spawn(());
    assert_ready_ok!(owner.enter(|cx, _| svc.poll_ready(cx)));
    let mut response = task::spawn(svc.call(1));
    assert_eq!(assert_ready_ok!(response.poll()), 2);
    assert_ready_ok!(owner.enter(|cx, _| svc.poll_ready(cx)));
    advance_ms(IDLE_MS - 1).await;
    assert!(!owner.is_woken(), "woken before the deadline");
    assert!(watch.is_connected());
    advance_ms(1).await;
    assert!(
        owner.is_woken(),
        "the idle timer wakes the task at the deadline"
    );

    assert_pending!(owner.enter(|cx, _| svc.poll_ready(cx)));
    let state = watch.state();
    assert_eq!(state.idle_closes(), 1);
    assert_eq!(state.disconnects(), 0, "an idle close is not a disconnect");
    assert!(state.last_error().is_none(), "{state:?}");
    // The new attempt shows as a first one does: Connecting, attempt 1.
    assert_eq!(state.phase(), Phase::Connecting);
    assert_eq!(state.attempt(), 1);
    assert!(
        !make.conns()[0].is_held(),
        "the idle connection was dropped"
    );
    assert_eq!(make.dials(), 2);

    advance_ms(50).await;
    assert_ready_ok!(owner.enter(|cx, _| svc.poll_ready(cx)));
    assert_eq!(svc.call(2).await.unwrap(), 3);
    assert_eq!(make.conns()[1].calls(), 1);
    assert_eq!(watch.state().connects(), 2);
}

/// A `Reconnect` nobody polls makes no dial while idle, however long; the
/// next request finds the connection idle past the deadline, closes it and
/// reconnects.
#[tokio::test(start_paused = true)]
async fn reconnect_no_dial_while_idle() {
    let make = Make::new();
    let mut svc = layer().layer(make.clone());
    let watch = svc.watch();
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);

    advance_ms(3_600_000).await;
    assert_eq!(make.dials(), 1, "no dial while idle");

    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 3);
    assert_eq!(make.dials(), 2);
    let calls: Vec<_> = make.conns().iter().map(|c| c.calls()).collect();
    assert_eq!(calls, [1, 1], "the stale connection was not used");
    let state = watch.state();
    assert_eq!((state.idle_closes(), state.disconnects()), (1, 0));
    assert!(state.is_connected());
}

/// A request exactly at the idle deadline does not get the old connection:
/// it is closed, and the request waits for a new one and succeeds. One a
/// millisecond earlier keeps the connection, and the clock starts again
/// when it ends.
#[tokio::test(start_paused = true)]
async fn reconnect_request_at_the_idle_deadline_waits_for_a_new_connection() {
    let make = Make::new();
    let mut svc = layer().layer(make.clone());
    let watch = svc.watch();
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);

    advance_ms(IDLE_MS - 1).await;
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 3);
    assert_eq!((make.dials(), make.conn().calls()), (1, 2), "kept");

    advance_ms(IDLE_MS).await;
    let started = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 4);
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "waited only for the dial"
    );
    assert_eq!(make.dials(), 2);
    let calls: Vec<_> = make.conns().iter().map(|c| c.calls()).collect();
    assert_eq!(calls, [2, 1], "the request went to the new connection");
    assert_eq!(watch.state().idle_closes(), 1);
}

/// A response pending past the timeout keeps the connection open; the idle
/// clock starts when it resolves.
#[tokio::test(start_paused = true)]
async fn reconnect_response_in_flight_keeps_the_connection_past_the_timeout() {
    let make = Make::new();
    let mut svc = layer().layer(make.clone());
    let watch = svc.watch();
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);

    make.conn().hold();
    let mut response = task::spawn(svc.ready().await.unwrap().call(2));
    assert_pending!(response.poll());
    advance_ms(3 * IDLE_MS).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert!(watch.is_connected());
    assert_eq!((watch.state().idle_closes(), make.dials()), (0, 1));

    make.conn().release();
    assert_eq!(response.await.unwrap(), 3);
    advance_ms(IDLE_MS - 1).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(watch.state().idle_closes(), 0);
    advance_ms(1).await;
    let _ = poll_ready(&mut svc);
    assert_eq!(watch.state().idle_closes(), 1);
    assert_eq!(make.dials(), 2);
}

/// The task that drives the service is woken at the idle deadline even
/// when its last wake-up came from the timer at the timer's own deadline
/// with a request still in flight: the timer, fired, is armed again for
/// the new deadline, not left spent (which would leave the idle connection
/// open until something else polled).
#[tokio::test(start_paused = true)]
async fn reconnect_timer_fired_with_a_request_in_flight_is_armed_again() {
    let make = Make::new();
    let mut svc = layer().layer(make.clone());
    let watch = svc.watch();
    let mut owner = task::spawn(());
    assert_ready_ok!(owner.enter(|cx, _| svc.poll_ready(cx)));
    make.conn().hold();
    let mut response = task::spawn(svc.call(1));
    assert_pending!(response.poll());

    // In flight: the timer checks back a timeout from now.
    assert_ready_ok!(owner.enter(|cx, _| svc.poll_ready(cx)));
    advance_ms(IDLE_MS).await;
    assert!(owner.is_woken(), "the timer checks back a timeout later");
    // Still in flight at the timer's own deadline: it must be armed anew.
    assert_ready_ok!(owner.enter(|cx, _| svc.poll_ready(cx)));
    make.conn().release();
    assert_eq!(assert_ready_ok!(response.poll()), 2);

    // Idle from now: the task is woken at the idle deadline, and its poll
    // closes the connection.
    advance_ms(IDLE_MS).await;
    assert!(
        owner.is_woken(),
        "nothing woke the task at the idle deadline"
    );
    let _ = owner.enter(|cx, _| svc.poll_ready(cx));
    assert_eq!(watch.state().idle_closes(), 1);
}

/// `mark_disconnected` on a connection whose idle timer holds the task's
/// waker wakes no one: the reconnect is due at once, and the caller that
/// marked it polls next anyway; the timer is left as it was, not re-armed
/// for a time already passed, which would fire a needless wake-up.
#[tokio::test(start_paused = true)]
async fn reconnect_mark_disconnected_wakes_no_one() {
    let make = Make::new();
    let mut svc = layer().layer(make.clone());
    let mut owner = task::spawn(());
    assert_ready_ok!(owner.enter(|cx, _| svc.poll_ready(cx)));
    make.conn().hold();
    let mut response = task::spawn(svc.call(1));
    assert_pending!(response.poll());
    // Proven (past the first delay), with the idle timer armed by this poll.
    advance_ms(3_000).await;
    assert_ready_ok!(owner.enter(|cx, _| svc.poll_ready(cx)));

    svc.mark_disconnected();
    tokio::task::yield_now().await;
    assert!(!owner.is_woken(), "a needless wake-up");
    assert_eq!(svc.watch().phase(), Phase::Disconnected);
    assert_ready_ok!(owner.enter(|cx, _| svc.poll_ready(cx)));
    assert_eq!(make.dials(), 2);
}

/// A response future dropped before it resolves is no longer in flight.
#[tokio::test(start_paused = true)]
async fn reconnect_dropped_response_is_no_longer_in_flight() {
    let make = Make::new();
    let mut svc = layer().layer(make.clone());
    let watch = svc.watch();
    assert_ready_ok!(poll_ready(&mut svc));
    make.conn().hold();
    let response = svc.call(1);
    advance_ms(IDLE_MS).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(watch.state().idle_closes(), 0, "in flight");
    drop(response);

    advance_ms(IDLE_MS - 1).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(watch.state().idle_closes(), 0);
    advance_ms(1).await;
    let _ = poll_ready(&mut svc);
    assert_eq!(watch.state().idle_closes(), 1, "idle since the drop");
}

// ===== Shared =====

/// An eager handle closes its idle connection at the deadline: phase
/// `Idle`, an idle close and no disconnect, the connection dropped.
#[tokio::test(start_paused = true)]
async fn shared_closes_an_idle_connection_at_the_timeout() {
    let make = Make::new();
    let shared: Handle = layer().layer(make.clone()).spawn(8);
    let watch = shared.watch();
    assert_eq!(shared.clone().oneshot(1).await.unwrap(), 2);
    settle().await;

    advance_ms(IDLE_MS - 1).await;
    settle().await;
    assert!(watch.is_connected());
    advance_ms(1).await;
    settle().await;
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Idle);
    assert_eq!(state.idle_closes(), 1);
    assert_eq!(state.disconnects(), 0);
    assert_eq!(state.connects(), 1);
    assert!(state.last_error().is_none(), "{state:?}");
    assert!(!make.conn().is_held(), "the idle connection was dropped");
}

/// After an idle close an eager handle behaves as a lazy one: no dial
/// while idle, and the next request connects and is served.
#[tokio::test(start_paused = true)]
async fn shared_eager_no_dial_while_idle_and_the_next_request_reconnects() {
    let make = Make::new();
    let shared: Handle = layer().layer(make.clone()).spawn(8);
    let watch = shared.watch();
    // Eager: connected with no request, and closed with none either.
    watch.connected().await.unwrap();
    advance_ms(IDLE_MS).await;
    settle().await;
    assert_eq!(watch.phase(), Phase::Idle);

    advance_ms(3_600_000).await;
    settle().await;
    assert_eq!(make.dials(), 1, "no dial while idle");
    assert_eq!(watch.phase(), Phase::Idle);

    assert_eq!(shared.clone().oneshot(1).await.unwrap(), 2);
    assert_eq!(make.dials(), 2);
    assert_eq!(make.conn().calls(), 1);
    assert!(watch.is_connected());

    // And it idles out again.
    advance_ms(IDLE_MS).await;
    settle().await;
    assert_eq!(watch.state().idle_closes(), 2);
    assert_eq!(make.dials(), 2);
}

/// A lazy handle: connects at the first request, closes at the idle
/// deadline, makes no dial while idle, and reconnects at the next request.
#[tokio::test(start_paused = true)]
async fn shared_lazy_no_dial_while_idle_and_the_next_request_reconnects() {
    let make = Make::new();
    let shared: Handle = layer().layer(make.clone()).spawn_lazy(8);
    let watch = shared.watch();
    settle().await;
    assert_eq!(make.dials(), 0);
    assert_eq!(shared.clone().oneshot(1).await.unwrap(), 2);

    advance_ms(IDLE_MS).await;
    settle().await;
    assert_eq!(watch.phase(), Phase::Idle);
    advance_ms(3_600_000).await;
    settle().await;
    assert_eq!(make.dials(), 1, "no dial while idle");

    assert_eq!(shared.clone().oneshot(2).await.unwrap(), 3);
    assert_eq!(make.dials(), 2);
    assert_eq!(watch.state().idle_closes(), 1);
}

/// A request sent exactly at the idle deadline: the connection is closed
/// (whichever the task sees first, the timer or the request) and the request
/// waits for a new one and succeeds.
#[tokio::test(start_paused = true)]
async fn shared_request_at_the_idle_deadline_waits_for_a_new_connection() {
    let make = Make::new();
    make.push([Dial::Connect, Dial::ConnectAfter(Duration::from_millis(50))]);
    let shared: Handle = layer().layer(make.clone()).spawn(8);
    let watch = shared.watch();
    assert_eq!(shared.clone().oneshot(1).await.unwrap(), 2);

    advance_ms(IDLE_MS).await;
    let started = Instant::now();
    assert_eq!(shared.clone().oneshot(2).await.unwrap(), 3);
    assert_eq!(started.elapsed(), Duration::from_millis(50), "one dial");
    let calls: Vec<_> = make.conns().iter().map(|c| c.calls()).collect();
    assert_eq!(calls, [1, 1], "the request went to the new connection");
    let state = watch.state();
    assert_eq!((state.idle_closes(), state.disconnects()), (1, 0));
}

/// While a response is pending the connection stays open past the timeout;
/// it is closed once it has been idle for the timeout after that.
#[tokio::test(start_paused = true)]
async fn shared_response_in_flight_keeps_the_connection_past_the_timeout() {
    let make = Make::new();
    let shared: Handle = layer().layer(make.clone()).spawn(8);
    let watch = shared.watch();
    watch.connected().await.unwrap();

    make.conn().hold();
    let response = tokio::spawn(shared.clone().oneshot(1));
    settle().await;
    assert_eq!(make.conn().calls(), 1);
    advance_ms(3 * IDLE_MS).await;
    settle().await;
    assert!(watch.is_connected());
    assert_eq!(watch.state().idle_closes(), 0);

    make.conn().release();
    assert_eq!(response.await.unwrap().unwrap(), 2);
    advance_ms(IDLE_MS - 1).await;
    settle().await;
    assert!(watch.is_connected());
    advance_ms(1).await;
    settle().await;
    assert_eq!(watch.phase(), Phase::Idle);
    assert_eq!(make.dials(), 1);
}

// ===== the server closes first =====

/// With an idle timeout, a healthy connection the server closes while
/// nothing is in flight is a loss (counted, with its cause) that leaves
/// the handle idle: no dial until the next request.
#[tokio::test(start_paused = true)]
async fn shared_server_closing_an_idle_connection_leaves_it_idle() {
    let make = Make::new();
    let shared: Handle = layer().layer(make.clone()).spawn(8);
    let watch = shared.watch();
    watch.connected().await.unwrap();

    advance_ms(5_000).await;
    make.conn().kill();
    settle().await;
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Idle);
    assert_eq!(state.disconnects(), 1);
    assert_eq!(state.idle_closes(), 0);
    let lost = state.last_error().unwrap();
    assert!(lost.is::<ConnectionLost>(), "{lost:?}");
    assert!(lost.source().unwrap().is::<ConnError>());

    advance_ms(3_600_000).await;
    settle().await;
    assert_eq!(make.dials(), 1, "no dial while idle");
    assert_eq!(shared.clone().oneshot(1).await.unwrap(), 2);
    assert_eq!(make.dials(), 2);
}

/// A request already waiting when the server closes the connection is
/// served by a reconnect made at once.
#[tokio::test(start_paused = true)]
async fn shared_server_closing_with_a_request_waiting_reconnects_at_once() {
    let make = Make::new();
    let shared: Handle = layer().layer(make.clone()).spawn(8);
    let watch = shared.watch();
    watch.connected().await.unwrap();
    advance_ms(5_000).await;

    // The connection is not ready, so the request waits in the queue.
    make.conn().set_busy(true);
    let response = tokio::spawn(shared.clone().oneshot(1));
    settle().await;
    assert_eq!(make.conn().calls(), 0);

    let closed_at = Instant::now();
    make.conn().kill();
    assert_eq!(response.await.unwrap().unwrap(), 2);
    assert_eq!(closed_at.elapsed(), Duration::ZERO);
    assert_eq!(make.dials(), 2);
    assert_eq!(make.conns()[1].calls(), 1);
    assert_eq!(watch.state().disconnects(), 1);
}

/// Without an idle timeout an eager handle reconnects at once after the
/// server closes an idle connection, as it always has.
#[tokio::test(start_paused = true)]
async fn shared_without_idle_timeout_reconnects_at_once_after_a_server_close() {
    let make = Make::new();
    let shared: Handle = ReconnectLayer::new("peer")
        .backoff(Backoff::default().jitter(0.0))
        .layer(make.clone())
        .spawn(8);
    let watch = shared.watch();
    watch.connected().await.unwrap();
    advance_ms(5_000).await;
    make.conn().kill();
    settle().await;
    assert!(watch.is_connected());
    assert_eq!(make.dials(), 2);
}

// ===== settings =====

/// Off by default: a connection idle for an hour is kept and used.
#[tokio::test(start_paused = true)]
async fn off_by_default() {
    let make = Make::new();
    let mut svc = Reconnect::new(make.clone(), "peer");
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);
    advance_ms(3_600_000).await;
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 3);
    assert_eq!((make.dials(), make.conn().calls()), (1, 2));
    assert_eq!(svc.watch().state().idle_closes(), 0);
}
