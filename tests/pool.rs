//! The pool of connections on a paused clock: where requests go, failing
//! fast only when none is up, waiting for one, the watch over all of them,
//! closing, and the redials spread apart.
mod support;

use std::time::Duration;

use redial::{
    error::{Closed, ConfigError, ConnectFailed, ConnectionLost, GaveUp, NotReady, Unavailable},
    Backoff, ConnectionWatch, Phase, Pool, ReconnectLayer,
};
use support::{advance_ms, Dial, Make};
use tokio::time::Instant;
use tokio_test::assert_ready_err;
use tower::{Layer, Service, ServiceExt};

type Fut = redial::future::ResponseFuture<<support::Conn as Service<u32>>::Future>;
type Handle = Pool<u32, Fut>;

fn layer() -> ReconnectLayer<&'static str> {
    ReconnectLayer::new("peer").backoff(Backoff::default().jitter(0.0))
}

fn pool(layer: ReconnectLayer<&'static str>, make: &Make, size: usize) -> Handle {
    layer.pool(size).layer(make.clone())
}

/// Lets the connections' tasks run until they have nothing left to do.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Waits until every connection is up.
async fn all_connected(pool: &Handle) {
    for watch in pool.connections() {
        watch.connected().await.unwrap();
    }
}

/// Sends `n` requests one at a time through one clone, each awaited.
async fn one_by_one(pool: &Handle, n: u32) -> Vec<Result<u32, tower::BoxError>> {
    let mut svc = pool.clone();
    let mut results = Vec::new();
    for i in 1..=n {
        let result = match svc.ready().await {
            Ok(svc) => svc.call(i).await,
            Err(err) => Err(err),
        };
        results.push(result);
    }
    results
}

fn phases(watches: &[ConnectionWatch]) -> Vec<Phase> {
    watches.iter().map(ConnectionWatch::phase).collect()
}

/// Requests sent together go to the connections with the fewest in flight: eight
/// over four busy connections, two each.
#[tokio::test(start_paused = true)]
async fn requests_in_flight_are_spread_evenly() {
    let make = Make::new();
    let pool = pool(layer(), &make, 4);
    all_connected(&pool).await;
    assert_eq!(make.dials(), 4);
    for conn in make.conns() {
        conn.hold();
    }
    let requests: Vec<_> = (1..=8)
        .map(|n| tokio::spawn(pool.clone().oneshot(n)))
        .collect();
    settle().await;
    let calls: Vec<_> = make.conns().iter().map(|c| c.calls()).collect();
    assert_eq!(calls, [2, 2, 2, 2]);
    for conn in make.conns() {
        conn.release();
    }
    for (n, request) in (1..=8).zip(requests) {
        assert_eq!(request.await.unwrap().unwrap(), n + 1);
    }
}

/// One request at a time: the connections take turns.
#[tokio::test(start_paused = true)]
async fn requests_one_at_a_time_take_turns() {
    let make = Make::new();
    let pool = pool(layer(), &make, 3);
    all_connected(&pool).await;
    assert!(one_by_one(&pool, 9).await.iter().all(Result::is_ok));
    let calls: Vec<_> = make.conns().iter().map(|c| c.calls()).collect();
    assert_eq!(calls, [3, 3, 3]);
}

/// A slot reserved counts as load at once: two clones that reserve before
/// either calls take different connections (twenty times over, each clone
/// starting its turns at a random connection).
#[tokio::test(start_paused = true)]
async fn a_reservation_counts_before_its_call() {
    let make = Make::new();
    let pool = pool(layer(), &make, 2);
    all_connected(&pool).await;
    for round in 0..20 {
        let (mut a, mut b) = (pool.clone(), pool.clone());
        assert!(support::poll_ready(&mut a).is_ready());
        assert!(support::poll_ready(&mut b).is_ready());
        let (x, y) = (a.call(1), b.call(2));
        x.await.unwrap();
        y.await.unwrap();
        let calls: Vec<_> = make.conns().iter().map(|c| c.calls()).collect();
        assert_eq!(calls, [round + 1, round + 1], "round {round}");
    }
}

