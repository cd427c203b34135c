//! The watch contract: late subscribers, coalescing with counters, no same-phase wake-ups, `Closed` once, and the causes it carries.
mod support;

use std::{error::Error, future::Future, pin::Pin, time::Duration};

use redial::{
    error::{Closed, ConnectFailed, ConnectTimeout, ConnectionLost, GaveUp, Unavailable},
    Backoff, ConnectionWatch, Phase, Reconnect, ReconnectLayer,
};
use support::{poll_ready, ConnError, Dial, DialError, Make};
use tokio::time::{advance, Instant};
use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};

type Svc = Reconnect<Make, &'static str>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The schedule used where exact times matter: 2 s, 3.2 s, 5.12 s, … exactly.
fn exact() -> ReconnectLayer<&'static str> {
    ReconnectLayer::new("peer").backoff(Backoff::default().jitter(0.0))
}

async fn connect(svc: &mut Svc) {
    ServiceExt::<u32>::ready(svc).await.expect("connects");
}

/// The source of `err`, which must be of type `E`.
fn source_of<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> &'a E {
    err.source()
        .and_then(|s| s.downcast_ref::<E>())
        .unwrap_or_else(|| {
            panic!(
                "expected a {} source in {err:?}",
                std::any::type_name::<E>()
            )
        })
}

/// A subscriber that joins after the connect sees `Connected` at once, and `connected()` returns on its first poll.
#[tokio::test(start_paused = true)]
async fn late_subscriber_sees_the_current_state_at_once() {
    let make = Make::new();
    let mut svc = Reconnect::new(make.clone(), "peer");
    let early = svc.watch();
    connect(&mut svc).await;

    for watch in [svc.watch(), early.clone()] {
        let rx = watch.subscribe();
        assert_eq!(rx.borrow().phase(), Phase::Connected);
        assert_eq!(rx.borrow().connects(), 1);
        assert!(
            !rx.has_changed().unwrap(),
            "the current value counts as seen"
        );
        assert!(watch.is_connected());
        let mut connected = task::spawn(watch.connected());
        assert_ready_ok!(connected.poll());
        let mut disconnected = task::spawn(watch.disconnected());
        assert_pending!(disconnected.poll());
    }
    assert_eq!(make.dials(), 1);
}

/// Before the first demand nothing is published and nothing wakes; `connected()` waits through `Connecting` and resolves at the connect.
#[tokio::test(start_paused = true)]
async fn no_notification_before_the_first_connect() {
    let make = Make::new();
    make.push([Dial::ConnectAfter(ms(100))]);
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();
    let mut rx = watch.subscribe();
    let mut connected = task::spawn(watch.connected());
    assert_pending!(connected.poll());
    {
        let mut changed = task::spawn(rx.changed());
        assert_pending!(changed.poll());
        advance(secs(3600)).await;
        assert!(!changed.is_woken(), "woken with no demand");
        assert!(!connected.is_woken(), "connected() woken with no demand");
        assert_eq!(make.dials(), 0);
        assert_eq!(watch.phase(), Phase::Idle);

        assert_pending!(poll_ready(&mut svc));
        assert!(changed.is_woken(), "Idle -> Connecting is a phase change");
    }
    assert_eq!(rx.borrow_and_update().phase(), Phase::Connecting);
    assert_pending!(connected.poll(), "connecting is not connected");

    advance(ms(100)).await;
    assert!(
        !connected.is_woken(),
        "the lazy service has not seen the connection yet"
    );
    assert_ready_ok!(poll_ready(&mut svc));
    assert!(connected.is_woken());
    assert_ready_ok!(connected.poll());
    assert_eq!(rx.borrow_and_update().connects(), 1);
}

