//! Retry timing: the exact default schedule, gRPC's jitter bands against a peer that closes every accept, the maths of `Backoff`, and schedules of your own.
mod support;

use std::time::Duration;

use proptest::prelude::*;
use redial::{
    error::{ConfigError, ConnectFailed, ConnectTimeout, GaveUp},
    Backoff, Phase, Reconnect, ReconnectLayer,
};
use support::{poll_ready, Dial, Make};
use tokio::time::{advance, Instant};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{BoxError, Layer, ServiceExt};

const NS: Duration = Duration::from_nanos(1);
/// tokio's timer ticks once a millisecond.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn gave_up(err: &BoxError) -> &GaveUp {
    err.downcast_ref::<GaveUp>()
        .unwrap_or_else(|| panic!("expected GaveUp, got {err:?}"))
}

/// Drives a fail-fast service to a millisecond before `at` (tokio's timer
/// resolution), checking it has not dialled, then to `at` exactly, checking
/// it dialled once, at `at`. The retry timer is armed just under a
/// millisecond early, so that on a real clock the attempt is not late; on a
/// paused clock it fires at the timer's tick at or just before `at`.
async fn dial_exactly_at(svc: &mut Reconnect<Make, &'static str>, make: &Make, at: Instant) {
    let dials = make.dials();
    if at - Instant::now() >= TIMER_RESOLUTION {
        advance(at - Instant::now() - TIMER_RESOLUTION).await;
        assert_ready_ok!(poll_ready(svc));
        assert_eq!(
            make.dials(),
            dials,
            "dialled a millisecond or more before {at:?}"
        );
    }
    advance(at - Instant::now()).await;
    assert_ready_ok!(poll_ready(svc));
    assert_eq!(make.dials(), dials + 1, "no dial at {at:?}");
    assert_eq!(*make.dial_times().last().unwrap(), at);
}

// ===== the service's schedule =====

/// With jitter 0 the default schedule dials at gaps of exactly 2, 3.2, 5.12, … 120, 120 s, never a timer tick (1 ms) early.
#[tokio::test(start_paused = true)]
async fn default_schedule_without_jitter_is_exact() {
    let make = Make::new();
    make.otherwise(Dial::Fail("connection refused"));
    let mut svc = ReconnectLayer::new("peer")
        .backoff(Backoff::default().jitter(0.0))
        .layer(make.clone());
    let watch = svc.watch();
    let expected = [
        2_000_000_000u64,
        3_200_000_000,
        5_120_000_000,
        8_192_000_000,
        13_107_200_000,
        20_971_520_000,
        33_554_432_000,
        53_687_091_200,
        85_899_345_920,
        120_000_000_000,
        120_000_000_000,
        120_000_000_000,
    ]
    .map(Duration::from_nanos);

    // The first attempt fails at once; the service fails fast from then on.
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dials(), 1);
    for gap in expected {
        let last = *make.dial_times().last().unwrap();
        let state = watch.state();
        assert_eq!(state.phase(), Phase::Disconnected);
        assert_eq!(state.retry_at(), Some(last + gap));
        dial_exactly_at(&mut svc, &make, last + gap).await;
    }
    assert_eq!(make.gaps(), expected);
    assert_eq!(watch.state().attempt(), 13);
}

