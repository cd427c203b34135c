//! The maximum connection age, on a paused clock over the scripted make
//! service: a connection is replaced at its age (spread ±10 %), the new one
//! made first while the old one serves, never a disconnect; a replacement
//! that fails keeps the old connection and is tried again on the schedule.
mod support;

use std::{collections::HashSet, time::Duration};

use redial::{error::ConfigError, Backoff, Phase, ReconnectLayer, Shared};
use support::{advance_ms, Dial, Make};
use tokio::time::Instant;
use tokio_test::{assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};

/// The maximum age of these tests, and the bounds of its ±10 % spread.
const AGE: Duration = Duration::from_secs(60);
const EARLIEST_MS: u64 = 54_000;
const LATEST_MS: u64 = 66_000;

type Handle = Shared<u32, redial::future::ResponseFuture<<support::Conn as Service<u32>>::Future>>;

/// Exact delays (2 s, then 3.2 s, …) and the maximum age.
fn layer() -> ReconnectLayer<&'static str> {
    ReconnectLayer::new("peer")
        .backoff(Backoff::default().jitter(0.0))
        .connect_timeout(Duration::from_secs(1))
        .max_connection_age(AGE)
}

/// Lets the worker task run until it has nothing left to do.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Advances the clock to just before the earliest a connection made now
/// can be replaced.
async fn to_the_earliest_age() {
    advance_ms(EARLIEST_MS - 1).await;
    settle().await;
}

/// Advances the clock a millisecond at a time until the make service has
/// dialled `n` times; returns how long that took.
async fn until_dials(make: &Make, n: usize, limit_ms: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..limit_ms {
        if make.dials() >= n {
            return start.elapsed();
        }
        advance_ms(1).await;
        settle().await;
    }
    panic!("{} dials after {limit_ms} ms, not {n}", make.dials());
}

async fn connected(make: &Make, layer: ReconnectLayer<&'static str>) -> Handle {
    let shared = layer.layer(make.clone()).spawn(8);
    shared.watch().connected().await.unwrap();
    shared
}

/// The replacement is dialled within ±10 % of the age, made while the old
/// connection serves every request, then takes its place: the watch stays
/// `Connected`, counts a connect and a replacement and no disconnect, wakes
/// its subscribers, and the old connection is let go.
#[tokio::test(start_paused = true)]
async fn shared_replaces_the_connection_at_its_age_new_one_first() {
    let make = Make::new();
    make.push([
        Dial::Connect,
        Dial::ConnectAfter(Duration::from_millis(500)),
    ]);
    let shared = connected(&make, layer()).await;
    let watch = shared.watch();
    let mut subscriber = watch.subscribe();
    subscriber.mark_unchanged();

    advance_ms(EARLIEST_MS - 1).await;
    settle().await;
    assert_eq!(make.dials(), 1, "not replaced before 90 % of the age");
    let waited = until_dials(&make, 2, LATEST_MS - EARLIEST_MS + 2).await;
    let due = Duration::from_millis(EARLIEST_MS - 1) + waited;
    assert!(
        due <= Duration::from_millis(LATEST_MS),
        "dialled at {due:?}"
    );

    // While the new connection is being made, the old one serves.
    assert_eq!(shared.clone().oneshot(1).await.unwrap(), 2);
    assert_eq!(make.conns()[0].calls(), 1);
    assert_eq!(watch.state().replaced(), 0);

    advance_ms(500).await;
    settle().await;
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Connected);
    assert_eq!((state.connects(), state.replaced()), (2, 1));
    assert_eq!(state.disconnects(), 0, "a replacement is not a disconnect");
    assert!(state.last_error().is_none(), "{state:?}");
    assert!(!make.conns()[0].is_held(), "the old connection was let go");
    assert!(
        subscriber.has_changed().unwrap(),
        "a replacement wakes subscribers"
    );

    assert_eq!(shared.clone().oneshot(2).await.unwrap(), 3);
    assert_eq!(make.conns()[1].calls(), 1, "the new one serves");
    shared.close();
}