/// A connection that is down gets no request and none fails while others are up;
/// its share moves to them and comes back when it reconnects.
#[tokio::test(start_paused = true)]
async fn a_connection_down_is_skipped_and_its_share_returns() {
    let make = Make::new();
    let pool = pool(layer(), &make, 3);
    all_connected(&pool).await;
    advance_ms(3_000).await; // every connection has proved itself
    make.otherwise(Dial::Fail("refused"));
    let conns = make.conns();
    conns[0].kill();
    settle().await;
    advance_ms(1_000).await; // past its spread: its redial failed
    settle().await;
    let watches = pool.connections();
    assert_eq!(
        phases(&watches),
        [Phase::Disconnected, Phase::Connected, Phase::Connected]
    );

    let results = one_by_one(&pool, 10).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(conns[0].calls(), 0);
    assert_eq!((conns[1].calls(), conns[2].calls()), (5, 5));

    // Back: the next retry connects, and it takes its turn again.
    make.otherwise(Dial::Connect);
    watches[0].connected().await.unwrap();
    let back = make.conn();
    assert!(one_by_one(&pool, 9).await.iter().all(Result::is_ok));
    assert_eq!(back.calls(), 3);
}

/// In fail-fast mode a request fails with `Unavailable` only once no connection is
/// up, and without a dial.
#[tokio::test(start_paused = true)]
async fn fails_fast_only_when_no_connection_is_up() {
    let make = Make::new();
    let pool = pool(layer(), &make, 2);
    all_connected(&pool).await;
    advance_ms(3_000).await;
    make.otherwise(Dial::Fail("refused"));
    let conns = make.conns();
    conns[0].kill();
    settle().await;
    advance_ms(1_000).await;
    assert!(pool.clone().oneshot(1).await.is_ok());

    conns[1].kill();
    settle().await;
    advance_ms(1_000).await;
    settle().await;
    let watch = pool.watch();
    assert_eq!(watch.phase(), Phase::Disconnected);
    let dials = make.dials();
    let err = pool.clone().oneshot(1).await.unwrap_err();
    assert!(err.is::<Unavailable>(), "{err:?}");
    let cause = err.downcast_ref::<Unavailable>().unwrap();
    assert!(cause.retry_at().is_some());
    assert_eq!(make.dials(), dials);
}

/// `reset_backoff` makes every connection's waiting retry due now.
#[tokio::test(start_paused = true)]
async fn reset_backoff_redials_every_connection_now() {
    let make = Make::new();
    make.otherwise(Dial::Fail("refused"));
    let pool = pool(layer(), &make, 2);
    settle().await;
    assert_eq!(make.dials(), 2, "one failed attempt each");
    assert_eq!(pool.watch().phase(), Phase::Disconnected);

    pool.reset_backoff();
    settle().await;
    assert_eq!(make.dials(), 4, "both retried at once, not after 2 s");
    pool.close();
}

