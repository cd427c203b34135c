//! A port of Perl's Message::Passing::Role::ConnectionManager `t/role_connectionmanager.t`, one test per step.
mod support;

use std::{future::Future, time::Duration};

use redial::{
    error::{ConnectTimeout, Unavailable},
    Backoff, Phase, ReconnectLayer,
};
use support::{poll_ready, Dial, Make};
use tokio::time::{advance, Instant};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};

const NS: Duration = Duration::from_nanos(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Step 1: nothing is connected and no subscriber is told anything before the connect; they are told when it happens.
#[tokio::test(start_paused = true)]
async fn no_notification_before_connect() {
    let make = Make::new();
    make.push([Dial::ConnectAfter(secs(1))]);
    let mut svc = ReconnectLayer::new("peer").layer(make.clone());
    let watch = svc.watch();
    let rx = watch.subscribe();
    let mut told = task::spawn(watch.connected());
    assert_pending!(told.poll());

    // No demand: no dial, no notification, however long.
    advance(secs(3600)).await;
    assert!(!told.is_woken());
    assert!(!rx.has_changed().unwrap());
    assert_eq!(make.dials(), 0);
    assert_eq!(watch.phase(), Phase::Idle);

    // Demand: connecting is not connected.
    assert_pending!(poll_ready(&mut svc));
    assert_pending!(told.poll());
    advance(secs(1) - NS).await;
    assert_pending!(poll_ready(&mut svc));
    assert_pending!(told.poll(), "told before the connect");

    advance(NS).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert!(told.is_woken());
    assert_ready_ok!(told.poll());
    assert_eq!(watch.state().connects(), 1);
}

/// Step 2: a subscriber added after the connect is told at once.
#[tokio::test(start_paused = true)]
async fn subscriber_added_after_connect_is_told_at_once() {
    let make = Make::new();
    let mut svc = ReconnectLayer::new("peer").layer(make.clone());
    let early = svc.watch();
    ServiceExt::<u32>::ready(&mut svc).await.unwrap();
    advance(secs(60)).await;

    let late = svc.watch();
    for watch in [late, early.clone()] {
        assert!(watch.subscribe().borrow().is_connected());
        let mut told = task::spawn(watch.connected());
        assert_ready_ok!(told.poll());
    }
    assert_eq!(make.dials(), 1);
}

/// Step 3: a dropped subscriber is gone: the watch keeps no waker of it, it is never woken, and the service goes on.
#[tokio::test(start_paused = true)]
async fn dropped_subscriber_is_gone() {
    let make = Make::new();
    make.push([Dial::Connect, Dial::ConnectAfter(secs(1))]);
    let mut svc = ReconnectLayer::new("peer").layer(make.clone());
    let watch = svc.watch();

    let (kept, gone) = (watch.clone(), watch.clone());
    let mut kept = Box::pin(async move { kept.connected().await });
    let mut gone = Box::pin(async move { gone.connected().await });
    let mut kept_task = task::spawn(());
    let mut gone_task = task::spawn(());
    kept_task.enter(|cx, _| assert!(kept.as_mut().poll(cx).is_pending()));
    gone_task.enter(|cx, _| assert!(gone.as_mut().poll(cx).is_pending()));
    assert!(gone_task.waker_ref_count() > 1, "subscribed");

    drop(gone);
    assert_eq!(
        gone_task.waker_ref_count(),
        1,
        "unsubscribed: nothing of it is left"
    );

    ServiceExt::<u32>::ready(&mut svc).await.unwrap();
    assert!(kept_task.is_woken());
    assert!(kept_task.enter(|cx, _| kept.as_mut().poll(cx)).is_ready());
    assert!(!gone_task.is_woken());

    // The service keeps working with one subscriber fewer.
    advance(secs(5)).await;
    make.conn().kill();
    assert_pending!(poll_ready(&mut svc));
    advance(secs(1)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(Service::<u32>::call(&mut svc, 1).await.unwrap(), 2);
    assert!(!gone_task.is_woken());
    assert_eq!(watch.state().connects(), 2);
}

/// Step 4: a connect timeout fires after exactly the timeout and clears the attempt: the pending connect is dropped and never delivered.
#[tokio::test(start_paused = true)]
async fn connect_timeout_clears_the_connection_attempt() {
    let make = Make::new();
    make.push([Dial::Hang, Dial::ConnectAfter(secs(3600)), Dial::Connect]);
    let mut svc = ReconnectLayer::new("peer")
        .connect_timeout(secs(10))
        .backoff(Backoff::constant(secs(30)))
        .layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();

    // A hanging dial times out after exactly 10 s.
    assert_pending!(poll_ready(&mut svc));
    advance(secs(10) - NS).await;
    assert_pending!(poll_ready(&mut svc));
    assert_eq!(watch.phase(), Phase::Connecting);
    advance(NS).await;
    assert_ready_ok!(poll_ready(&mut svc));
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Disconnected);
    let timeout = state.last_error().unwrap().downcast_ref::<ConnectTimeout>();
    assert_eq!(timeout.unwrap().timeout(), secs(10));
    let err = Service::<u32>::call(&mut svc, 1).await.unwrap_err();
    assert!(err.is::<Unavailable>());

    // A dial that would connect too late: its future is dropped at the timeout.
    advance(secs(20)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dials(), 2);
    let late = make.conn();
    assert!(late.is_held(), "the attempt is running");
    advance(secs(10)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert!(!late.is_held(), "the timed-out attempt was dropped");
    assert!(watch.state().last_error().unwrap().is::<ConnectTimeout>());

    // The next attempt connects; the late one never shows up.
    advance(secs(20)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert!(watch.is_connected());
    advance(secs(7200)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dial_times(), [t0, t0 + secs(30), t0 + secs(60)]);
    assert_eq!(watch.state().connects(), 1);
    assert_eq!(late.calls(), 0);
}

/// Step 5: after a failed connect, the reconnect comes after the delay: no dial before it, exactly one at it.
#[tokio::test(start_paused = true)]
async fn reconnect_after_the_delay() {
    let make = Make::new();
    make.push([Dial::Fail("connection refused"), Dial::Connect]);
    let mut svc = ReconnectLayer::new("peer")
        .backoff(Backoff::constant(secs(5)))
        .layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();

    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(watch.state().retry_at(), Some(t0 + secs(5)));
    for _ in 0..49 {
        advance(ms(100)).await;
        assert_ready_ok!(poll_ready(&mut svc));
    }
    advance(ms(100) - NS).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dials(), 1, "no dial before the delay");
    assert_eq!(watch.phase(), Phase::Disconnected);

    advance(NS).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dial_times(), [t0, t0 + secs(5)]);
    assert!(watch.is_connected());
    advance(secs(60)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dials(), 2, "one dial at the delay, no more");
}

/// Step 6: once connected no timer fires: an hour later nothing woke the service, nothing was dialled, and the watch is unchanged.
#[tokio::test(start_paused = true)]
async fn once_connected_no_timer_fires() {
    let make = Make::new();
    make.push([Dial::ConnectAfter(ms(50))]);
    let mut svc = ReconnectLayer::new("peer")
        .backoff(Backoff::constant(secs(5)))
        .layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();

    // One task drives the service, so every wake-up it gets is counted.
    let mut driver = task::spawn(());
    assert_pending!(driver.enter(|cx, _| Service::<u32>::poll_ready(&mut svc, cx)));
    advance(ms(50)).await;
    assert!(driver.is_woken());
    assert_ready_ok!(driver.enter(|cx, _| Service::<u32>::poll_ready(&mut svc, cx)));
    assert!(watch.is_connected());

    let rx = watch.subscribe();
    let before = watch.state();
    for _ in 0..3600 {
        advance(secs(1)).await;
        let at = Instant::now() - t0;
        assert!(
            !driver.is_woken(),
            "a timer woke the connected service {at:?} after the dial (connect timeout 30 s)"
        );
    }
    assert_eq!(make.dials(), 1);
    assert!(!rx.has_changed().unwrap(), "the watch did not change");
    let after = watch.state();
    assert_eq!(after.phase(), Phase::Connected);
    assert_eq!(
        (after.attempt(), after.connects(), after.disconnects()),
        (before.attempt(), before.connects(), before.disconnects())
    );
    assert_ready_ok!(driver.enter(|cx, _| Service::<u32>::poll_ready(&mut svc, cx)));
    assert_eq!(make.dials(), 1);
}