/// A response in flight on the old connection when the new one takes its
/// place still resolves: the old connection is dropped, not its requests.
#[tokio::test(start_paused = true)]
async fn response_in_flight_on_the_old_connection_still_resolves() {
    let make = Make::new();
    let shared = connected(&make, layer()).await;
    let old = make.conn();
    old.hold();
    let response = tokio::spawn(shared.clone().oneshot(1));
    settle().await;
    assert_eq!(old.calls(), 1);

    to_the_earliest_age().await;
    until_dials(&make, 2, LATEST_MS - EARLIEST_MS + 2).await;
    settle().await;
    assert_eq!(shared.watch().state().replaced(), 1);
    assert!(!response.is_finished(), "held on the old connection");
    old.release();
    assert_eq!(response.await.unwrap().unwrap(), 2);
    shared.close();
}

/// A replacement that fails leaves the old connection in use and the watch
/// untouched, and is tried again on the backoff schedule counted from its
/// start (2 s, then 3.2 s); one that hangs ends at the connect timeout.
#[tokio::test(start_paused = true)]
async fn failed_replacement_keeps_the_old_connection_and_retries_on_the_schedule() {
    let make = Make::new();
    make.push([
        Dial::Connect,
        Dial::Fail("refused"),
        Dial::Hang,
        Dial::Connect,
    ]);
    let shared = connected(&make, layer()).await;
    let watch = shared.watch();
    to_the_earliest_age().await;
    until_dials(&make, 2, LATEST_MS - EARLIEST_MS + 2).await;
    settle().await;

    let state = watch.state();
    assert_eq!(state.phase(), Phase::Connected);
    assert!(state.last_error().is_none(), "{state:?}");
    assert_eq!((state.connects(), state.disconnects()), (1, 0));
    assert_eq!(shared.clone().oneshot(1).await.unwrap(), 2);
    assert_eq!(make.conns()[0].calls(), 1, "the old connection serves");

    // 2 s after the failed one started: a dial that hangs, ended by the
    // connect timeout; the next is due 3.2 s after it started.
    until_dials(&make, 4, 6_000).await;
    let gaps = make.gaps();
    assert_eq!(
        gaps[1..],
        [Duration::from_secs(2), Duration::from_millis(3_200)]
    );
    settle().await;
    let state = watch.state();
    assert_eq!((state.connects(), state.replaced()), (2, 1));
    assert_eq!(state.disconnects(), 0);
    assert_eq!(shared.clone().oneshot(2).await.unwrap(), 3);
    assert_eq!(make.conns()[1].calls(), 1);
    shared.close();
}

/// The old connection lost while its replacement is being made: the
/// replacement is dropped and the service reconnects as after any loss.
#[tokio::test(start_paused = true)]
async fn old_connection_lost_during_the_replacement_reconnects_as_any_loss() {
    let make = Make::new();
    make.push([Dial::Connect, Dial::Hang, Dial::Connect]);
    let shared = connected(&make, layer()).await;
    let watch = shared.watch();
    to_the_earliest_age().await;
    until_dials(&make, 2, LATEST_MS - EARLIEST_MS + 2).await;
    settle().await;

    make.conns()[0].kill();
    settle().await;
    assert_eq!(
        make.dials(),
        3,
        "reconnected at once, as after a proven loss"
    );
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Connected);
    assert_eq!(
        (state.connects(), state.disconnects(), state.replaced()),
        (2, 1, 0)
    );
    shared.close();
}

/// A plain `Reconnect` replaces its connection in the first `poll_ready`
/// after the age, in the same call when the new connection is made at
/// once, and the request goes to the new one.
#[tokio::test(start_paused = true)]
async fn reconnect_replaces_in_the_first_poll_ready_after_the_age() {
    let make = Make::new();
    let mut svc = layer().layer(make.clone());
    let watch = svc.watch();
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);

    advance_ms(LATEST_MS).await;
    assert_eq!(make.dials(), 1, "a plain Reconnect acts only when polled");
    let mut owner = task::spawn(());
    assert_ready_ok!(owner.enter(|cx, _| svc.poll_ready(cx)));
    assert_eq!(svc.call(2).await.unwrap(), 3);
    let calls: Vec<_> = make.conns().iter().map(|c| c.calls()).collect();
    assert_eq!(calls, [1, 1]);
    assert_eq!(watch.state().replaced(), 1);
}

