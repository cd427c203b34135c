//! The state machine: readiness, fail fast, wait-for-ready, resets, give-up.
mod support;

use std::time::Duration;

use redial::{Phase, Reconnect, ReconnectLayer};
use support::{Dial, Make};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Service, ServiceExt};

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
