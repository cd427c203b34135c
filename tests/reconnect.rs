//! The state machine: readiness, fail fast, wait-for-ready, resets, give-up.
mod support;

use std::{task::Poll, time::Duration};

use redial::{
    error::{ConnectFailed, ConnectionLost, GaveUp, NotReady, Unavailable},
    Backoff, Phase, Reconnect, ReconnectLayer,
};
use support::{advance_ms, poll_ready, ConnError, Dial, DialError, Make};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{buffer::Buffer, BoxError, Layer, Service, ServiceExt};

/// The schedule used where exact times matter: 2 s, 3.2 s, 5.12 s, … exactly.
fn exact() -> ReconnectLayer<&'static str> {
    ReconnectLayer::new("peer").backoff(Backoff::default().jitter(0.0))
}

fn unavailable(err: &BoxError) -> &Unavailable {
    err.downcast_ref::<Unavailable>()
        .unwrap_or_else(|| panic!("expected Unavailable, got {err:?}"))
}

/// A first request waits for the first connect and then reaches the connection.
#[tokio::test(start_paused = true)]
async fn first_request_waits_for_connect() {
    let make = Make::new();
    make.push([Dial::ConnectAfter(Duration::from_millis(50))]);
    let mut svc = Reconnect::new(make.clone(), "peer");
    let watch = svc.watch();
    let mut ready = task::spawn(async { svc.ready().await.map(|_| ()) });
    assert_pending!(ready.poll());
    assert_eq!(watch.phase(), Phase::Connecting);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
    drop(ready);
    assert_eq!(svc.call(1).await.unwrap(), 2);
    assert_eq!(make.dials(), 1);
    assert_eq!(make.conn().calls(), 1);
}

/// While Disconnected, N concurrent callers fail fast with the cause and make no dial.
#[tokio::test(start_paused = true)]
async fn fail_fast_with_concurrent_callers_makes_no_extra_dials() {
    let make = Make::new();
    make.otherwise(Dial::Fail("connection refused"));
    let svc = Buffer::new(exact().layer(make.clone()), 128);

    let callers: Vec<_> = (0..100)
        .map(|_| tokio::spawn(svc.clone().oneshot(1)))
        .collect();
    for caller in callers {
        let err = caller.await.unwrap().unwrap_err();
        let err = unavailable(&err);
        assert_eq!(err.attempt(), 1);
        let cause = std::error::Error::source(err).unwrap();
        let failed = cause.downcast_ref::<ConnectFailed>().unwrap();
        assert!(std::error::Error::source(failed).unwrap().is::<DialError>());
    }
    assert_eq!(make.dials(), 1, "100 callers made one dial");

    // 10 s of a request every 10 ms: only the schedule's dials (0, 2, 5.2 s).
    for _ in 0..1000 {
        let err = svc.clone().oneshot(1).await.unwrap_err();
        unavailable(&err);
        advance_ms(10).await;
    }
    assert_eq!(make.dials(), 3);
}

/// In wait-for-ready mode under Buffer, callers wait through the outage and all succeed.
#[tokio::test(start_paused = true)]
async fn wait_for_ready_under_buffer_waits_until_connected() {
    let make = Make::new();
    make.push([Dial::Fail("refused"), Dial::Fail("refused")]);
    let reconnect = exact().wait_for_ready(true).layer(make.clone());
    let watch = reconnect.watch();
    let svc = Buffer::new(reconnect, 16);

    let started = Instant::now();
    let callers: Vec<_> = (1..=5u32)
        .map(|n| tokio::spawn(svc.clone().oneshot(n)))
        .collect();
    for (n, caller) in (1..=5u32).zip(callers) {
        assert_eq!(caller.await.unwrap().unwrap(), n + 1);
    }
    // Attempts at 0 s, 2 s and 5.2 s; nobody got an answer before the third.
    assert_eq!(started.elapsed(), Duration::from_millis(5200));
    assert_eq!(make.dials(), 3);
    assert_eq!(make.conn().calls(), 5);
    assert!(watch.is_connected());
}

/// tower::reconnect's bug: an error from an earlier attempt is never returned after a later connect.
#[tokio::test(start_paused = true)]
async fn stale_error_is_never_returned_after_a_later_connect() {
    let make = Make::new();
    make.push([Dial::Fail("refused")]);
    let mut svc = exact().layer(make.clone());

    // Fail fast: ready, but the caller walks away without calling.
    assert!(poll_ready(&mut svc).is_ready());
    assert_eq!(svc.watch().phase(), Phase::Disconnected);

    advance_ms(2000).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(svc.watch().phase(), Phase::Connected);
    assert_eq!(svc.call(1).await.unwrap(), 2);
}

