//! The wait timeout, on a paused clock over the scripted make service: a
//! request that waited that long for a connection fails with `Unavailable`
//! carrying the last connect error and is never sent; one that gets a
//! connection sooner succeeds.
mod support;

use std::{error::Error, time::Duration};

use redial::{
    error::{ConnectFailed, Unavailable},
    Backoff, Phase, ReconnectLayer, Shared,
};
use support::{advance_ms, Dial, DialError, Make};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{BoxError, Layer, Service, ServiceExt};

const WAIT: Duration = Duration::from_secs(5);

type Handle = Shared<u32, redial::future::ResponseFuture<<support::Conn as Service<u32>>::Future>>;

/// Attempts at 0, 2, 5.2, 10.32 s when they fail; requests wait for ready,
/// at most `WAIT`.
fn layer() -> ReconnectLayer<&'static str> {
    ReconnectLayer::new("peer")
        .backoff(Backoff::default().jitter(0.0))
        .wait_for_ready(true)
        .wait_timeout(WAIT)
}

fn unavailable(err: &BoxError) -> &Unavailable {
    err.downcast_ref::<Unavailable>()
        .unwrap_or_else(|| panic!("expected Unavailable, got {err:?}"))
}

/// The last connect error, through `Unavailable` and `ConnectFailed`.
fn dial_error(err: &Unavailable) -> &DialError {
    let failed = err
        .source()
        .unwrap()
        .downcast_ref::<ConnectFailed>()
        .unwrap();
    failed
        .source()
        .unwrap()
        .downcast_ref::<DialError>()
        .unwrap()
}

/// Lets the worker task run until it has nothing left to do.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

// ===== Reconnect =====

/// `poll_ready` pends from the first `Pending` of a wait for exactly the
/// wait timeout, then answers `Ready(Ok)` and `call` fails with
/// `Unavailable`: the last connect error as its source, the wait in
/// `waited`. The next request waits afresh; neither reaches the connection
/// that comes later.
#[tokio::test(start_paused = true)]
async fn reconnect_wait_times_out_with_the_last_connect_error() {
    let make = Make::new();
    make.otherwise(Dial::Fail("connection refused"));
    let mut svc = layer().layer(make.clone());
    let t0 = Instant::now();

    // The owner polls when woken: attempts at 0 and 2 s, the wait's end at 5 s.
    let mut owner = task::spawn(());
    assert_pending!(owner.enter(|cx, _| svc.poll_ready(cx)));
    advance_ms(2_000).await;
    assert!(owner.is_woken());
    assert_pending!(owner.enter(|cx, _| svc.poll_ready(cx)));
    assert_eq!(make.dials(), 2);
    advance_ms(2_999).await;
    assert!(!owner.is_woken());
    advance_ms(1).await;
    assert!(owner.is_woken(), "the wait's timer wakes the task");
    assert_ready_ok!(owner.enter(|cx, _| svc.poll_ready(cx)));
    let err = svc.call(1).await.unwrap_err();
    let err = unavailable(&err);
    assert_eq!(err.waited(), Some(WAIT));
    assert_eq!(err.attempt(), 2);
    assert_eq!(err.retry_at(), Some(t0 + Duration::from_millis(5200)));
    assert_eq!(dial_error(err).0, "connection refused");
    assert_eq!(
        err.to_string(),
        "connection unavailable after waiting 5s, next attempt in 200.0ms"
    );

    // A new wait, from 5 s to 10 s (attempt 3 at 5.2 s fails too).
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(t0.elapsed(), 2 * WAIT);
    assert_eq!(unavailable(&err).attempt(), 3);

    // The peer is back at attempt 4 (10.32 s): only the request made then
    // reaches the connection.
    make.otherwise(Dial::Connect);
    assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 4);
    assert_eq!(t0.elapsed(), Duration::from_millis(10_320));
    assert_eq!(make.conn().calls(), 1);
}

/// A request whose connection comes before the wait timeout is sent and
/// succeeds, as without one.
#[tokio::test(start_paused = true)]
async fn reconnect_request_connected_before_the_wait_timeout_succeeds() {
    let make = Make::new();
    make.push([Dial::Fail("connection refused")]);
    let mut svc = layer().layer(make.clone());
    let t0 = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    assert_eq!(make.conn().calls(), 1);
}