/// Three quick lose/reconnect cycles between two looks coalesce into one wake-up showing the latest value, while the counters count every edge.
#[tokio::test(start_paused = true)]
async fn values_coalesce_but_counters_count_every_edge() {
    let make = Make::new();
    let mut svc = ReconnectLayer::new("peer")
        .backoff(Backoff::constant(secs(1)))
        .layer(make.clone());
    let watch = svc.watch();
    connect(&mut svc).await;
    let mut rx = watch.subscribe();
    assert_eq!(rx.borrow().connects(), 1);

    let mut changed = task::spawn(rx.changed());
    assert_pending!(changed.poll());
    for _ in 0..3 {
        // Up long enough to prove itself, so each loss reconnects at once.
        advance(secs(2)).await;
        make.conn().kill();
        assert_ready_ok!(poll_ready(&mut svc));
    }
    assert!(changed.is_woken());
    assert_ready_ok!(changed.poll());
    drop(changed);

    let seen = rx.borrow_and_update().clone();
    assert_eq!(
        seen.phase(),
        Phase::Connected,
        "only the latest value is kept"
    );
    assert_eq!(seen.connects(), 4);
    assert_eq!(seen.disconnects(), 3);
    assert!(seen.last_error().is_none());
    assert_eq!(make.dials(), 4);

    let mut changed = task::spawn(rx.changed());
    assert_pending!(changed.poll(), "one wake-up for the whole batch");
}

/// Counters count every edge of a peer that accepts and closes at once, each cycle an unproven connection.
#[tokio::test(start_paused = true)]
async fn counters_count_unproven_connections() {
    let make = Make::new();
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();
    connect(&mut svc).await;
    let mut rx = watch.subscribe();
    for n in 1..=3u64 {
        make.conn().kill();
        assert_ready_ok!(poll_ready(&mut svc));
        let state = watch.state();
        assert_eq!(state.phase(), Phase::Disconnected);
        assert_eq!(state.disconnects(), n);
        advance(state.retry_at().unwrap() - Instant::now()).await;
        assert_ready_ok!(poll_ready(&mut svc));
        assert!(watch.is_connected());
    }
    let seen = rx.borrow_and_update().clone();
    assert_eq!((seen.connects(), seen.disconnects()), (4, 3));
    assert_eq!(seen.attempt(), 4, "no connection proved itself");
}

/// While attempts repeat in `Disconnected`, the new attempt and retry times are stored but wake no subscriber; the next phase change does.
#[tokio::test(start_paused = true)]
async fn same_phase_updates_wake_no_one() {
    let make = Make::new();
    make.push([Dial::Fail("refused"), Dial::FailAfter(secs(1), "refused")]);
    make.otherwise(Dial::Fail("refused"));
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();
    assert_ready_ok!(poll_ready(&mut svc));
    let mut rx = watch.subscribe();
    assert_eq!(rx.borrow().phase(), Phase::Disconnected);

    // A second receiver in the same place, to read what is stored.
    let probe = rx.clone();
    let mut connected = task::spawn(watch.connected());
    assert_pending!(connected.poll());
    {
        let mut changed = task::spawn(rx.changed());
        assert_pending!(changed.poll());

        // Attempt 2 runs for 1 s: stored as attempt 2, no retry time, still Disconnected.
        advance(secs(2)).await;
        assert_ready_ok!(poll_ready(&mut svc));
        let state = watch.state();
        assert_eq!((state.phase(), state.attempt()), (Phase::Disconnected, 2));
        assert_eq!(state.retry_at(), None);
        assert!(!changed.is_woken() && !connected.is_woken());

        advance(secs(1)).await;
        assert_ready_ok!(poll_ready(&mut svc));
        assert_eq!(watch.state().retry_at(), Some(t0 + ms(5200)));
        assert!(!changed.is_woken() && !connected.is_woken());

        for attempt in 3..=5 {
            advance(watch.state().retry_at().unwrap() - Instant::now()).await;
            assert_ready_ok!(poll_ready(&mut svc));
            assert_eq!(watch.state().attempt(), attempt);
            assert!(!changed.is_woken(), "woken by attempt {attempt}");
            assert!(
                !connected.is_woken(),
                "connected() woken by attempt {attempt}"
            );
            assert_pending!(changed.poll());
        }
        assert_eq!(make.dials(), 5);
        assert_eq!(probe.borrow().attempt(), 5, "the value is stored");
        assert!(!probe.has_changed().unwrap());

        // A phase change does wake it.
        make.otherwise(Dial::Connect);
        advance(watch.state().retry_at().unwrap() - Instant::now()).await;
        assert_ready_ok!(poll_ready(&mut svc));
        assert!(changed.is_woken());
        assert_ready_ok!(changed.poll());
    }
    assert!(connected.is_woken());
    assert_ready_ok!(connected.poll());
    assert_eq!(rx.borrow_and_update().phase(), Phase::Connected);
}