/// A retry delay counts from the start of the failed attempt; an attempt that overran its slot is followed at once by the next.
#[tokio::test(start_paused = true)]
async fn retry_delay_counts_from_the_start_of_the_attempt() {
    let make = Make::new();
    make.push([Dial::FailAfter(ms(500), "refused"), Dial::Hang]);
    make.otherwise(Dial::Fail("refused"));
    let mut svc = ReconnectLayer::new("peer")
        .connect_timeout(secs(5))
        .backoff(Backoff::default().jitter(0.0))
        .layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();

    assert_pending!(poll_ready(&mut svc));
    advance(ms(500)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(
        watch.state().retry_at(),
        Some(t0 + secs(2)),
        "2 s from the start, not from the failure"
    );

    // Attempt 2 hangs until its 5 s timeout, past its 3.2 s slot: attempt 3 follows at once.
    dial_exactly_at(&mut svc, &make, t0 + secs(2)).await;
    advance(secs(5)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(make.dial_times(), [t0, t0 + secs(2), t0 + secs(7)]);
    let state = watch.state();
    assert_eq!(state.attempt(), 3);
    assert!(state.last_error().unwrap().is::<ConnectFailed>());
    assert_eq!(state.retry_at(), Some(t0 + secs(7) + ms(5120)));
}

/// gRPC's reconnect interop check: against a peer that closes every accept, gaps stay within [e·0.8 − 100 ms, e·1.2 + 100 ms], e = 1 s × 1.6ⁿ capped at 120 s.
#[tokio::test(start_paused = true)]
async fn accept_and_close_is_dialled_on_the_grpc_schedule() {
    const DIALS: usize = 16;
    let make = Make::new();
    let mut svc = ReconnectLayer::new("peer")
        .backoff(Backoff::exponential(secs(1), secs(120)))
        .wait_for_ready(true)
        .layer(make.clone());
    let watch = svc.watch();

    let run = async {
        while make.dials() < DIALS {
            ServiceExt::<u32>::ready(&mut svc)
                .await
                .expect("retries forever");
            // The listener closes every connection it accepts, at once.
            make.conn().kill();
        }
    };
    tokio::time::timeout(secs(3600), run)
        .await
        .expect("dialled 16 times within an hour");

    let gaps = make.gaps();
    assert_eq!(gaps.len(), DIALS - 1);
    for (n, gap) in gaps.iter().enumerate() {
        let e = (1.6f64.powi(n as i32)).min(120.0);
        let (low, high) = (e * 0.8 - 0.1, e * 1.2 + 0.1);
        let gap = gap.as_secs_f64();
        assert!(
            (low..=high).contains(&gap),
            "gap {n} is {gap:.3} s, outside [{low:.3}, {high:.3}] (all gaps: {gaps:?})"
        );
    }
    // No connection proved itself, so the schedule never reset.
    let state = watch.state();
    assert_eq!(state.attempt() as usize, DIALS);
    assert_eq!(state.connects() as usize, DIALS);
    assert_eq!(state.disconnects() as usize, DIALS - 1);
}

/// The default schedule jitters every delay, the first too, seeded per service: two clients of one layer that lose the same server disperse.
#[tokio::test(start_paused = true)]
async fn default_jitter_disperses_clients() {
    let layer = ReconnectLayer::new("peer").wait_for_ready(true);
    let (a, b) = (Make::new(), Make::new());
    a.otherwise(Dial::Fail("refused"));
    b.otherwise(Dial::Fail("refused"));
    let (mut sa, mut sb) = (layer.layer(a.clone()), layer.layer(b.clone()));
    let run = async {
        tokio::join!(
            ServiceExt::<u32>::ready(&mut sa),
            ServiceExt::<u32>::ready(&mut sb)
        )
    };
    assert!(
        tokio::time::timeout(secs(60), run).await.is_err(),
        "never connects"
    );

    let (ga, gb) = (a.gaps(), b.gaps());
    assert!(ga.len() >= 4 && gb.len() >= 4, "{ga:?} {gb:?}");
    for gaps in [&ga, &gb] {
        for (n, gap) in gaps.iter().enumerate() {
            let nominal = 2.0 * 1.6f64.powi(n as i32);
            let gap = gap.as_secs_f64();
            // The timer fires on the next millisecond.
            assert!(
                gap >= nominal * 0.8 && gap <= nominal * 1.2 + 0.001,
                "gap {n} is {gap} s, outside ±20 % of {nominal} s"
            );
        }
    }
    assert_ne!(ga[..4], gb[..4], "two clients retried in lockstep");
}

// ===== the maths =====

fn params() -> impl Strategy<Value = (Duration, Duration, f64, f64)> {
    (1_000_000u64..=60_000_000_000)
        .prop_flat_map(|initial| (Just(initial), initial..=600_000_000_000u64))
        .prop_flat_map(|(initial, max)| {
            (
                Just(Duration::from_nanos(initial)),
                Just(Duration::from_nanos(max)),
                1.0f64..4.0,
                prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0],
            )
        })
}

proptest! {
    /// Every delay lies in [initial·(1−j), max] and within its own band [nominal·(1−j), min(nominal·(1+j), max)].
    #[test]
    fn delays_stay_in_their_jitter_band((initial, max, m, j) in params()) {
        let backoff = Backoff::exponential(initial, max).multiplier(m).jitter(j);
        prop_assert_eq!(backoff.validate(), Ok(()));
        let slack = 1e-6;
        let (initial_s, max_s) = (initial.as_secs_f64(), max.as_secs_f64());
        for (n, d) in backoff.iter().take(40).enumerate() {
            prop_assert!(d <= max, "delay {} is {:?}, above max {:?}", n, d, max);
            let secs = d.as_secs_f64();
            prop_assert!(secs >= initial_s * (1.0 - j) - slack, "delay {} is {:?}, below initial·(1−j)", n, d);
            let nominal = (initial_s * m.powi(n as i32)).min(max_s);
            let (low, high) = (nominal * (1.0 - j), (nominal * (1.0 + j)).min(max_s));
            prop_assert!(
                secs >= low - slack && secs <= high + slack,
                "delay {} is {:?}, outside its band [{}, {}]", n, d, low, high
            );
        }
    }

    /// With jitter 0 the schedule never shrinks, and reaches max exactly when it grows.
    #[test]
    fn without_jitter_the_schedule_is_monotone_up_to_max((initial, max, m, _j) in params()) {
        let backoff = Backoff::exponential(initial, max).multiplier(m).jitter(0.0);
        let delays: Vec<_> = backoff.iter().take(40).collect();
        prop_assert_eq!(delays[0], initial);
        prop_assert!(delays.windows(2).all(|w| w[0] <= w[1]), "not monotone: {:?}", delays);
        prop_assert!(delays.iter().all(|d| *d <= max));
        // Enough steps for initial·mⁿ to pass max (skipped when it would take too long).
        let steps = ((max.as_secs_f64() / initial.as_secs_f64()).ln() / m.ln()).ceil();
        if m > 1.0 && steps < 100_000.0 {
            let last = backoff.iter().nth(steps as usize + 1).unwrap();
            prop_assert!(last <= max && max - last <= Duration::from_micros(1), "ends at {:?}, not {:?}", last, max);
        }
    }

    /// `Backoff::constant(d)` yields `d` exactly, every time.
    #[test]
    fn constant_is_exact(nanos in 1u64..=3_600_000_000_000) {
        let d = Duration::from_nanos(nanos);
        let backoff = Backoff::constant(d);
        prop_assert_eq!(backoff.validate(), Ok(()));
        for x in backoff.iter().take(50) {
            prop_assert_eq!(x, d);
        }
    }
}

/// `validate()` names each broken rule with its `ConfigError` variant, on the backoff and through the layer.
#[test]
fn validate_rejects_each_invalid_setting() {
    let exp = |i, m| Backoff::exponential(secs(i), secs(m));
    let cases = [
        (
            exp(5, 1),
            ConfigError::InitialAboveMax {
                initial: secs(5),
                max: secs(1),
            },
        ),
        (
            Backoff::constant(Duration::ZERO),
            ConfigError::DelayNotPositive,
        ),
        (exp(0, 10), ConfigError::DelayNotPositive),
        (exp(0, 0), ConfigError::DelayNotPositive),
        (
            exp(1, 10).multiplier(0.5),
            ConfigError::MultiplierBelowOne(0.5),
        ),
        (
            exp(1, 10).multiplier(f64::INFINITY),
            ConfigError::MultiplierBelowOne(f64::INFINITY),
        ),
        (exp(1, 10).jitter(-0.1), ConfigError::JitterOutOfRange(-0.1)),
        (exp(1, 10).jitter(1.5), ConfigError::JitterOutOfRange(1.5)),
    ];
    for (backoff, expected) in cases {
        assert_eq!(backoff.validate(), Err(expected.clone()), "{backoff:?}");
        let layer = ReconnectLayer::new("peer").backoff(backoff).validate();
        assert_eq!(layer.unwrap_err(), expected);
    }
    let nan = exp(1, 10).multiplier(f64::NAN).validate();
    assert!(
        matches!(nan, Err(ConfigError::MultiplierBelowOne(m)) if m.is_nan()),
        "{nan:?}"
    );
    let nan = exp(1, 10).jitter(f64::NAN).validate();
    assert!(
        matches!(nan, Err(ConfigError::JitterOutOfRange(j)) if j.is_nan()),
        "{nan:?}"
    );

    // The edges of each rule are allowed.
    for ok in [
        exp(1, 1),
        exp(1, 10).multiplier(1.0),
        exp(1, 10).jitter(0.0),
        exp(1, 10).jitter(1.0),
        Backoff::constant(NS),
        Backoff::default(),
    ] {
        assert_eq!(ok.validate(), Ok(()), "{ok:?}");
    }
}

// ===== schedules of your own =====

/// A `from_delays` schedule sets the dial gaps, and the service gives up (GaveUp, phase Closed) when it runs out.
#[tokio::test(start_paused = true)]
async fn from_delays_is_followed_then_gives_up() {
    let make = Make::new();
    make.otherwise(Dial::Fail("refused"));
    let delays = [secs(1), secs(3), secs(5)].into_iter();
    let mut svc = ReconnectLayer::new("peer")
        .backoff(Backoff::from_delays(delays))
        .layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();

    assert_ready_ok!(poll_ready(&mut svc));
    dial_exactly_at(&mut svc, &make, t0 + secs(1)).await;
    dial_exactly_at(&mut svc, &make, t0 + secs(4)).await;

    // The fourth attempt fails with no delay left: the service gives up.
    advance(secs(5)).await;
    let err = match poll_ready(&mut svc) {
        std::task::Poll::Ready(Err(err)) => err,
        other => panic!("expected the service to give up, got {other:?}"),
    };
    assert_eq!(gave_up(&err).attempts(), 4);
    assert!(std::error::Error::source(gave_up(&err))
        .unwrap()
        .is::<ConnectFailed>());
    assert_eq!(make.gaps(), [secs(1), secs(3), secs(5)]);
    assert_eq!(watch.phase(), Phase::Closed);
    let closed = watch.connected().await.unwrap_err();
    assert!(std::error::Error::source(&closed).unwrap().is::<GaveUp>());

    // Closed is final: no more dials, however long we wait.
    advance(secs(3600)).await;
    let err = ServiceExt::<u32>::ready(&mut svc).await.unwrap_err();
    assert_eq!(gave_up(&err).attempts(), 4);
    assert_eq!(make.dials(), 4);
}

/// A `from_fn` schedule sets the dial gaps, starts afresh after a proven connection, and gives up when it runs out.
#[tokio::test(start_paused = true)]
async fn from_fn_is_followed_restarted_then_gives_up() {
    let make = Make::new();
    make.push([Dial::Fail("refused"), Dial::Connect]);
    make.otherwise(Dial::Fail("refused"));
    let backoff = Backoff::from_fn(|| (1..=3).map(|n| ms(500 * n)));
    let mut svc = ReconnectLayer::new("peer")
        .connect_timeout(secs(1))
        .backoff(backoff)
        .layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();

    assert_ready_ok!(poll_ready(&mut svc));
    dial_exactly_at(&mut svc, &make, t0 + ms(500)).await;
    assert!(watch.is_connected());

    // Up for 1 s (> the first delay, 500 ms): proven. Its loss redials at once,
    // and the schedule starts again at 500 ms.
    advance(secs(1)).await;
    make.conn().kill();
    assert_ready_ok!(poll_ready(&mut svc));
    let lost_at = t0 + ms(1500);
    assert_eq!(*make.dial_times().last().unwrap(), lost_at);
    dial_exactly_at(&mut svc, &make, lost_at + ms(500)).await;
    dial_exactly_at(&mut svc, &make, lost_at + ms(1500)).await;

    advance(ms(1500)).await;
    let err = match poll_ready(&mut svc) {
        std::task::Poll::Ready(Err(err)) => err,
        other => panic!("expected the service to give up, got {other:?}"),
    };
    assert_eq!(gave_up(&err).attempts(), 4);
    assert_eq!(
        make.gaps(),
        [ms(500), ms(1000), ms(500), ms(1000), ms(1500)]
    );
    assert_eq!(watch.phase(), Phase::Closed);
    assert!(watch.state().last_error().unwrap().is::<GaveUp>());
}

/// A hanging attempt under a connect timeout shorter than the delay is retried on the schedule, not at the timeout.
#[tokio::test(start_paused = true)]
async fn timed_out_attempts_keep_the_schedule() {
    let make = Make::new();
    make.otherwise(Dial::Hang);
    let mut svc = ReconnectLayer::new("peer")
        .connect_timeout(secs(1))
        .backoff(Backoff::constant(secs(10)))
        .layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();

    assert_pending!(poll_ready(&mut svc));
    advance(secs(1)).await;
    assert_ready_ok!(poll_ready(&mut svc));
    let state = watch.state();
    assert_eq!(state.retry_at(), Some(t0 + secs(10)));
    assert!(state.last_error().unwrap().is::<ConnectTimeout>());
    dial_exactly_at(&mut svc, &make, t0 + secs(10)).await;
    dial_exactly_at(&mut svc, &make, t0 + secs(20)).await;
    assert_eq!(make.gaps(), [secs(10), secs(10)]);
}

/// Jitter spreads delays over its whole band, above the nominal delay as well as below: of
/// 1,000 first delays at ±20 % of 10 s, some fall in each fifth of [8 s, 12 s] (the chance that
/// a fifth gets none is below 10⁻⁹⁶).
#[test]
fn jitter_covers_its_whole_band() {
    let backoff = Backoff::exponential(secs(10), secs(600)).jitter(0.2);
    let mut fifths = [0; 5];
    for _ in 0..1000 {
        let d = backoff.iter().next().unwrap().as_secs_f64();
        assert!((8.0..=12.0).contains(&d), "{d}");
        fifths[(((d - 8.0) / 0.8) as usize).min(4)] += 1;
    }
    assert!(fifths.iter().all(|&n| n > 0), "{fifths:?}");
}

/// `Debug` shows a schedule's settings, and a run's next delay.
#[test]
fn debug_shows_the_settings() {
    let backoff = Backoff::default();
    assert_eq!(
        format!("{backoff:?}"),
        "Backoff { initial: 2s, max: 120s, multiplier: 1.6, jitter: 0.2 }"
    );
    let mut delays = backoff.jitter(0.0).iter();
    delays.next();
    assert_eq!(
        format!("{delays:?}"),
        "Delays { next: 3.2s, max: 120s, jitter: 0.0 }"
    );
}
