//! The layer: ServiceBuilder composition, configuration checks, Debug.
mod support;

use std::time::Duration;

use redial::{error::ConfigError, Backoff, Phase, ReconnectLayer};
use support::{poll_ready, Make};
use tokio_test::assert_ready_ok;
use tower::{Layer, ServiceBuilder, ServiceExt};

/// The layer composes in ServiceBuilder, under a buffer and a timeout.
#[tokio::test(start_paused = true)]
async fn works_inside_service_builder() {
    let make = Make::new();
    let svc = ServiceBuilder::new()
        .buffer(8)
        .timeout(Duration::from_secs(1))
        .layer(ReconnectLayer::new("peer").connect_timeout(Duration::from_millis(200)))
        .service(make.clone());
    assert_eq!(svc.oneshot(1).await.unwrap(), 2);
    assert_eq!(make.dials(), 1);
}

/// Each service a layer builds has its own connection and watch.
#[tokio::test(start_paused = true)]
async fn layer_builds_independent_services() {
    let layer = ReconnectLayer::new("peer");
    let (make_a, make_b) = (Make::new(), Make::new());
    let mut a = layer.layer(make_a.clone());
    let b = layer.layer(make_b.clone());
    assert_ready_ok!(poll_ready(&mut a));
    assert!(a.watch().is_connected());
    assert_eq!(b.watch().phase(), Phase::Idle);
    assert_eq!((make_a.dials(), make_b.dials()), (1, 0));
    assert_eq!(*layer.target(), "peer");
}

/// Bad settings are refused by validate, each with the rule it breaks.
#[test]
fn validate_names_each_rule() {
    let base = || ReconnectLayer::new(());
    let cases = [
        (
            base().connect_timeout(Duration::ZERO),
            ConfigError::ConnectTimeoutNotPositive,
        ),
        (base().max_attempts(0), ConfigError::MaxAttemptsNotPositive),
        (
            base().backoff(Backoff::constant(Duration::ZERO)),
            ConfigError::DelayNotPositive,
        ),
        (
            base().backoff(Backoff::default().jitter(-0.1)),
            ConfigError::JitterOutOfRange(-0.1),
        ),
        (
            base().backoff(Backoff::default().multiplier(0.5)),
            ConfigError::MultiplierBelowOne(0.5),
        ),
        (
            base().backoff(Backoff::exponential(
                Duration::from_secs(9),
                Duration::from_secs(3),
            )),
            ConfigError::InitialAboveMax {
                initial: Duration::from_secs(9),
                max: Duration::from_secs(3),
            },
        ),
        (
            base().idle_timeout(Duration::ZERO),
            ConfigError::IdleTimeoutNotPositive,
        ),
        (
            base().wait_timeout(Duration::ZERO),
            ConfigError::WaitTimeoutNotPositive,
        ),
    ];
    for (layer, expected) in cases {
        assert_eq!(layer.validate().unwrap_err(), expected);
    }
    assert!(base().max_attempts(1).validate().is_ok());
    let short = Duration::from_nanos(1);
    assert!(base()
        .idle_timeout(short)
        .wait_timeout(short)
        .validate()
        .is_ok());
    assert_eq!(
        ConfigError::IdleTimeoutNotPositive.to_string(),
        "idle timeout must be greater than zero"
    );
    assert_eq!(
        ConfigError::WaitTimeoutNotPositive.to_string(),
        "wait timeout must be greater than zero"
    );
}

/// Building a service from bad settings fails at build time with the rule in the message.
#[test]
#[should_panic(
    expected = "invalid redial configuration: backoff jitter must be within 0.0..=1.0, got 2"
)]
fn building_with_bad_settings_panics_with_the_rule() {
    let _ = ReconnectLayer::new("peer")
        .backoff(Backoff::default().jitter(2.0))
        .layer(Make::new());
}

/// Debug shows the state without requiring Debug of the make service or its future.
#[tokio::test(start_paused = true)]
async fn debug_shows_state_without_bounds() {
    let mut svc = ReconnectLayer::new("peer").layer(Make::new());
    assert_ready_ok!(poll_ready(&mut svc));
    let debug = format!("{svc:?}");
    assert!(debug.contains("phase: Connected"), "{debug}");
    assert!(debug.contains("connects: 1"), "{debug}");
    let watch = format!("{:?}", svc.watch());
    assert!(watch.contains("Connected"), "{watch}");
}

/// An `async` connector (a `!Unpin` make future) works: no `Unpin` bound as in tower's Reconnect.
#[tokio::test(start_paused = true)]
async fn async_fn_connector_needs_no_unpin() {
    async fn connect(addr: &'static str) -> Result<support::Conn, std::io::Error> {
        // Holding a value across an await point makes the future !Unpin.
        let pinned = std::marker::PhantomPinned;
        tokio::task::yield_now().await;
        let _ = (pinned, addr);
        Ok(support::Conn::default())
    }
    let svc = ReconnectLayer::new("peer").layer(tower::service_fn(connect));
    assert_eq!(svc.oneshot(1).await.unwrap(), 2);
}
