//! Bugs the model found, each shrunk to a deterministic test named after it.

use std::{task::Poll, time::Duration};

use redial::{
    error::{Closed, NotReady},
    future::ResponseFuture,
    Backoff, Phase, ReconnectLayer, Shared,
};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service};

use crate::support::{advance_ms, poll_ready, Conn, ConnError, Dial, Make};

type Handle = Shared<u32, ResponseFuture<<Conn as Service<u32>>::Future>>;

/// After `mark_disconnected` drops a proven connection, a reconnect first driven later than the connect timeout still gets the whole timeout: one dial, no `ConnectTimeout`, no request failed; it used to time out at once, abandon that dial and fail fast.
#[tokio::test(start_paused = true)]
async fn stale_connect_deadline_after_mark_disconnected() {
    let make = Make::new();
    make.push([Dial::Connect, Dial::ConnectAfter(Duration::from_millis(5))]);
    let mut svc = ReconnectLayer::new("peer")
        .connect_timeout(Duration::from_secs(1))
        .backoff(Backoff::constant(Duration::from_secs(2)))
        .layer(make.clone());
    let watch = svc.watch();
    assert_ready_ok!(poll_ready(&mut svc));
    advance_ms(10_000).await; // up longer than the first delay: proven
    svc.mark_disconnected();
    let state = watch.state();
    assert_eq!((state.phase(), state.attempt()), (Phase::Disconnected, 0));
    assert_eq!(make.dials(), 1, "the reconnect waits for poll_ready");

    advance_ms(60_000).await; // idle, far past the connect timeout
    assert_pending!(poll_ready(&mut svc), "the request waits for the reconnect");
    let state = watch.state();
    assert_eq!((state.phase(), state.attempt()), (Phase::Connecting, 1));
    assert_eq!(make.dials(), 2);

    advance_ms(5).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(Service::<u32>::call(&mut svc, 1).await.unwrap(), 2);
    let state = watch.state();
    assert_eq!((state.phase(), state.attempt()), (Phase::Connected, 1));
    assert_eq!(make.dials(), 2, "no dial was abandoned");
}

/// `call` on a shared handle without a `Ready(Ok)` from `poll_ready` first (never polled, or polled `Pending` on a full queue) fails with `NotReady` instead of panicking inside `PollSender::send_item`.
#[tokio::test(start_paused = true)]
async fn shared_call_before_poll_ready_panicked() {
    let make = Make::new();
    make.push([Dial::ConnectAfter(Duration::from_secs(1))]);
    let shared: Handle = ReconnectLayer::new("peer").layer(make.clone()).spawn(1);

    let mut never_polled = shared.clone();
    let err = never_polled.call(1).await.unwrap_err();
    assert!(err.is::<NotReady>(), "{err:?}");

    // One request fills the queue while the connect runs; the next waits.
    let mut first = shared.clone();
    assert_ready_ok!(poll_ready(&mut first));
    let queued = first.call(1);
    let mut waiting = shared.clone();
    assert_pending!(poll_ready(&mut waiting));
    let err = waiting.call(2).await.unwrap_err();
    assert!(err.is::<NotReady>(), "{err:?}");

    // Neither refusal cost a slot or reached the connection.
    advance_ms(1000).await;
    assert_eq!(queued.await.unwrap(), 2);
    assert_ready_ok!(poll_ready(&mut waiting));
    assert_eq!(waiting.call(3).await.unwrap(), 4);
    assert_eq!(make.conn().calls(), 2);
}

/// A shared handle that reserved a slot before another clone closed the connection fails its `call` with `Closed` at once; it used to hang until every handle was dropped.
#[tokio::test(start_paused = true)]
async fn shared_call_reserved_before_close_hung() {
    let make = Make::new();
    let shared: Handle = ReconnectLayer::new("peer").layer(make.clone()).spawn(4);
    shared.watch().connected().await.unwrap();
    let mut reserved = shared.clone();
    assert_ready_ok!(poll_ready(&mut reserved));

    shared.close();
    assert_eq!(shared.watch().disconnected().await.phase(), Phase::Closed);
    for _ in 0..10 {
        tokio::task::yield_now().await; // the worker task ends
    }
    let mut call = tokio_test::task::spawn(reserved.call(1));
    match call.poll() {
        Poll::Ready(Err(err)) => assert!(err.is::<Closed>(), "{err:?}"),
        other => panic!("the call after close did not fail at once: {other:?}"),
    }
    assert_eq!(make.conn().calls(), 0);
}

/// Through the shared handle, a response error that `disconnect_on` calls fatal drops the connection and reconnects in the background, as a failed `poll_ready` would; it used to stay up, and the watch `Connected`, until the next request.
#[tokio::test(start_paused = true)]
async fn shared_fatal_response_left_the_dead_connection_up() {
    let make = Make::new();
    let shared: Handle = ReconnectLayer::new("peer")
        .backoff(Backoff::constant(Duration::from_secs(1)))
        .disconnect_on(|err| err.is::<ConnError>())
        .layer(make.clone())
        .spawn(4);
    let watch = shared.watch();
    watch.connected().await.unwrap();
    advance_ms(5000).await; // proven

    let mut caller = shared.clone();
    assert_ready_ok!(poll_ready(&mut caller));
    let err = caller.call(0).await.unwrap_err(); // the mock's "broken pipe"
    assert!(err.is::<ConnError>(), "{err:?}");
    for _ in 0..10 {
        tokio::task::yield_now().await; // no request follows
    }

    let state = watch.state();
    assert_eq!(state.disconnects(), 1, "the dead connection was dropped");
    assert_eq!(state.connects(), 2, "and replaced at once");
    assert!(!make.conns()[0].is_held());
    assert_eq!(make.dials(), 2);
}