/// The Unavailable error describes the state at the call: the latest attempt and retry time.
#[tokio::test(start_paused = true)]
async fn unavailable_describes_the_state_at_the_call() {
    let make = Make::new();
    make.otherwise(Dial::Fail("refused"));
    let mut svc = exact().layer(make.clone());
    let t0 = Instant::now();

    assert_ready_ok!(poll_ready(&mut svc));
    let err = svc.call(1).await.unwrap_err();
    assert_eq!(unavailable(&err).attempt(), 1);
    assert_eq!(
        unavailable(&err).retry_at(),
        Some(t0 + Duration::from_secs(2))
    );

    advance_ms(2000).await;
    assert_ready_ok!(poll_ready(&mut svc));
    let err = svc.call(1).await.unwrap_err();
    assert_eq!(unavailable(&err).attempt(), 2);
    assert_eq!(
        unavailable(&err).retry_at(),
        Some(t0 + Duration::from_millis(5200))
    );
    assert_eq!(
        err.to_string(),
        "connection unavailable, next attempt in 3.2s"
    );
}

/// A connection that stayed up for the first retry delay resets the schedule, and the first reconnect is immediate.
#[tokio::test(start_paused = true)]
async fn reset_after_proven_connection() {
    let make = Make::new();
    make.push([Dial::Fail("refused"), Dial::Fail("refused"), Dial::Connect]);
    make.otherwise(Dial::Fail("refused"));
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();

    // Attempts at 0, 2, 5.2 s; the third connects.
    assert_ready_ok!(poll_ready(&mut svc));
    advance_ms(2000).await;
    assert_ready_ok!(poll_ready(&mut svc));
    advance_ms(3200).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dials(), 3);
    assert!(watch.is_connected());

    // Up for 2 s: proven. Its loss redials at once.
    advance_ms(2000).await;
    make.conn().kill();
    let lost_at = Instant::now();
    assert_ready_ok!(poll_ready(&mut svc)); // that redial failed: fail fast
    assert_eq!(make.dials(), 4);
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Disconnected);
    assert_eq!(state.attempt(), 1, "attempts count afresh");
    assert_eq!(state.disconnects(), 1);
    // The schedule restarted: 2 s, not 8.192 s.
    assert_eq!(state.retry_at(), Some(lost_at + Duration::from_secs(2)));
}

/// A connection lost before the first retry delay counts as a failed attempt: no reset, no immediate redial.
#[tokio::test(start_paused = true)]
async fn no_reset_after_connect_then_close() {
    let make = Make::new();
    make.push([Dial::Fail("refused")]);
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();

    assert_ready_ok!(poll_ready(&mut svc));
    advance_ms(2000).await;
    assert_ready_ok!(poll_ready(&mut svc)); // attempt 2 connects at 2 s
    assert!(watch.is_connected());

    advance_ms(500).await;
    make.conn().kill();
    assert_ready_ok!(poll_ready(&mut svc)); // fail fast, no redial
    assert_eq!(make.dials(), 2);
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Disconnected);
    assert_eq!(state.attempt(), 2);
    // Counted from the start of attempt 2 (2 s) with the next delay (3.2 s).
    assert_eq!(state.retry_at(), Some(t0 + Duration::from_millis(5200)));
    let lost = state.last_error().unwrap();
    assert!(lost.is::<ConnectionLost>());
    assert!(lost.source().unwrap().is::<ConnError>());

    advance_ms(2699).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dials(), 2, "no dial before the retry time");
    advance_ms(1).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dials(), 3);
    assert_eq!(watch.state().attempt(), 3);
}

/// After a proven connection is lost, requests wait for the immediate reconnect instead of failing.
#[tokio::test(start_paused = true)]
async fn requests_wait_for_the_reconnect_after_a_healthy_loss() {
    let make = Make::new();
    make.push([Dial::Connect, Dial::ConnectAfter(Duration::from_millis(30))]);
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();
    assert_ready_ok!(poll_ready(&mut svc));
    advance_ms(60_000).await;
    make.conn().kill();

    assert_pending!(poll_ready(&mut svc));
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Connecting);
    assert_eq!(state.disconnects(), 1);
    advance_ms(30).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(svc.call(41).await.unwrap(), 42);
    assert_eq!(watch.state().connects(), 2);
}