/// Connections made at the same instant are replaced at different times,
/// all within ±10 % of the age and spread over that band.
#[tokio::test(start_paused = true)]
async fn ages_are_spread_within_ten_percent() {
    const HANDLES: usize = 16;
    let makes: Vec<Make> = (0..HANDLES).map(|_| Make::new()).collect();
    let mut handles = Vec::new();
    for make in &makes {
        handles.push(connected(make, layer()).await);
    }
    let start = Instant::now();
    to_the_earliest_age().await;
    assert!(makes.iter().all(|make| make.dials() == 1), "too early");
    let mut due = Vec::new();
    for _ in 0..=LATEST_MS - EARLIEST_MS + 2 {
        for (i, make) in makes.iter().enumerate() {
            if make.dials() == 2 && due.iter().all(|&(j, _)| j != i) {
                due.push((i, start.elapsed()));
            }
        }
        if due.len() == HANDLES {
            break;
        }
        advance_ms(1).await;
        settle().await;
    }
    assert_eq!(due.len(), HANDLES, "every connection was replaced");
    let range = Duration::from_millis(EARLIEST_MS)..=Duration::from_millis(LATEST_MS + 1);
    assert!(due.iter().all(|(_, at)| range.contains(at)), "{due:?}");
    let distinct: HashSet<Duration> = due.iter().map(|&(_, at)| at).collect();
    assert!(distinct.len() > HANDLES / 2, "not spread: {due:?}");
    // Spread over the band, not bunched in a corner of it: 16 uniform draws
    // over 12 s all fall within 2 s with a chance below 10⁻¹⁰.
    let first = due.iter().map(|&(_, at)| at).min().unwrap();
    let last = due.iter().map(|&(_, at)| at).max().unwrap();
    assert!(last - first >= Duration::from_secs(2), "bunched: {due:?}");
    for handle in handles {
        handle.close();
    }
}

/// With an idle timeout shorter than the age, the idle close comes first
/// and nothing is replaced; the next request connects anew.
#[tokio::test(start_paused = true)]
async fn idle_close_comes_before_the_age() {
    let make = Make::new();
    let shared = connected(&make, layer().idle_timeout(Duration::from_secs(10))).await;
    advance_ms(LATEST_MS + 1).await;
    settle().await;
    let state = shared.watch().state();
    assert_eq!((state.idle_closes(), state.replaced()), (1, 0));
    assert_eq!(make.dials(), 1);
    shared.close();
}

/// With no request at all, the task replaces the connection on time, again
/// and again: each new connection's age wakes it.
#[tokio::test(start_paused = true)]
async fn shared_replaces_again_at_each_age_with_no_request() {
    let make = Make::new();
    let shared = connected(&make, layer()).await;
    for n in 2..=4 {
        to_the_earliest_age().await;
        until_dials(&make, n, LATEST_MS - EARLIEST_MS + 2).await;
        settle().await;
        assert_eq!(shared.watch().state().replaced(), n as u64 - 1);
    }
    shared.close();
}

/// A replacement does not reset the idle clock: with an idle timeout longer
/// than the age and no request, the connection is replaced once, then
/// closed for idleness when it has been idle for the timeout since the
/// last request (here: since it was first made), not a timeout after the
/// replacement.
#[tokio::test(start_paused = true)]
async fn replacement_keeps_the_idle_clock() {
    let make = Make::new();
    let shared = connected(&make, layer().idle_timeout(Duration::from_secs(100))).await;
    let start = Instant::now();
    to_the_earliest_age().await;
    until_dials(&make, 2, LATEST_MS - EARLIEST_MS + 2).await;
    settle().await;
    assert_eq!(shared.watch().state().replaced(), 1);

    // The timer's millisecond: tokio rounds a deadline up to the next one.
    let until_idle = Duration::from_millis(100_001) - start.elapsed();
    tokio::time::advance(until_idle).await;
    settle().await;
    let state = shared.watch().state();
    assert_eq!(
        (state.idle_closes(), state.phase()),
        (1, Phase::Idle),
        "closed 100 s after the last request, replacement or not"
    );
    assert_eq!(
        make.dials(),
        2,
        "no replacement of an idle-closed connection"
    );
    shared.close();
}

/// Zero is refused; without the setting a connection is kept for an hour.
#[tokio::test(start_paused = true)]
async fn zero_is_refused_and_off_by_default() {
    let zero = ReconnectLayer::new("peer").max_connection_age(Duration::ZERO);
    assert_eq!(
        zero.validate().unwrap_err(),
        ConfigError::MaxConnectionAgeNotPositive
    );

    let make = Make::new();
    let shared = connected(&make, ReconnectLayer::new("peer")).await;
    advance_ms(3_600_000).await;
    settle().await;
    assert_eq!(make.dials(), 1);
    assert_eq!(shared.clone().oneshot(1).await.unwrap(), 2);
    assert_eq!(shared.watch().state().replaced(), 0);
    shared.close();
}