/// A request that finds no connection up waits for one while the first attempts
/// run, as a single connection's does.
#[tokio::test(start_paused = true)]
async fn a_request_waits_for_the_first_attempts() {
    let make = Make::new();
    make.otherwise(Dial::ConnectAfter(Duration::from_millis(500)));
    let pool = pool(layer(), &make, 2);
    let start = Instant::now();
    assert_eq!(pool.clone().oneshot(1).await.unwrap(), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

/// A request that comes while every connection has just been lost waits for the
/// first redial instead of failing, as with one connection: a server restart costs
/// no request an error.
#[tokio::test(start_paused = true)]
async fn a_request_after_every_connection_was_lost_waits_for_a_redial() {
    let make = Make::new();
    let pool = pool(layer(), &make, 2);
    all_connected(&pool).await;
    advance_ms(3_000).await;
    for conn in make.conns() {
        conn.kill();
    }
    settle().await;
    assert_eq!(pool.watch().phase(), Phase::Disconnected);
    let cut = Instant::now();
    assert_eq!(pool.clone().oneshot(1).await.unwrap(), 2);
    // Answered by the first redial, within its slot.
    assert!(cut.elapsed() > Duration::ZERO);
    assert!(cut.elapsed() < Duration::from_millis(500));
    assert_eq!(make.dials(), 3);
}

/// In wait-for-ready mode, a request sent while every connection is down waits, and
/// is answered once one is back.
#[tokio::test(start_paused = true)]
async fn wait_for_ready_waits_for_a_connection() {
    let make = Make::new();
    make.push([Dial::Fail("refused"), Dial::Fail("refused")]);
    let pool = pool(
        layer()
            .backoff(Backoff::constant(Duration::from_secs(2)))
            .wait_for_ready(true),
        &make,
        2,
    );
    settle().await;
    assert_eq!(pool.watch().phase(), Phase::Disconnected);
    let request = tokio::spawn(pool.clone().oneshot(7));
    advance_ms(1_000).await;
    assert!(!request.is_finished());
    assert_eq!(request.await.unwrap().unwrap(), 8);
    assert!(pool.watch().is_connected());
}

/// In wait-for-ready mode, `poll_ready` waits for whichever connection comes up
/// first, not for one chosen in advance.
#[tokio::test(start_paused = true)]
async fn wait_for_ready_takes_whichever_connection_is_up_first() {
    let make = Make::new();
    // Both first dials fail; the first retry (the first connection's, in
    // the earlier slot) fails again, the second connects.
    make.push([
        Dial::Fail("refused"),
        Dial::Fail("refused"),
        Dial::Fail("refused"),
        Dial::Connect,
    ]);
    let mut pool = pool(
        layer()
            .backoff(Backoff::constant(Duration::from_secs(2)))
            .wait_for_ready(true),
        &make,
        2,
    );
    settle().await;
    let start = Instant::now();
    assert!(support::poll_ready(&mut pool).is_pending());
    assert_eq!(pool.clone().oneshot(1).await.unwrap(), 2);
    // The second connection's retry: 2 s, plus its slot of [500, 1000) ms.
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(2_500) && waited < Duration::from_secs(3));
    assert_eq!(make.dials(), 4);
    assert_eq!(make.conn().calls(), 1);
    assert!(!pool.connections()[0].is_connected());
}

/// In wait-for-ready mode with a wait timeout, a request that waited that long for
/// any connection fails with `Unavailable` saying so, and is never sent.
#[tokio::test(start_paused = true)]
async fn wait_for_ready_gives_up_after_the_wait_timeout() {
    let make = Make::new();
    make.otherwise(Dial::Fail("refused"));
    let pool = pool(
        layer()
            .wait_for_ready(true)
            .wait_timeout(Duration::from_secs(1)),
        &make,
        2,
    );
    settle().await;
    let start = Instant::now();
    let err = pool.clone().oneshot(1).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let unavailable = err.downcast_ref::<Unavailable>().expect("Unavailable");
    assert_eq!(unavailable.waited(), Some(Duration::from_secs(1)));
    let cause = std::error::Error::source(unavailable).expect("the last cause");
    assert!(cause.is::<ConnectFailed>(), "{cause:?}");
    assert!(make.conns().is_empty());
}

/// After every connection closed for idleness, a request wakes one of them, not
/// all: one dial, then the answer.
#[tokio::test(start_paused = true)]
async fn a_request_to_an_idle_pool_wakes_one_connection() {
    for wait_for_ready in [false, true] {
        let make = Make::new();
        let pool = pool(
            layer()
                .idle_timeout(Duration::from_secs(10))
                .wait_for_ready(wait_for_ready),
            &make,
            2,
        );
        all_connected(&pool).await;
        advance_ms(11_000).await;
        settle().await;
        assert_eq!(pool.watch().phase(), Phase::Idle);
        assert_eq!(pool.watch().state().idle_closes(), 2);
        assert_eq!(pool.clone().oneshot(1).await.unwrap(), 2);
        assert_eq!(make.dials(), 3, "wait_for_ready: {wait_for_ready}");
        assert_eq!(pool.watch().phase(), Phase::Connected);
    }
}

/// The pool's watch is `Connecting` while any connection is and none is up,
/// `Connected` as soon as one is, and `Disconnected` once none is, with the newest
/// cause and the earliest retry; counters are summed.
#[tokio::test(start_paused = true)]
async fn the_watch_shows_the_connections_as_one() {
    let make = Make::new();
    make.push([
        Dial::ConnectAfter(Duration::from_millis(100)),
        Dial::FailAfter(Duration::from_millis(200), "refused"),
    ]);
    make.otherwise(Dial::Fail("refused"));
    let pool = pool(layer(), &make, 2);
    let watch = pool.watch();
    let watches = pool.connections();
    settle().await;
    assert_eq!(watch.phase(), Phase::Connecting);

    advance_ms(100).await;
    settle().await;
    assert_eq!(phases(&watches), [Phase::Connected, Phase::Connecting]);
    assert_eq!(watch.phase(), Phase::Connected);

    advance_ms(100).await;
    settle().await;
    assert_eq!(phases(&watches), [Phase::Connected, Phase::Disconnected]);
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Connected);
    assert!(state.last_error().is_none());
    assert_eq!(state.retry_at(), None);

    // The one up goes after it proved itself: the newest cause is its loss.
    advance_ms(2_800).await;
    settle().await;
    make.conns()[0].kill();
    settle().await;
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Disconnected);
    assert!(
        state.last_error().unwrap().is::<ConnectionLost>(),
        "{state:?}"
    );
    let earliest = watches.iter().filter_map(|w| w.state().retry_at()).min();
    assert!(earliest.is_some());
    assert_eq!(state.retry_at(), earliest);

    // Its redial fails: that is the newest cause now.
    watches[0].subscribe().changed().await.unwrap();
    settle().await;
    let state = watch.state();
    assert_eq!(watches[0].state().attempt(), 1);
    assert!(
        state.last_error().unwrap().is::<ConnectFailed>(),
        "{state:?}"
    );

    let sum =
        |f: fn(&redial::ConnectionState) -> u64| watches.iter().map(|w| f(&w.state())).sum::<u64>();
    assert_eq!(state.connects(), sum(redial::ConnectionState::connects));
    assert_eq!(
        state.disconnects(),
        sum(redial::ConnectionState::disconnects)
    );
    assert_eq!((state.connects(), state.disconnects()), (1, 1));
    let highest = watches.iter().map(|w| w.state().attempt()).max().unwrap();
    assert_eq!(state.attempt(), highest);
}