/// In fail-fast mode the wait timeout bounds the wait for the first
/// attempt, shorter than the connect timeout: the request fails with
/// `Unavailable` while the attempt goes on.
#[tokio::test(start_paused = true)]
async fn reconnect_wait_timeout_bounds_the_first_attempt_in_fail_fast_mode() {
    let make = Make::new();
    make.push([Dial::Hang]);
    let mut svc = ReconnectLayer::new("peer")
        .wait_timeout(WAIT)
        .layer(make.clone());
    let t0 = Instant::now();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(t0.elapsed(), WAIT);
    let err = unavailable(&err);
    assert_eq!(err.waited(), Some(WAIT));
    assert_eq!((err.attempt(), err.retry_at()), (1, None));
    assert!(err.source().is_none(), "no attempt has failed yet");
    assert_eq!(
        err.to_string(),
        "connection unavailable after waiting 5s, reconnecting now"
    );
    assert_eq!(svc.watch().phase(), Phase::Connecting);
}

/// The wait ends at its deadline by the clock, not only when its timer
/// fires: with a deadline between two timer ticks (1.5 ms), a poll at the
/// deadline itself finds the wait over although the timer, rounded up to
/// the next tick, has not fired.
#[tokio::test(start_paused = true)]
async fn reconnect_wait_ends_at_its_deadline_before_its_timer_fires() {
    let make = Make::new();
    make.push([Dial::Hang]);
    let wait = Duration::from_micros(1500);
    let mut svc = ReconnectLayer::new("peer")
        .wait_for_ready(true)
        .wait_timeout(wait)
        .layer(make.clone());
    let mut owner = task::spawn(());
    assert_pending!(owner.enter(|cx, _| svc.poll_ready(cx)));
    tokio::time::advance(wait).await;
    assert!(!owner.is_woken(), "the timer fires at the next tick, 2 ms");
    assert_ready_ok!(owner.enter(|cx, _| svc.poll_ready(cx)));
    let err = svc.call(1).await.unwrap_err();
    assert_eq!(unavailable(&err).waited(), Some(wait));
}

// ===== Shared =====

/// A queued request fails at exactly the wait timeout with `Unavailable`
/// and the watch's last connect error, and the task drops it unsent: the
/// connection that comes later never sees it.
#[tokio::test(start_paused = true)]
async fn shared_wait_times_out_with_the_last_connect_error_and_is_never_sent() {
    let make = Make::new();
    make.push([
        Dial::Fail("connection refused"),
        Dial::Fail("connection refused"),
    ]);
    let shared: Handle = layer().layer(make.clone()).spawn(8);
    settle().await;
    let t0 = Instant::now();

    let err = shared.clone().oneshot(1).await.unwrap_err();
    assert_eq!(t0.elapsed(), WAIT);
    let err = unavailable(&err);
    assert_eq!(err.waited(), Some(WAIT));
    assert_eq!(err.attempt(), 2);
    assert_eq!(err.retry_at(), Some(t0 + Duration::from_millis(5200)));
    assert_eq!(dial_error(err).0, "connection refused");

    // Attempt 3 connects at 5.2 s; the timed-out request is not sent on it.
    advance_ms(200).await;
    settle().await;
    assert!(shared.watch().is_connected());
    assert_eq!(make.dials(), 3);
    assert_eq!(make.conn().calls(), 0);
    assert_eq!(shared.clone().oneshot(2).await.unwrap(), 3);
    assert_eq!(make.conn().calls(), 1);
}

/// A queued request whose connection comes before the wait timeout is sent
/// and succeeds.
#[tokio::test(start_paused = true)]
async fn shared_request_connected_before_the_wait_timeout_succeeds() {
    let make = Make::new();
    make.push([Dial::Fail("connection refused")]);
    let shared: Handle = layer().layer(make.clone()).spawn(8);
    settle().await;
    let t0 = Instant::now();
    assert_eq!(shared.clone().oneshot(1).await.unwrap(), 2);
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    assert_eq!(make.conn().calls(), 1);
}

/// In fail-fast mode a request queued behind the first attempt fails at
/// the wait timeout, before the connect timeout ends the attempt.
#[tokio::test(start_paused = true)]
async fn shared_wait_timeout_bounds_the_first_attempt_in_fail_fast_mode() {
    let make = Make::new();
    make.push([Dial::Hang]);
    let shared: Handle = ReconnectLayer::new("peer")
        .wait_timeout(WAIT)
        .layer(make.clone())
        .spawn(8);
    let t0 = Instant::now();
    let err = shared.clone().oneshot(1).await.unwrap_err();
    assert_eq!(t0.elapsed(), WAIT);
    let err = unavailable(&err);
    assert_eq!((err.waited(), err.retry_at()), (Some(WAIT), None));
    assert_eq!(shared.watch().phase(), Phase::Connecting);
}
