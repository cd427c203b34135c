//! What both model tests share: the strategies for settings and dials, the
//! runtime, and the comparison of the service's watch, errors and mock with
//! the model.

use std::{error::Error, task::Poll, time::Duration};

use proptest::{prelude::*, test_runner::FileFailurePersistence};
use redial::{
    error::{Closed, ConnectFailed, ConnectTimeout, ConnectionLost, GaveUp, NotReady, Unavailable},
    Backoff, ConnectionWatch, ReconnectLayer,
};
use tokio::time::Instant;
use tower::BoxError;

use crate::{
    reference::{
        Answer, Cause, Cfg, DialKind, Exp, Last, Model, Phase, Ready, MAKE_NOT_READY, REFUSED,
    },
    support::{ConnError, DialError, Make},
};

/// A step's outcome: `Err` names what differed.
pub type Step = Result<(), String>;

/// Fails the step with a message when `got != want`.
macro_rules! same {
    ($what:expr, $got:expr, $want:expr) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(format!("{}: got {:?}, model says {:?}", $what, got, want));
        }
    }};
}
pub(crate) use same;

// ===== strategies =====

/// proptest's defaults (256 cases, or `PROPTEST_CASES`), with failing
/// cases saved next to the test's source (`tests/model/reconnect.regressions`
/// or `shared.regressions`, to commit with the fix), where they are replayed
/// first.
pub fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

pub fn cfg() -> impl Strategy<Value = Cfg> {
    (
        prop_oneof![Just(1000u64), Just(2500), 1..=4000u64],
        prop::collection::vec(prop_oneof![Just(1000u64), 1..=3000u64], 0..=4),
        prop::bool::weighted(0.8),
        prop::option::weighted(0.3, 1..=4u32),
        any::<bool>(),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(timeout, delays, repeat_last, max_attempts, wait_for_ready, classify)| Cfg {
                timeout,
                delays,
                repeat_last,
                max_attempts,
                wait_for_ready,
                classify,
                exponential: None,
            },
        )
}

/// Settings with an exponential schedule and jitter, as most users run:
/// half of the cases; the rest as `cfg`. The model learns each drawn delay
/// from the watch and checks it is in its band.
pub fn cfg_jittered() -> impl Strategy<Value = Cfg> {
    let exp = (
        prop_oneof![Just(1000u64), 1..=3000u64],
        prop_oneof![Just(1u64), 1..=8u64],
        prop_oneof![Just(1.0f64), Just(1.6), Just(2.0), 1.0..4.0f64],
        prop_oneof![Just(0.0f64), Just(0.2), Just(1.0), 0.0..=1.0f64],
    )
        .prop_map(|(initial, times, multiplier, jitter)| Exp {
            initial,
            max: initial * times,
            multiplier,
            jitter,
        });
    (cfg(), prop::option::weighted(0.5, exp))
        .prop_map(|(cfg, exponential)| Cfg { exponential, ..cfg })
}

pub fn dial() -> impl Strategy<Value = DialKind> {
    prop_oneof![
        3 => Just(DialKind::Connect),
        3 => Just(DialKind::Fail),
        1 => Just(DialKind::Hang),
        2 => (1..=5000u64).prop_map(DialKind::ConnectAfter),
        2 => (1..=5000u64).prop_map(DialKind::FailAfter),
    ]
}

/// A clock step: small, large, or landing next to the model's next event.
#[derive(Clone, Copy, Debug)]
pub enum Jump {
    By(u64),
    /// To the next event, plus -1, 0 or +1 ms.
    ToEvent(i8),
}

pub fn jump() -> impl Strategy<Value = Jump> {
    prop_oneof![
        2 => (1..=50u64).prop_map(Jump::By),
        2 => (1..=6000u64).prop_map(Jump::By),
        3 => (-1..=1i8).prop_map(Jump::ToEvent),
    ]
}

impl Jump {
    /// How far to advance from the model's present, if anywhere.
    pub fn ms(self, model: &Model) -> Option<u64> {
        match self {
            Jump::By(ms) => Some(ms),
            Jump::ToEvent(offset) => {
                let at = model.next_event()?.checked_add_signed(offset.into())?;
                at.checked_sub(model.now).filter(|ms| *ms > 0)
            }
        }
    }
}

// ===== the service under test =====

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a paused runtime")
}

pub fn layer(cfg: &Cfg) -> ReconnectLayer<&'static str> {
    let delays: Vec<Duration> = cfg.delays.iter().map(|d| ms(*d)).collect();
    let backoff = match (cfg.repeat_last, delays.last().copied()) {
        (true, Some(last)) => {
            Backoff::from_delays(delays.into_iter().chain(std::iter::repeat(last)))
        }
        _ => Backoff::from_delays(delays.into_iter()),
    };
    let backoff = match cfg.exponential {
        Some(exp) => Backoff::exponential(ms(exp.initial), ms(exp.max))
            .multiplier(exp.multiplier)
            .jitter(exp.jitter),
        None => backoff,
    };
    let mut layer = ReconnectLayer::new("peer")
        .connect_timeout(ms(cfg.timeout))
        .backoff(backoff)
        .wait_for_ready(cfg.wait_for_ready);
    if let Some(max) = cfg.max_attempts {
        layer = layer.max_attempts(max);
    }
    if cfg.classify {
        layer = layer.disconnect_on(|err| err.is::<ConnError>());
    }
    layer
}

pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A time since the case began as the model counts it, in nanoseconds.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("a case lasts less than 584 years")
}

/// Advances the paused clock and the model together.
pub async fn advance(model: &mut Model, by: u64) {
    tokio::time::advance(ms(by)).await;
    model.advance(by);
}

// ===== comparing =====