/// The pool's watch is `Closed` only once every connection is, and says so once, with the cause.
#[tokio::test(start_paused = true)]
async fn the_watch_is_closed_once_all_are() {
    let make = Make::new();
    make.push([Dial::Fail("refused")]);
    let pool = pool(layer().max_attempts(1), &make, 2);
    let watch = pool.watch();
    let watches = pool.connections();
    all_closed_or_connected(&watches).await;
    assert_eq!(phases(&watches), [Phase::Closed, Phase::Connected]);
    assert_eq!(watch.phase(), Phase::Connected);
    assert!(!pool.is_closed());
    let mut changes = watch.subscribe();

    // The other goes before it proved itself, and gives up too.
    make.otherwise(Dial::Fail("refused"));
    make.conn().kill();
    assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
    assert!(pool.is_closed());
    changes.changed().await.unwrap();
    assert_eq!(changes.borrow_and_update().phase(), Phase::Closed);
    settle().await;
    assert!(!changes.has_changed().unwrap_or(false));
    let err = watch.connected().await.unwrap_err();
    let cause = std::error::Error::source(&err).expect("the cause");
    assert!(cause.is::<GaveUp>(), "{err:?}");
}

/// Waits until no connection is connecting.
async fn all_closed_or_connected(watches: &[ConnectionWatch]) {
    for watch in watches {
        let _ = watch.connected().await;
    }
}

/// A connection that gave up is skipped; the pool is served by the others and is not closed.
#[tokio::test(start_paused = true)]
async fn a_connection_that_gave_up_is_skipped() {
    let make = Make::new();
    make.push([Dial::Fail("refused")]);
    let pool = pool(layer().max_attempts(1), &make, 2);
    settle().await;
    assert_eq!(
        phases(&pool.connections()),
        [Phase::Closed, Phase::Connected]
    );
    assert_eq!(pool.watch().phase(), Phase::Connected);
    assert!(!pool.is_closed());
    assert!(one_by_one(&pool, 4).await.iter().all(Result::is_ok));
    assert_eq!(make.conn().calls(), 4);
}