/// reset_backoff makes a waiting retry due now and starts the schedule afresh.
#[tokio::test(start_paused = true)]
async fn reset_backoff_dials_now_and_restarts_the_schedule() {
    let make = Make::new();
    make.otherwise(Dial::Fail("refused"));
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();

    assert_ready_ok!(poll_ready(&mut svc)); // attempt 1 at 0 s
    advance_ms(2000).await;
    assert_ready_ok!(poll_ready(&mut svc)); // attempt 2 at 2 s, next at 5.2 s
    assert_eq!(make.dials(), 2);

    advance_ms(500).await;
    svc.reset_backoff();
    let reset_at = Instant::now();
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dials(), 3, "dialled at once");
    assert_eq!(
        watch.state().retry_at(),
        Some(reset_at + Duration::from_secs(2)),
        "the schedule starts again at its first delay"
    );
}

/// max_attempts failures in a row end in Closed with GaveUp, and no dial after.
#[tokio::test(start_paused = true)]
async fn max_attempts_ends_in_closed() {
    let make = Make::new();
    make.otherwise(Dial::Fail("refused"));
    let mut svc = ReconnectLayer::new("peer")
        .backoff(Backoff::constant(Duration::from_secs(1)))
        .max_attempts(3)
        .layer(make.clone());
    let watch = svc.watch();

    assert_ready_ok!(poll_ready(&mut svc));
    advance_ms(1000).await;
    assert_ready_ok!(poll_ready(&mut svc));
    advance_ms(1000).await;
    let err = match poll_ready(&mut svc) {
        Poll::Ready(Err(err)) => err,
        other => panic!("expected an error from poll_ready, got {other:?}"),
    };
    let gave_up = err.downcast_ref::<GaveUp>().unwrap();
    assert_eq!(gave_up.attempts(), 3);
    assert!(std::error::Error::source(gave_up)
        .unwrap()
        .is::<ConnectFailed>());
    assert_eq!(watch.phase(), Phase::Closed);

    // Final: still an error, and no more dials however long we wait.
    advance_ms(600_000).await;
    assert!(matches!(poll_ready(&mut svc), Poll::Ready(Err(_))));
    assert_eq!(make.dials(), 3);
    assert!(watch.connected().await.is_err());
}

/// `call` without a ready `poll_ready` fails with NotReady rather than panicking, and readiness is used once.
#[tokio::test(start_paused = true)]
async fn call_before_poll_ready_returns_not_ready() {
    let make = Make::new();
    let mut svc = Reconnect::new(make.clone(), "peer");
    let err = svc.call(1).await.unwrap_err();
    assert!(err.is::<NotReady>());
    assert_eq!(make.dials(), 0);

    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(svc.call(1).await.unwrap(), 2);
    assert!(svc.call(1).await.unwrap_err().is::<NotReady>());
    assert_eq!(make.conn().calls(), 1);
}

/// A response error the classifier calls fatal drops the connection; without a classifier it does not.
#[tokio::test(start_paused = true)]
async fn fatal_response_error_reconnects_only_with_a_classifier() {
    for classify in [true, false] {
        let make = Make::new();
        let mut layer = exact();
        if classify {
            layer = layer.disconnect_on(|err| err.is::<ConnError>());
        }
        let mut svc = layer.layer(make.clone());
        assert_ready_ok!(poll_ready(&mut svc));
        advance_ms(5000).await;

        // 0 makes the connection answer "broken pipe"; the caller gets it as is.
        let err = svc.call(0).await.unwrap_err();
        assert!(err.is::<ConnError>());

        assert_ready_ok!(poll_ready(&mut svc));
        let state = svc.watch().state();
        if classify {
            assert_eq!(make.dials(), 2, "reconnected at once");
            assert_eq!(state.disconnects(), 1);
            assert_eq!(state.connects(), 2);
        } else {
            assert_eq!(make.dials(), 1);
            assert_eq!(state.disconnects(), 0);
        }
    }
}