/// A `connected()` waiter is woken only by the edges it waits for: not by `Idle` → `Connecting`, nor by a failed attempt, but by `Connected`.
#[tokio::test(start_paused = true)]
async fn connected_waiters_sleep_through_connecting_and_failures() {
    let make = Make::new();
    make.push([
        Dial::FailAfter(secs(1), "refused"),
        Dial::ConnectAfter(secs(1)),
    ]);
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();
    let mut connected = task::spawn(watch.connected());
    assert_pending!(connected.poll());

    assert_pending!(poll_ready(&mut svc));
    assert_eq!(watch.phase(), Phase::Connecting);
    assert!(!connected.is_woken(), "woken by Idle -> Connecting");

    advance(secs(1)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(watch.phase(), Phase::Disconnected);
    assert!(!connected.is_woken(), "woken by a failed attempt");

    advance(watch.state().retry_at().unwrap() - Instant::now()).await;
    assert_ready_ok!(poll_ready(&mut svc));
    advance(secs(1)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(watch.phase(), Phase::Connected);
    assert!(connected.is_woken());
    assert_ready_ok!(connected.poll());
}

/// Dropping the service publishes `Closed` once (counting the dropped connection), after which `changed()` fails and the connection is freed.
#[tokio::test(start_paused = true)]
async fn closed_is_published_once_on_drop() {
    let make = Make::new();
    let mut svc = Reconnect::new(make.clone(), "peer");
    let watch = svc.watch();
    connect(&mut svc).await;
    let conn = make.conn();
    assert!(conn.is_held());
    let mut rx = watch.subscribe();
    {
        let mut changed = task::spawn(rx.changed());
        assert_pending!(changed.poll());
        drop(svc);
        assert!(changed.is_woken());
        assert_ready_ok!(changed.poll());
    }
    let state = rx.borrow_and_update().clone();
    assert_eq!(state.phase(), Phase::Closed);
    assert_eq!((state.connects(), state.disconnects()), (1, 1));
    assert_eq!(state.retry_at(), None);
    assert!(rx.changed().await.is_err(), "Closed is the last value");
    assert!(!conn.is_held(), "a watch holds no connection alive");
}

/// `into_inner` closes the service as a drop does: `Closed` is published and the connection released.
#[tokio::test(start_paused = true)]
async fn into_inner_publishes_closed() {
    let make = Make::new();
    let mut svc = Reconnect::new(make.clone(), "peer");
    let watch = svc.watch();
    connect(&mut svc).await;
    let mut rx = watch.subscribe();
    let _make: Make = svc.into_inner();
    assert_eq!(rx.borrow_and_update().phase(), Phase::Closed);
    assert!(rx.changed().await.is_err());
    assert!(!make.conn().is_held());
    let _: Closed = watch.connected().await.unwrap_err();
}

/// A service that gave up publishes `Closed` then, and dropping it later publishes nothing more.
#[tokio::test(start_paused = true)]
async fn closed_after_give_up_is_not_published_again() {
    let make = Make::new();
    make.otherwise(Dial::Fail("refused"));
    let mut svc = exact().max_attempts(2).layer(make.clone());
    let watch = svc.watch();
    let mut rx = watch.subscribe();
    assert_ready_ok!(poll_ready(&mut svc));
    rx.borrow_and_update();
    advance(secs(2)).await;
    let err = assert_ready_err!(poll_ready(&mut svc));
    assert!(err.is::<GaveUp>());

    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().phase(), Phase::Closed);
    drop(svc);
    let mut changed = task::spawn(rx.changed());
    assert_ready_err!(changed.poll(), "no second Closed");
    drop(changed);
    let state = rx.borrow().clone();
    assert!(
        state.last_error().unwrap().is::<GaveUp>(),
        "the drop kept the cause"
    );
    let closed = watch.connected().await.unwrap_err();
    assert_eq!(source_of::<GaveUp>(&closed).attempts(), 2);
}

/// `connected()` returns `Err(Closed)` after the drop, for a waiter that was already waiting and for a new one, instead of hanging.
#[tokio::test(start_paused = true)]
async fn connected_returns_closed_after_drop() {
    let make = Make::new();
    make.otherwise(Dial::Hang);
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();
    let mut idle_waiter = task::spawn(watch.connected());
    assert_pending!(idle_waiter.poll());
    assert_pending!(poll_ready(&mut svc));
    let mut waiter = task::spawn(watch.connected());
    assert_pending!(waiter.poll());

    drop(svc);
    assert!(waiter.is_woken() && idle_waiter.is_woken());
    let err: Closed = assert_ready_err!(waiter.poll());
    assert!(err.source().is_none(), "dropped, not given up");
    let _: Closed = assert_ready_err!(idle_waiter.poll());

    let mut late = task::spawn(watch.connected());
    let _: Closed = assert_ready_err!(late.poll());
    let mut disconnected = task::spawn(watch.disconnected());
    assert_eq!(assert_ready!(disconnected.poll()).phase(), Phase::Closed);
}

/// `n` subscribers, each waiting for the next change.
fn subscribers(watch: &ConnectionWatch, n: usize) -> Vec<Pin<Box<impl Future<Output = bool>>>> {
    (0..n)
        .map(|_| {
            let mut rx = watch.subscribe();
            Box::pin(async move { rx.changed().await.is_ok() })
        })
        .collect()
}

/// Dropped subscribers leave nothing behind (their wakers are released) and never hold up the service, which keeps working.
#[tokio::test(start_paused = true)]
async fn dropped_subscribers_cost_nothing() {
    let make = Make::new();
    let mut svc = ReconnectLayer::new("peer")
        .backoff(Backoff::constant(secs(1)))
        .layer(make.clone());
    let watch = svc.watch();
    // Never read: the service must not wait for it.
    let _idle = watch.subscribe();

    let mut task = task::spawn(());
    let mut waiters = subscribers(&watch, 100);
    task.enter(|cx, _| {
        for w in &mut waiters {
            assert!(w.as_mut().poll(cx).is_pending());
        }
    });
    assert!(task.waker_ref_count() > 1, "the waiters are registered");

    connect(&mut svc).await;
    assert!(task.is_woken());
    task.enter(|cx, _| {
        for w in &mut waiters {
            assert!(w.as_mut().poll(cx).is_ready());
        }
    });
    // New ones, dropped mid-run while registered and waiting.
    waiters = subscribers(&watch, 100);
    task.enter(|cx, _| {
        for w in &mut waiters {
            assert!(w.as_mut().poll(cx).is_pending());
        }
    });
    assert!(task.waker_ref_count() > 1);
    drop(waiters);
    assert_eq!(
        task.waker_ref_count(),
        1,
        "a dropped subscriber leaves no waker behind"
    );

    advance(secs(2)).await;
    make.conn().kill();
    assert_ready_ok!(poll_ready(&mut svc));
    assert!(!task.is_woken());
    assert_eq!(Service::<u32>::call(&mut svc, 1).await.unwrap(), 2);
    let state = watch.state();
    assert_eq!((state.connects(), state.disconnects()), (2, 1));

    drop(svc);
    assert!(!make.conn().is_held(), "subscribers hold nothing alive");
}

/// `disconnected()` waits while connected and resolves when the connection is lost, with the cause.
#[tokio::test(start_paused = true)]
async fn disconnected_resolves_when_the_connection_is_lost() {
    let make = Make::new();
    make.push([Dial::Connect, Dial::ConnectAfter(secs(1))]);
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();
    connect(&mut svc).await;
    let mut lost = task::spawn(watch.disconnected());
    assert_pending!(lost.poll());
    advance(secs(3600)).await;
    assert!(!lost.is_woken());
    assert_pending!(lost.poll());

    make.conn().kill();
    assert_pending!(poll_ready(&mut svc), "waits for the immediate reconnect");
    assert!(lost.is_woken());
    let state = assert_ready!(lost.poll());
    assert_eq!(state.phase(), Phase::Connecting);
    assert_eq!(state.disconnects(), 1);
    let err = state.last_error().unwrap();
    assert!(err.is::<ConnectionLost>());
    assert_eq!(source_of::<ConnError>(err).0, "connection reset by peer");

    // And again for a loss that counts as a failed attempt.
    advance(secs(1)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    let mut lost = task::spawn(watch.disconnected());
    assert_pending!(lost.poll());
    make.conn().kill();
    assert_ready_ok!(poll_ready(&mut svc));
    assert!(lost.is_woken());
    let state = assert_ready!(lost.poll());
    assert_eq!(state.phase(), Phase::Disconnected);
    assert_eq!(state.disconnects(), 2);
}

/// A connect timeout is the last error, with its duration, and `retry_at` is the start of the attempt plus the delay.
#[tokio::test(start_paused = true)]
async fn last_error_is_the_connect_timeout() {
    let make = Make::new();
    make.otherwise(Dial::Hang);
    let mut svc = ReconnectLayer::new("peer")
        .connect_timeout(secs(10))
        .backoff(Backoff::constant(secs(30)))
        .layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();
    assert_pending!(poll_ready(&mut svc));
    let state = watch.state();
    assert_eq!((state.phase(), state.attempt()), (Phase::Connecting, 1));
    assert!(state.last_error().is_none() && state.retry_at().is_none());

    advance(secs(10)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Disconnected);
    let timeout = state.last_error().unwrap().downcast_ref::<ConnectTimeout>();
    assert_eq!(timeout.unwrap().timeout(), secs(10));
    assert_eq!(state.retry_at(), Some(t0 + secs(30)));

    // A request sees the same cause and time.
    let err = Service::<u32>::call(&mut svc, 1).await.unwrap_err();
    let unavailable = err.downcast_ref::<Unavailable>().unwrap();
    assert_eq!(unavailable.retry_at(), Some(t0 + secs(30)));
    assert_eq!(source_of::<ConnectTimeout>(unavailable).timeout(), secs(10));

    // While the next attempt runs, still Disconnected, with no retry time.
    advance(secs(20)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    let state = watch.state();
    assert_eq!((state.phase(), state.attempt()), (Phase::Disconnected, 2));
    assert_eq!(state.retry_at(), None);
    assert!(state.last_error().unwrap().is::<ConnectTimeout>());
}

/// A refused dial is the last error as `ConnectFailed` with the make service's error as source; `retry_at` counts from the attempt's start.
#[tokio::test(start_paused = true)]
async fn last_error_is_the_failed_connect() {
    let make = Make::new();
    make.push([Dial::FailAfter(ms(300), "connection refused")]);
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();
    assert_pending!(poll_ready(&mut svc));
    advance(ms(300)).await;
    assert_ready_ok!(poll_ready(&mut svc));

    let state = watch.state();
    let err = state.last_error().unwrap();
    assert!(err.is::<ConnectFailed>());
    assert_eq!(source_of::<DialError>(err).0, "connection refused");
    assert_eq!(state.retry_at(), Some(t0 + secs(2)));

    advance(ms(1700)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    let state = watch.state();
    assert!(state.is_connected());
    assert!(state.last_error().is_none(), "cleared once connected");
    assert_eq!(state.retry_at(), None);
}

/// A connection lost before proving itself leaves `ConnectionLost` (with the connection's error) and a retry at its attempt's start plus the delay.
#[tokio::test(start_paused = true)]
async fn last_error_is_the_lost_connection() {
    let make = Make::new();
    let mut svc = exact().layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();
    connect(&mut svc).await;
    assert!(watch.state().last_error().is_none());

    advance(ms(500)).await;
    make.conn().kill();
    assert_ready_ok!(poll_ready(&mut svc));
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Disconnected);
    let err = state.last_error().unwrap();
    assert!(err.is::<ConnectionLost>());
    assert_eq!(source_of::<ConnError>(err).0, "connection reset by peer");
    assert_eq!(state.retry_at(), Some(t0 + secs(2)));
    assert_eq!(state.disconnects(), 1);
}
