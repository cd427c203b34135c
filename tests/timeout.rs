//! The connect timeout bounds whole attempts, and delays count from attempt start.
mod support;

use std::{
    task::{Context, Poll},
    time::Duration,
};

use redial::{error::ConnectTimeout, Backoff, Phase, ReconnectLayer};
use support::{advance_ms, poll_ready, Dial, Make};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service};

fn layer(timeout_ms: u64) -> ReconnectLayer<&'static str> {
    ReconnectLayer::new("peer")
        .connect_timeout(Duration::from_millis(timeout_ms))
        .backoff(Backoff::default().jitter(0.0))
}

/// A make future that never resolves fails with ConnectTimeout after exactly the timeout, and is dropped.
#[tokio::test(start_paused = true)]
async fn connect_timeout_bounds_the_whole_make_future() {
    let make = Make::new();
    // Would connect after 10 s, far past the 5 s timeout.
    make.push([Dial::ConnectAfter(Duration::from_secs(10))]);
    make.otherwise(Dial::Hang);
    let mut svc = layer(5000).layer(make.clone());
    let watch = svc.watch();

    assert_pending!(poll_ready(&mut svc));
    advance_ms(4999).await;
    assert_pending!(poll_ready(&mut svc));
    assert_eq!(watch.phase(), Phase::Connecting);
    let late = make.conn();
    assert!(late.is_held(), "the attempt is still running");

    advance_ms(1).await;
    // Attempt 1 overran its 2 s delay, so attempt 2 is already running;
    // meanwhile requests fail fast.
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dials(), 2);
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Disconnected);
    assert_eq!(state.attempt(), 2);
    let timeout = state
        .last_error()
        .unwrap()
        .downcast_ref::<ConnectTimeout>()
        .unwrap();
    assert_eq!(timeout.timeout(), Duration::from_secs(5));
    assert!(!late.is_held(), "the timed-out attempt was dropped");

    // Past the time the first attempt would have connected: driven again,
    // the service never counts it.
    advance_ms(10_000).await;
    let _ = poll_ready(&mut svc);
    assert!(
        make.dials() >= 3,
        "the service was driven: {} dials",
        make.dials()
    );
    assert_eq!(watch.state().connects(), 0);
}

/// The timeout also covers waiting for the make service's own poll_ready.
#[tokio::test(start_paused = true)]
async fn connect_timeout_covers_make_poll_ready() {
    struct NeverReady;
    impl Service<&'static str> for NeverReady {
        type Response = support::Conn;
        type Error = std::io::Error;
        type Future = std::future::Pending<Result<support::Conn, std::io::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }
        fn call(&mut self, _: &'static str) -> Self::Future {
            unreachable!("never ready")
        }
    }
    let mut svc = layer(1000).layer(NeverReady);
    assert_pending!(poll_ready::<_, u32>(&mut svc));
    advance_ms(1000).await;
    assert_ready_ok!(poll_ready::<_, u32>(&mut svc));
    assert!(svc
        .watch()
        .state()
        .last_error()
        .unwrap()
        .is::<ConnectTimeout>());
}

/// An attempt that overran its delay (slow failure) is followed by the next one at once.
#[tokio::test(start_paused = true)]
async fn delay_counts_from_attempt_start_and_overrun_retries_at_once() {
    let make = Make::new();
    make.push([
        Dial::FailAfter(Duration::from_secs(3), "slow refusal"),
        Dial::FailAfter(Duration::from_secs(1), "refused"),
    ]);
    let mut svc = layer(30_000).layer(make.clone());
    let t0 = Instant::now();

    assert_pending!(poll_ready(&mut svc));
    advance_ms(3000).await;
    // Attempt 1 took 3 s, more than its 2 s delay: attempt 2 starts now
    // (and meanwhile requests fail fast).
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dial_times(), [t0, t0 + Duration::from_secs(3)]);

    advance_ms(1000).await;
    assert_ready_ok!(poll_ready(&mut svc));
    // Attempt 2 started at 3 s and failed at 4 s: next at 3 + 3.2 s, not 4 + 3.2 s.
    assert_eq!(
        svc.watch().state().retry_at(),
        Some(t0 + Duration::from_millis(6200))
    );
}

/// A connect timeout longer than the delay is followed by the next attempt as soon as it fires.
#[tokio::test(start_paused = true)]
async fn timed_out_attempt_is_followed_at_once() {
    let make = Make::new();
    make.push([Dial::Hang]);
    let mut svc = layer(30_000).layer(make.clone());
    let t0 = Instant::now();
    assert_pending!(poll_ready(&mut svc));
    advance_ms(30_000).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dial_times(), [t0, t0 + Duration::from_secs(30)]);
    assert!(svc.watch().is_connected());
}

/// A retry is armed a little early, so the attempt starts on time and not a
/// timer tick late: tokio rounds a deadline up to its next millisecond, so
/// a retry time between two ticks, armed as it is, would fire up to a
/// millisecond after it. The attempt starts less than a millisecond early,
/// never after the retry time the watch showed.
#[tokio::test(start_paused = true)]
async fn a_retry_between_timer_ticks_starts_on_time_not_a_tick_late() {
    let make = Make::new();
    make.push([Dial::Fail("refused")]);
    // 100.5 ms: between two ticks of the timer.
    let delay = Duration::from_micros(100_500);
    let mut svc = ReconnectLayer::new("peer")
        .backoff(Backoff::from_delays(std::iter::repeat(delay)))
        .layer(make.clone());
    let watch = svc.watch();

    let start = Instant::now();
    assert_ready_ok!(poll_ready(&mut svc), "the first attempt failed: fail fast");
    let retry_at = watch.state().retry_at().expect("a retry is due");
    assert_eq!(retry_at - start, delay, "counted from the attempt's start");

    // The tick just before the retry time: the timer has fired, and the
    // service starts the attempt when polled.
    advance_ms(99).await;
    let _ = poll_ready(&mut svc);
    assert_eq!(make.dials(), 1, "not yet: 1.5 ms before the retry time");
    advance_ms(1).await;
    let _ = poll_ready(&mut svc);
    assert_eq!(
        make.dials(),
        2,
        "the retry started at the tick before its time"
    );
    let dialled = make.dial_times()[1];
    assert!(dialled <= retry_at && retry_at - dialled < Duration::from_millis(1));
}