/// mark_disconnected drops the connection, shows it on the watch, and the next poll_ready reconnects.
#[tokio::test(start_paused = true)]
async fn mark_disconnected_drops_the_connection() {
    let make = Make::new();
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();
    assert_ready_ok!(poll_ready(&mut svc));
    let first = make.conn();
    advance_ms(3000).await;

    svc.mark_disconnected();
    assert!(!first.is_held(), "the connection was dropped");
    let state = watch.state();
    assert_ne!(state.phase(), Phase::Connected);
    assert_eq!(state.disconnects(), 1);
    assert!(state.last_error().unwrap().is::<ConnectionLost>());

    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dials(), 2);
    assert!(watch.is_connected());

    // Not connected: a no-op.
    let mut idle = exact().layer(Make::new());
    idle.mark_disconnected();
    assert_eq!(idle.watch().phase(), Phase::Idle);
}

/// An error from the make service's poll_ready is a failed attempt, retried on the schedule.
#[tokio::test(start_paused = true)]
async fn make_poll_ready_error_is_a_failed_attempt() {
    let make = Make::new();
    make.fail_ready_once("make not ready");
    let mut svc = exact().layer(make.clone());
    assert_ready_ok!(poll_ready(&mut svc));
    let state = svc.watch().state();
    assert_eq!(state.phase(), Phase::Disconnected);
    assert!(state.last_error().unwrap().is::<ConnectFailed>());
    assert_eq!(make.dials(), 0);

    advance_ms(2000).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert!(svc.watch().is_connected());
    assert_eq!(make.dials(), 1);
}

/// A busy connection makes poll_ready pend without dialling, and its readiness wakes the caller.
#[tokio::test(start_paused = true)]
async fn busy_connection_is_pending_not_redialled() {
    let make = Make::new();
    let mut svc = exact().layer(make.clone());
    assert_ready_ok!(poll_ready(&mut svc));
    make.conn().set_busy(true);

    let mut ready = task::spawn(async { svc.ready().await.map(|_| ()) });
    assert_pending!(ready.poll());
    make.conn().set_busy(false);
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
    assert_eq!(make.dials(), 1);
}

/// Dropping the service drops the connection and closes the watch.
#[tokio::test(start_paused = true)]
async fn drop_closes_the_connection() {
    let make = Make::new();
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();
    assert_ready_ok!(poll_ready(&mut svc));
    let conn = make.conn();
    drop(svc);
    assert!(!conn.is_held());
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Closed);
    assert_eq!((state.connects(), state.disconnects()), (1, 1));
}

/// While waiting in Disconnected, the only wake-up is the retry timer (once closed, none:
/// `giving_up_leaves_no_timer_armed`).
#[tokio::test(start_paused = true)]
async fn only_the_retry_timer_wakes_a_waiting_caller() {
    let make = Make::new();
    make.otherwise(Dial::Fail("refused"));
    let mut svc = ReconnectLayer::new("peer")
        .backoff(Backoff::constant(Duration::from_secs(1)))
        .wait_for_ready(true)
        .max_attempts(3)
        .layer(make.clone());
    let mut ready = task::spawn(async { svc.ready().await.map(|_| ()) });

    assert_pending!(ready.poll()); // attempt 1 failed
    for attempt in 2..=3 {
        advance_ms(999).await;
        assert!(!ready.is_woken(), "woken before the retry time");
        advance_ms(1).await;
        assert!(ready.is_woken(), "the retry timer wakes the caller");
        if attempt < 3 {
            assert_pending!(ready.poll());
            assert_eq!(make.dials(), attempt);
        }
    }
    // Attempt 3 fails: the service gives up and the caller gets the error.
    assert!(matches!(ready.poll(), Poll::Ready(Err(_))));
    assert_eq!(make.dials(), 3);
}

/// Giving up disarms the timer: the attempt's connect deadline, armed with the caller's waker
/// while the attempt ran, never wakes that caller after the service closed.
#[tokio::test(start_paused = true)]
async fn giving_up_leaves_no_timer_armed() {
    let make = Make::new();
    make.otherwise(Dial::FailAfter(Duration::from_millis(1), "refused"));
    let mut svc = ReconnectLayer::new("peer")
        .wait_for_ready(true)
        .max_attempts(1)
        .layer(make.clone());
    let mut ready = task::spawn(async { svc.ready().await.map(|_| ()) });
    assert_pending!(ready.poll()); // the attempt runs; its 30 s deadline is armed
    advance_ms(1).await;
    assert!(ready.is_woken());
    assert!(matches!(ready.poll(), Poll::Ready(Err(_))), "gave up");
    advance_ms(60_000).await;
    assert!(!ready.is_woken(), "a timer outlived giving up");
}