/// `close` closes every connection once, for every clone: the watch goes to
/// `Closed` once and `poll_ready` fails with `Closed`.
#[tokio::test(start_paused = true)]
async fn close_closes_every_connection_once() {
    let make = Make::new();
    let pool = pool(layer(), &make, 3);
    let mut clone = pool.clone();
    all_connected(&pool).await;
    let watch = pool.watch();
    let mut changes = watch.subscribe();

    pool.close();
    assert!(clone.is_closed());
    let err = assert_ready_err!(support::poll_ready(&mut clone));
    assert!(err.is::<Closed>(), "{err:?}");
    assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
    assert_eq!(phases(&pool.connections()), [Phase::Closed; 3]);
    changes.changed().await.unwrap();
    assert_eq!(changes.borrow_and_update().phase(), Phase::Closed);
    pool.close(); // again: nothing more happens
    settle().await;
    assert!(!changes.has_changed().unwrap());
    assert_eq!(watch.state().disconnects(), 3);
    assert!(make.conns().iter().all(|c| !c.is_held()));
}

/// Dropping the last clone closes every connection.
#[tokio::test(start_paused = true)]
async fn dropping_the_last_clone_closes_every_connection() {
    let make = Make::new();
    let pool = pool(layer(), &make, 3);
    let clone = pool.clone();
    all_connected(&pool).await;
    let watch = pool.watch();
    let watches = pool.connections();
    drop(pool);
    settle().await;
    assert!(watch.is_connected());
    drop(clone);
    assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
    assert_eq!(phases(&watches), [Phase::Closed; 3]);
    assert!(make.conns().iter().all(|c| !c.is_held()));
}

/// `call` without a ready `poll_ready` fails with `NotReady` instead of panicking.
#[tokio::test(start_paused = true)]
async fn call_before_poll_ready_fails_with_not_ready() {
    let make = Make::new();
    let mut pool = pool(layer(), &make, 2);
    all_connected(&pool).await;
    let err = pool.call(1).await.unwrap_err();
    assert!(err.is::<NotReady>(), "{err:?}");
    assert_eq!(make.conns().iter().map(|c| c.calls()).sum::<usize>(), 0);
}

/// A pool of no connections, or with a queue bound of 0, is refused with a typed error.
#[test]
fn a_pool_of_none_is_refused() {
    let err = layer().pool::<u32>(0).validate().unwrap_err();
    assert_eq!(err, ConfigError::PoolSizeNotPositive);
    let err = layer().pool::<u32>(2).bound(0).validate().unwrap_err();
    assert_eq!(err, ConfigError::QueueBoundNotPositive);
    let err = layer()
        .connect_timeout(Duration::ZERO)
        .pool::<u32>(2)
        .validate()
        .unwrap_err();
    assert_eq!(err, ConfigError::ConnectTimeoutNotPositive);
}

/// Building a pool of no connections panics with the rule's message.
#[tokio::test]
#[should_panic(expected = "a pool must have at least 1 connection")]
async fn building_a_pool_of_none_panics() {
    let _ = pool(layer(), &Make::new(), 0);
}

/// After a server restart cuts every connection at the same instant, each redials
/// in its own slot of half the first delay: no two at once, all within it.
#[tokio::test(start_paused = true)]
async fn redials_after_a_loss_are_spread_apart() {
    let make = Make::new();
    let pool = pool(layer(), &make, 4);
    all_connected(&pool).await;
    advance_ms(3_000).await;
    let cut = Instant::now();
    for conn in make.conns() {
        conn.kill();
    }
    settle().await;
    assert_eq!(pool.watch().phase(), Phase::Disconnected);
    for watch in pool.connections() {
        watch.connected().await.unwrap();
    }
    let redials: Vec<Duration> = make.dial_times()[4..].iter().map(|t| *t - cut).collect();
    assert_eq!(redials.len(), 4);
    // Slots of 250 ms (half the first delay of 2 s, in four), one each; a
    // redial may start up to 1 ms early (the timer's resolution).
    let mut slots: Vec<u128> = redials.iter().map(|d| (d.as_millis() + 1) / 250).collect();
    slots.sort_unstable();
    assert_eq!(slots, [0, 1, 2, 3], "{redials:?}");
}