/// The watch, the dials and the connections match the model.
pub fn state(model: &Model, watch: &ConnectionWatch, make: &Make, t0: Instant) -> Step {
    let s = watch.state();
    same!("phase", phase(s.phase()), model.phase());
    same!("attempt", s.attempt(), model.attempt());
    same!("connects", s.connects(), model.connects);
    same!("disconnects", s.disconnects(), model.disconnects);
    same!(
        "retry_at",
        s.retry_at(),
        model.retry_at().map(|t| t0 + Duration::from_nanos(t))
    );
    same!(
        "last_error",
        s.last_error().map(|e| last(e, model.cfg.timeout)),
        model.last().map(Ok)
    );
    same!("dials", make.dials(), model.dials);
    let conns = make.conns();
    same!("connections handed out", conns.len(), model.conns.len());
    for (i, (conn, m)) in conns.iter().zip(&model.conns).enumerate() {
        same!(format!("calls on connection {i}"), conn.calls(), m.calls);
        same!(
            format!("connection {i} held"),
            conn.is_held(),
            model.held() == Some(i)
        );
    }
    Ok(())
}

fn phase(phase: redial::Phase) -> Phase {
    match phase {
        redial::Phase::Idle => Phase::Idle,
        redial::Phase::Connecting => Phase::Connecting,
        redial::Phase::Connected => Phase::Connected,
        redial::Phase::Disconnected => Phase::Disconnected,
        redial::Phase::Closed => Phase::Closed,
        other => panic!("a phase the model does not know: {other:?}"),
    }
}

/// The model's name for a last error, or what it was if it has none.
pub fn last(err: &(dyn Error + 'static), timeout: u64) -> Result<Last, String> {
    match err.downcast_ref::<GaveUp>() {
        Some(gave_up) => Ok(Last::GaveUp {
            attempts: gave_up.attempts(),
            cause: cause(gave_up.source().ok_or("GaveUp without a cause")?, timeout)?,
        }),
        None => cause(err, timeout).map(Last::Cause),
    }
}

fn cause(err: &(dyn Error + 'static), timeout: u64) -> Result<Cause, String> {
    if let Some(failed) = err.downcast_ref::<ConnectFailed>() {
        return match failed.source().and_then(|e| e.downcast_ref::<DialError>()) {
            Some(DialError(msg)) if *msg == REFUSED => Ok(Cause::Refused),
            Some(DialError(msg)) if *msg == MAKE_NOT_READY => Ok(Cause::MakeNotReady),
            _ => Err(format!("unexpected ConnectFailed {failed:?}")),
        };
    }
    if let Some(t) = err.downcast_ref::<ConnectTimeout>() {
        return match t.timeout() == ms(timeout) {
            true => Ok(Cause::Timeout),
            false => Err(format!("ConnectTimeout of {:?}", t.timeout())),
        };
    }
    if let Some(lost) = err.downcast_ref::<ConnectionLost>() {
        return Ok(match lost.source() {
            None => Cause::Marked,
            Some(e) if e.is::<ConnError>() => Cause::Reset,
            // The classifier's verdict (a private type) on the mock's error.
            Some(_) => Cause::Fatal,
        });
    }
    Err(format!("unexpected cause {err:?}"))
}

/// A `poll_ready` result matches the model's.
pub fn ready(got: Poll<Result<(), BoxError>>, want: Ready, timeout: u64) -> Step {
    let got = match got {
        Poll::Ready(Ok(())) => Ready::Ok,
        Poll::Pending => Ready::Pending,
        Poll::Ready(Err(err)) => match last(&*err, timeout)? {
            Last::GaveUp { attempts, cause } => Ready::GaveUp { attempts, cause },
            Last::Cause(_) => return Err(format!("poll_ready failed with {err:?}")),
        },
    };
    same!("poll_ready", got, want);
    Ok(())
}

/// A response matches the model's answer.
pub fn answer(got: Result<u32, BoxError>, want: Answer, t0: Instant, timeout: u64) -> Step {
    let got = match got {
        Ok(n) => Answer::Ok(n),
        Err(err) => error_answer(&err, want, t0, timeout)?,
    };
    same!("response", got, want);
    Ok(())
}

fn error_answer(err: &BoxError, want: Answer, t0: Instant, timeout: u64) -> Result<Answer, String> {
    if let Some(ConnError(_, conn)) = err.downcast_ref::<ConnError>() {
        // The error names the connection it came from, which must be the
        // one the model sent the request on; the generation is the model's.
        return match want {
            Answer::Broken { generation, .. } => Ok(Answer::Broken {
                conn: *conn,
                generation,
            }),
            _ => Err(format!("the connection's error {err:?}")),
        };
    }
    if err.is::<NotReady>() {
        return Ok(Answer::NotReady);
    }
    if let Some(u) = err.downcast_ref::<Unavailable>() {
        let cause = match u.source() {
            Some(e) => Some(last(e, timeout)?),
            None => None,
        };
        return Ok(Answer::Unavailable {
            attempt: u.attempt(),
            retry_at: u.retry_at().map(|at| nanos(at - t0)),
            cause,
        });
    }
    match last(&**err, timeout)? {
        Last::GaveUp { attempts, cause } => Ok(Answer::GaveUp { attempts, cause }),
        Last::Cause(_) => Err(format!("call failed with {err:?}")),
    }
}

/// `Closed`, with the reason the model expects (`GaveUp` or none).
pub fn closed(err: &BoxError, why: Option<Last>, timeout: u64) -> Step {
    let Some(closed) = err.downcast_ref::<Closed>() else {
        return Err(format!("expected Closed, got {err:?}"));
    };
    let got = match closed.source() {
        Some(e) => Some(last(e, timeout)?),
        None => None,
    };
    same!("reason for Closed", got, why);
    Ok(())
}
