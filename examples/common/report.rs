//! What the examples print, and how: the [`Clock`] that stamps each line,
//! the [`Tally`] of how requests ended, the printer of a `ConnectionWatch`'s
//! changes, and an error's chain of causes.
//!
//! Each example includes it with `#[path = "common/report.rs"] mod report;`.
//! It lives in a subfolder without a `main.rs`, so cargo does not build it as
//! an example of its own.

use std::{error::Error, fmt::Display, future::Future, time::Duration};

use redial::{ConnectionState, ConnectionWatch};
use tokio::time::{interval, timeout, Instant, Interval, MissedTickBehavior};
use tracing_subscriber::EnvFilter;

/// Logs what `RUST_LOG` asks for (nothing by default), and starts the clock.
pub(crate) fn start() -> Clock {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    Clock(Instant::now())
}

/// Prints lines stamped with the time since the example started.
#[derive(Clone, Copy)]
pub(crate) struct Clock(pub(crate) Instant);

impl Clock {
    /// Prints `line` after the time since the start, as `[ 1.25s] line`.
    pub(crate) fn say(self, line: impl Display) {
        println!("[{:>5.2}s] {line}", self.0.elapsed().as_secs_f64());
    }
}

/// A tick every `period`; a late tick delays the next ones, so that a slow
/// request is not followed by a burst.
pub(crate) fn every(period: Duration) -> Interval {
    let mut ticks = interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

/// The ticks of [`every`] `period`, numbered from 1, until `end`.
pub(crate) struct Ticks {
    ticks: Interval,
    end: Instant,
    n: usize,
}

impl Ticks {
    /// Ticks every `period`, the first at once, until `end`.
    pub(crate) fn until(end: Instant, period: Duration) -> Self {
        let ticks = every(period);
        Self { ticks, end, n: 0 }
    }

    /// Waits for the next tick and returns its number, or `None` once the
    /// tick comes at or after `end`.
    pub(crate) async fn next(&mut self) -> Option<usize> {
        self.ticks.tick().await;
        if Instant::now() >= self.end {
            return None;
        }
        self.n += 1;
        Some(self.n)
    }
}

/// Awaits `answer` for 5 s at most: its output (`None` if it took longer)
/// and how long it took. A request that waits for readiness may wait out an
/// outage; this bounds it anyway.
pub(crate) async fn timed<F: Future>(answer: F) -> (Option<F::Output>, Duration) {
    let sent = Instant::now();
    let result = timeout(Duration::from_secs(5), answer).await;
    (result.ok(), sent.elapsed())
}

/// How a request ended.
pub(crate) enum Outcome {
    /// Answered.
    Ok,
    /// Refused at once with `Unavailable`, without a dial.
    FailedFast,
    /// Any other error, or no answer in time.
    Other,
}

/// How many requests ended each way.
#[derive(Default)]
pub(crate) struct Tally {
    /// Answered.
    pub(crate) ok: usize,
    /// Refused at once with `Unavailable`.
    pub(crate) failed_fast: usize,
    /// Any other error, or no answer in time.
    pub(crate) other: usize,
}

impl Tally {
    /// Counts a request that ended as `outcome`, and prints `line`.
    pub(crate) fn record(&mut self, clock: Clock, outcome: Outcome, line: impl Display) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::FailedFast => self.failed_fast += 1,
            Outcome::Other => self.other += 1,
        }
        clock.say(line);
    }

    /// The counts in a line, `ok` naming the first: with "requests ok",
    /// `3 requests ok, 1 failed fast, 0 other errors`.
    pub(crate) fn counts(&self, ok: &str) -> String {
        format!(
            "{} {ok}, {} failed fast, {} other errors",
            self.ok, self.failed_fast, self.other
        )
    }
}

/// A state's counters, as `2 connects, 1 disconnects`.
pub(crate) fn connects(state: &ConnectionState) -> String {
    format!(
        "{} connects, {} disconnects",
        state.connects(),
        state.disconnects()
    )
}

/// Prints every change the watch reports, after `label`, until the client
/// is dropped or closed. With `retry`, a line says when the next attempt is
/// due, for a backoff whose delays are worth watching grow.
pub(crate) async fn print_changes(
    label: impl Display,
    watch: ConnectionWatch,
    clock: Clock,
    retry: bool,
) {
    let mut states = watch.subscribe();
    loop {
        let state = states.borrow_and_update().clone();
        let mut line = format!("{label}: {} (attempt {})", state.phase(), state.attempt());
        if let Some(at) = state.retry_at().filter(|_| retry) {
            let retry_in = at.saturating_duration_since(Instant::now());
            line += &format!(", next attempt in {retry_in:.0?}");
        }
        if let Some(err) = state.last_error() {
            line += &format!(", last error: {}", chain(err));
        }
        clock.say(line);
        if states.changed().await.is_err() {
            return;
        }
    }
}

/// An error and its causes, as `outer: inner: root`.
pub(crate) fn chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text += &format!(": {cause}");
        next = cause.source();
    }
    text
}