/// A single connection still redials at once after losing a healthy connection: the
/// spread is the pool's alone.
#[tokio::test(start_paused = true)]
async fn a_single_connection_still_redials_at_once() {
    let make = Make::new();
    let shared = layer().layer(make.clone()).spawn(8);
    shared.watch().connected().await.unwrap();
    advance_ms(3_000).await;
    let cut = Instant::now();
    make.conn().kill();
    settle().await;
    assert_eq!(make.dial_times()[1], cut);
    shared.watch().connected().await.unwrap();
}

/// When every first dial fails at the same instant, the first retries are spread
/// apart too, and stay apart on a schedule without jitter.
#[tokio::test(start_paused = true)]
async fn first_retries_of_an_outage_are_spread_apart() {
    let make = Make::new();
    make.push([
        Dial::Fail("refused"),
        Dial::Fail("refused"),
        Dial::Fail("refused"),
        Dial::Fail("refused"),
        Dial::Fail("refused"),
        Dial::Fail("refused"),
        Dial::Fail("refused"),
        Dial::Fail("refused"),
    ]);
    let pool = pool(
        layer().backoff(Backoff::constant(Duration::from_secs(2))),
        &make,
        4,
    );
    let start = Instant::now();
    all_connected(&pool).await;
    let times: Vec<Duration> = make.dial_times().iter().map(|t| *t - start).collect();
    assert_eq!(times.len(), 12, "{times:?}");
    assert!(times[..4].iter().all(Duration::is_zero));
    // First retries: 2 s after the failed attempts, plus a slot of 250 ms each.
    let mut slots: Vec<u128> = times[4..8]
        .iter()
        .map(|d| (d.as_millis() + 1 - 2_000) / 250)
        .collect();
    slots.sort_unstable();
    assert_eq!(slots, [0, 1, 2, 3], "{times:?}");
    // Second retries: 2 s after the first, the gaps kept.
    let mut gaps: Vec<Duration> = times[8..].to_vec();
    gaps.sort_unstable();
    let mut firsts: Vec<Duration> = times[4..8].to_vec();
    firsts.sort_unstable();
    let seconds: Vec<Duration> = firsts.iter().map(|d| *d + Duration::from_secs(2)).collect();
    assert_eq!(gaps, seconds);
}

/// `Debug` shows the pool's state, its size and whether it is closed, without
/// asking anything of the request or future types.
#[tokio::test(start_paused = true)]
async fn debug_shows_the_pool_state() {
    let make = Make::new();
    let pool = pool(layer(), &make, 3);
    all_connected(&pool).await;
    let shown = format!("{pool:?}");
    assert!(shown.starts_with("Pool {"), "{shown}");
    assert!(shown.contains("phase: Connected"), "{shown}");
    assert!(shown.contains("connections: 3"), "{shown}");
    assert!(shown.contains("closed: false"), "{shown}");
    let layer = format!("{:?}", layer().pool::<u32>(3).bound(7));
    assert!(
        layer.contains("size: 3") && layer.contains("bound: 7"),
        "{layer}"
    );
}

/// A slot reserved on a connection that went down before the call is given back
/// when `poll_ready` moves to another: the first connection's one-request queue is
/// free again once it is back.
#[tokio::test(start_paused = true)]
async fn a_slot_on_a_connection_gone_down_is_given_back() {
    let make = Make::new();
    make.push([Dial::Connect, Dial::ConnectAfter(Duration::from_secs(1))]);
    let pool: Handle = layer().pool(2).bound(1).layer(make.clone());
    let watches = pool.connections();
    watches[0].connected().await.unwrap();
    let mut first = pool.clone();
    tokio_test::assert_ready_ok!(support::poll_ready(&mut first)); // on the only one up

    // It goes down before the call; the other comes up.
    make.otherwise(Dial::Fail("refused"));
    make.conns()[0].kill();
    watches[1].connected().await.unwrap();
    assert!(!watches[0].is_connected());
    tokio_test::assert_ready_ok!(support::poll_ready(&mut first)); // moves to the other
    make.conns()[1].hold();
    let held = tokio::spawn(first.call(1));
    settle().await;
    assert_eq!(make.conns()[1].calls(), 1);

    // The first is back: with the other loaded, a request goes to it, and
    // its queue of one has room.
    make.otherwise(Dial::Connect);
    watches[0].connected().await.unwrap();
    let mut second = pool.clone();
    tokio_test::assert_ready_ok!(support::poll_ready(&mut second));
    assert_eq!(second.call(2).await.unwrap(), 3);
    make.conns()[1].release();
    assert_eq!(held.await.unwrap().unwrap(), 2);
}