/// A fatal response error from the old connection, arriving after its
/// replacement took its place, is the old connection's: with a classifier,
/// the new connection stays up.
#[tokio::test(start_paused = true)]
async fn a_fatal_error_from_the_replaced_connection_leaves_the_new_one_up() {
    let make = Make::new();
    let layer = layer().disconnect_on(|err| err.is::<support::ConnError>());
    let shared = connected(&make, layer).await;
    let watch = shared.watch();

    // A request held on the old connection, answered with an error later.
    make.conn().hold();
    let response = tokio::spawn(shared.clone().oneshot(0));
    settle().await;
    assert_eq!(make.conns()[0].calls(), 1);

    to_the_earliest_age().await;
    until_dials(&make, 2, LATEST_MS - EARLIEST_MS + 2).await;
    settle().await;
    assert_eq!(watch.state().replaced(), 1);

    make.conns()[0].release();
    let err = response.await.unwrap().unwrap_err();
    assert!(err.is::<support::ConnError>(), "{err:?}");
    settle().await;
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Connected);
    assert_eq!(state.disconnects(), 0, "the new connection was taken down");
    assert_eq!(make.dials(), 2);
    assert_eq!(shared.clone().oneshot(1).await.unwrap(), 2);
    assert_eq!(make.conns()[1].calls(), 1);
}

/// A connection lost before its age takes its ageing with it: through an
/// outage that lasts past the age the old connection would have reached,
/// the only dials are the schedule's, and nothing is replaced.
#[tokio::test(start_paused = true)]
async fn a_lost_connection_leaves_no_replacement_due() {
    let make = Make::new();
    let shared = connected(&make, layer()).await;
    let watch = shared.watch();
    make.otherwise(Dial::Fail("refused"));

    advance_ms(10_000).await;
    make.conn().kill();
    settle().await;
    assert_eq!(watch.state().disconnects(), 1);

    // Past the latest the old connection would have been replaced (66 s).
    // The schedule dials at once, then 2 s, 3.2 s, 5.12 s, … (×1.6) after
    // each attempt's start: 7 attempts in the 80 s after the loss, the 8th
    // later.
    for _ in 0..80 {
        advance_ms(1_000).await;
        settle().await;
    }
    assert_eq!(make.dials(), 1 + 7, "dials at {:?}", make.gaps());
    assert_eq!(watch.state().replaced(), 0);
}

/// A pool's watch sums its connections' replacements: each of two
/// connections replaced at its age, the pool counts two, and four
/// connects.
#[tokio::test(start_paused = true)]
async fn a_pools_watch_counts_its_connections_replacements() {
    let make = Make::new();
    let pool: redial::Pool<u32, _> = layer().pool(2).layer(make.clone());
    for watch in pool.connections() {
        watch.connected().await.unwrap();
    }
    to_the_earliest_age().await;
    until_dials(&make, 4, LATEST_MS - EARLIEST_MS + 2).await;
    settle().await;
    let each: Vec<u64> = pool
        .connections()
        .iter()
        .map(|watch| watch.state().replaced())
        .collect();
    assert_eq!(each, [1, 1]);
    let state = pool.watch().state();
    assert_eq!((state.connects(), state.replaced()), (4, 2), "{state:?}");
    pool.close();
}

/// A pool's subscribers are woken when one of its connections is replaced
/// at its age, as that connection's are, though the pool stays `Connected`.
#[tokio::test(start_paused = true)]
async fn a_pools_subscribers_are_woken_when_a_connection_is_replaced() {
    let make = Make::new();
    let pool: redial::Pool<u32, _> = layer().pool(1).layer(make.clone());
    let watch = pool.watch();
    watch.connected().await.unwrap();
    let mut subscriber = watch.subscribe();
    subscriber.mark_unchanged();
    to_the_earliest_age().await;
    until_dials(&make, 2, LATEST_MS - EARLIEST_MS + 2).await;
    settle().await;
    assert_eq!(watch.state().replaced(), 1);
    assert_eq!(watch.phase(), Phase::Connected);
    assert!(subscriber.has_changed().unwrap(), "the replacement wakes");
    pool.close();
}
