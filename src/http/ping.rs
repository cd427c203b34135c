use std::{
    error::Error as StdError,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use hyper::client::conn::http2;
use hyper_util::rt::TokioTimer;

use super::executor::BoxedExecutor;

/// HTTP/2 keep-alive pings: how long an answer may take, and the interval
/// the next connection pings at, shared by every clone of the connector and
/// the connections it made, so that a connection told "too many pings"
/// slows down the ones dialled after it.
#[derive(Clone)]
pub(crate) struct Pings {
    /// In nanoseconds: an atomic holds no `Duration`.
    interval: Arc<AtomicU64>,
    timeout: Duration,
}

/// The shortest interval: zero would ping without pause, and could not
/// double.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

impl Pings {
    pub(crate) fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval: Arc::new(AtomicU64::new(nanos(interval.max(MIN_INTERVAL)))),
            timeout,
        }
    }

    /// The interval the next connection pings at.
    pub(crate) fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval.load(Ordering::Relaxed))
    }

    /// Sets `builder` up for one connection, with the current interval,
    /// and returns that interval.
    pub(crate) fn apply(&self, builder: &mut http2::Builder<BoxedExecutor>) -> Duration {
        let interval = self.interval();
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(interval)
            .keep_alive_timeout(self.timeout)
            .keep_alive_while_idle(true);
        interval
    }

    /// A connection that pinged every `used` failed with `err`: if the
    /// server said too many pings, the next connection pings half as often
    /// (gRFC A8), and one warning says so. Connections told at the same
    /// interval double it once between them, with one warning.
    pub(crate) fn failed(&self, used: Duration, err: &hyper::Error) {
        if !is_too_many_pings(err) {
            return;
        }
        let doubled = nanos(used).saturating_mul(2);
        if self.interval.fetch_max(doubled, Ordering::Relaxed) < doubled {
            let interval = Duration::from_nanos(doubled);
            tracing::warn!(
                ?interval,
                "the server said too many pings (GOAWAY ENHANCE_YOUR_CALM): \
                 keep-alive interval doubled for the next connection"
            );
        }
    }
}

impl fmt::Debug for Pings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pings")
            .field("interval", &self.interval())
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// What a closed connection's message says beyond "closed", read from
/// hyper's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    Unsaid,
    KeepAliveTimedOut,
    TooManyPings,
}

impl Why {
    pub(crate) fn of(err: Option<&hyper::Error>) -> Self {
        match err {
            Some(err) if is_keep_alive_timeout(err) => Self::KeepAliveTimedOut,
            Some(err) if is_too_many_pings(err) => Self::TooManyPings,
            _ => Self::Unsaid,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Unsaid => "http connection closed",
            Self::KeepAliveTimedOut => "http connection closed: keep-alive timed out",
            Self::TooManyPings => {
                "http connection closed: the server said too many pings (GOAWAY ENHANCE_YOUR_CALM)"
            }
        }
    }
}

/// hyper closed the connection because a keep-alive ping went unanswered.
///
/// hyper gives no kind for it; the only timer its HTTP/2 client runs is the
/// keep-alive's, and its HTTP/1 client runs none, so a timeout in a
/// client connection's error is this one.
fn is_keep_alive_timeout(err: &hyper::Error) -> bool {
    err.is_timeout()
}

/// The server sent `GOAWAY` with `ENHANCE_YOUR_CALM` and the debug data
/// `too_many_pings`: what a gRPC server sends to a client that pings more
/// often than its policy allows (gRFC A8).
///
/// The debug data matters: h2 sends `ENHANCE_YOUR_CALM` for other abuse
/// too (`too_many_resets`, `too_many_continuations`), which slower pings
/// would not cure. h2 shows a `GOAWAY`'s debug data only in its message, so
/// that is where it is read; `tests/keepalive.rs` fails if it moves.
fn is_too_many_pings(err: &hyper::Error) -> bool {
    let mut next = err.source();
    while let Some(err) = next {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_go_away()
                && h2.is_remote()
                && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
                && h2.to_string().contains("too_many_pings");
        }
        next = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interval is shared by clones, which is how the connector that
    /// dials sees what a connection learnt.
    #[test]
    fn clones_share_the_interval() {
        let pings = Pings::new(Duration::from_secs(20), Duration::from_secs(10));
        let clone = pings.clone();
        clone
            .interval
            .store(nanos(Duration::from_secs(40)), Ordering::Relaxed);
        assert_eq!(pings.interval(), Duration::from_secs(40));
    }

    /// A zero interval is raised to the minimum, so it can double.
    #[test]
    fn zero_interval_is_raised_to_the_minimum() {
        let pings = Pings::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(pings.interval(), MIN_INTERVAL);
    }

    /// Huge intervals neither overflow nor wrap when doubled.
    #[test]
    fn nanos_saturate() {
        assert_eq!(nanos(Duration::MAX), u64::MAX);
        assert_eq!(nanos(Duration::MAX).saturating_mul(2), u64::MAX);
    }
}