/// In wait-for-ready mode a pool just built, whose connections have not dialled yet, is not
/// ready: its requests wait for a connection up instead of queueing behind one that may never
/// connect (under a balancer, a dead endpoint would otherwise draw requests).
#[tokio::test(start_paused = true)]
async fn a_new_pool_waiting_for_ready_is_not_ready_before_a_connection_is_up() {
    let make = Make::new();
    make.push([Dial::Fail("refused"), Dial::Fail("refused")]);
    let mut pool = pool(layer().wait_for_ready(true), &make, 2);
    assert_eq!(
        phases(&pool.connections()),
        [Phase::Idle; 2],
        "not dialled yet"
    );
    assert!(support::poll_ready(&mut pool).is_pending());
    settle().await;
    assert!(support::poll_ready(&mut pool).is_pending(), "both failed");
    let watches = pool.connections();
    let mut ready = tokio_test::task::spawn(pool.ready());
    assert!(ready.poll().is_pending());
    for watch in &watches {
        watch.connected().await.unwrap();
    }
    assert!(ready.is_woken());
    tokio_test::assert_ready_ok!(ready.poll());
}

/// A `poll_ready` that pends because the chosen connection's queue is
/// full keeps no slot, so the next `poll_ready` reserves one before it says
/// `Ready`: the call that follows is sent, not refused.
#[tokio::test(start_paused = true)]
async fn ready_after_a_full_queue_reserves_a_slot_again() {
    let make = Make::new();
    let pool: Handle = layer().pool(1).bound(1).layer(make.clone());
    all_connected(&pool).await;
    // The connection takes nothing: the one queued request fills the queue.
    make.conn().set_busy(true);
    let queued = tokio::spawn(pool.clone().oneshot(1));
    settle().await;

    let mut svc = pool.clone();
    let mut ready = tokio_test::task::spawn(());
    assert!(ready.enter(|cx, _| svc.poll_ready(cx)).is_pending());
    make.conn().set_busy(false);
    assert_eq!(queued.await.unwrap().unwrap(), 2);
    settle().await;
    assert!(ready.is_woken(), "a freed slot wakes the waiting caller");
    assert!(ready.enter(|cx, _| svc.poll_ready(cx)).is_ready());
    assert_eq!(svc.call(7).await.unwrap(), 8);
}

/// A `poll_ready` that waited for room on a connection's full queue, then
/// moved on (the connection went down and the pool waits for one up),
/// stops waiting there: the slot freed later goes to the next caller, not
/// to the wait given up.
#[tokio::test(start_paused = true)]
async fn a_wait_for_room_given_up_leaves_the_slot_to_the_next_caller() {
    let make = Make::new();
    let pool: Handle = layer()
        .wait_for_ready(true)
        .pool(1)
        .bound(1)
        .layer(make.clone());
    all_connected(&pool).await;
    // The connection takes nothing: the one queued request fills the queue.
    make.conn().set_busy(true);
    let queued = tokio::spawn(pool.clone().oneshot(1));
    settle().await;

    let mut first = pool.clone();
    let mut task = tokio_test::task::spawn(());
    assert!(task.enter(|cx, _| first.poll_ready(cx)).is_pending());
    // The connection goes down: the pool waits for one up instead.
    make.conn().kill();
    settle().await;
    assert!(task.enter(|cx, _| first.poll_ready(cx)).is_pending());

    // The next connection sends the queued request, which frees its slot.
    let watch = pool.connections().remove(0);
    watch.connected().await.unwrap();
    assert_eq!(queued.await.unwrap().unwrap(), 2);
    settle().await;
    let mut second = pool.clone();
    assert!(
        tokio_test::task::spawn(())
            .enter(|cx, _| second.poll_ready(cx))
            .is_ready(),
        "the freed slot went to the wait given up"
    );
    assert_eq!(second.call(7).await.unwrap(), 8);
}
