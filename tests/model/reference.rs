//! The reference model: the crate's documented contract (its states, timing,
//! readiness and what the watch shows) as a small synchronous state machine
//! on a millisecond clock, with the scripted make service and its connections
//! folded in. It is written from the documentation, including the choices it
//! spells out, not from `src/state/`:
//!
//! - an attempt starts (and its connect deadline runs) when `poll_ready`
//!   drives it, and dials at once (the mock's `poll_ready` is always ready,
//!   unless told to fail once);
//! - a lazy service moves only when polled, so an attempt's result, the
//!   deadline and the retry time are all looked at on the next poll; a make
//!   future that has resolved by then wins over a deadline that has also
//!   passed (nobody can tell which came first);
//! - `Disconnected` is sticky: from the first failure until a connection
//!   proves itself, running attempts are reported as `Disconnected` and fail
//!   fast; losing a proven connection shows `Disconnected` with the retry due
//!   at once, then `Connecting` for the immediate reconnect, during which
//!   requests wait;
//! - a connection lost before the first retry delay counts as the failed
//!   attempt that made it, retried from that attempt's start;
//! - the schedule: a list of delays, or `Backoff::exponential` (each delay
//!   the last times the multiplier, up to the maximum, drawn within the
//!   jitter of its nominal value and never above the maximum). A jittered
//!   delay cannot be foreseen, so the model reads each one from the watch
//!   and checks it is in its band; the proof of life is the first nominal
//!   delay;
//! - a retry starts at the last timer tick (whole millisecond) at or before
//!   its time, as the timer is armed just under a millisecond early.

use std::collections::VecDeque;

use crate::support::Dial;

/// The mock's dial error for a refused dial.
pub const REFUSED: &str = "connection refused";
/// The mock's error when the make service's own `poll_ready` fails.
pub const MAKE_NOT_READY: &str = "make service not ready";

/// What a scripted dial does: the mock's [`Dial`], without panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialKind {
    Connect,
    Fail,
    Hang,
    ConnectAfter(u64),
    FailAfter(u64),
}

impl DialKind {
    pub fn to_dial(self) -> Dial {
        use std::time::Duration;
        match self {
            DialKind::Connect => Dial::Connect,
            DialKind::Fail => Dial::Fail(REFUSED),
            DialKind::Hang => Dial::Hang,
            DialKind::ConnectAfter(ms) => Dial::ConnectAfter(Duration::from_millis(ms)),
            DialKind::FailAfter(ms) => Dial::FailAfter(Duration::from_millis(ms), REFUSED),
        }
    }

    /// Whether the mock hands out a connection for this dial.
    fn makes_conn(self) -> bool {
        matches!(self, DialKind::Connect | DialKind::ConnectAfter(_))
    }

    /// `Some(connected?)` once the dial made at `start` has resolved at `now`.
    fn resolved(self, start: u64, now: u64) -> Option<bool> {
        match self {
            DialKind::Connect => Some(true),
            DialKind::Fail => Some(false),
            DialKind::Hang => None,
            DialKind::ConnectAfter(d) => (now >= start + d).then_some(true),
            DialKind::FailAfter(d) => (now >= start + d).then_some(false),
        }
    }

    /// When the dial made at `start` resolves on its own, if ever.
    fn resolves_at(self, start: u64) -> Option<u64> {
        match self {
            DialKind::Connect | DialKind::Fail => Some(start),
            DialKind::Hang => None,
            DialKind::ConnectAfter(d) | DialKind::FailAfter(d) => Some(start + d),
        }
    }
}

/// Why the service is not connected (the innermost cause).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// `ConnectFailed` from the dial.
    Refused,
    /// `ConnectFailed` from the make service's `poll_ready`.
    MakeNotReady,
    /// `ConnectTimeout`.
    Timeout,
    /// `ConnectionLost`: the connection's `poll_ready` failed.
    Reset,
    /// `ConnectionLost` without a source: `mark_disconnected`.
    Marked,
    /// `ConnectionLost`: a response error the classifier called fatal.
    Fatal,
}

/// The state's last error, as the watch reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Last {
    Cause(Cause),
    GaveUp { attempts: u32, cause: Cause },
}

/// The phase, as `redial::Phase` (which is `#[non_exhaustive]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Connecting,
    Connected,
    Disconnected,
    Closed,
}

/// What `poll_ready` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    Ok,
    Pending,
    /// `Err(GaveUp)`, final.
    GaveUp {
        attempts: u32,
        cause: Cause,
    },
}

/// What a call's response future resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The connection answered `n + 1`.
    Ok(u32),
    /// The connection answered its error (requests for 0): connection
    /// `conn` (its place among those handed out), the connection of this
    /// generation.
    Broken {
        conn: usize,
        generation: u64,
    },
    NotReady,
    Unavailable {
        attempt: u32,
        retry_at: Option<u64>,
        cause: Option<Last>,
    },
    GaveUp {
        attempts: u32,
        cause: Cause,
    },
}

/// The settings a case runs with; times in milliseconds.
#[derive(Clone, Debug)]
pub struct Cfg {
    pub timeout: u64,
    /// The schedule (`Backoff::from_delays`); with `repeat_last` its last
    /// delay repeats forever, otherwise the service gives up after it.
    pub delays: Vec<u64>,
    pub repeat_last: bool,
    pub max_attempts: Option<u32>,
    pub wait_for_ready: bool,
    /// Whether response errors from the connection are classified fatal.
    pub classify: bool,
    /// Instead of `delays`, `Backoff::exponential` with these settings.
    pub exponential: Option<Exp>,
}

/// An exponential schedule: `initial` and `max` in milliseconds, each delay
/// `multiplier` times the last up to `max`, each drawn within `jitter` of
/// its nominal value and never above `max`.
#[derive(Clone, Copy, Debug)]
pub struct Exp {
    pub initial: u64,
    pub max: u64,
    pub multiplier: f64,
    pub jitter: f64,
}

impl Exp {
    /// The band retry number `i + 1` of a schedule run falls in, in
    /// nanoseconds: the nominal delay, `initial` times `multiplier` to the
    /// `i`-th power up to `max`, give or take the jitter.
    fn band(&self, i: usize) -> (f64, f64) {
        let (initial, max) = (self.initial as f64 * 1e6, self.max as f64 * 1e6);
        let mut nominal = initial.min(max);
        for _ in 0..i {
            nominal = (nominal * self.multiplier).min(max);
        }
        (
            nominal * (1.0 - self.jitter),
            (nominal * (1.0 + self.jitter)).min(max),
        )
    }
}

impl Cfg {
    /// The delay before retry number `i + 1` of a schedule run.
    fn delay(&self, i: usize) -> Option<u64> {
        match self.delays.get(i) {
            Some(d) => Some(*d),
            None if self.repeat_last => self.delays.last().copied(),
            None => None,
        }
    }

    /// How long a connection must stay up to reset the schedule: the first
    /// delay, its nominal value.
    fn proof_of_life(&self) -> u64 {
        match self.exponential {
            Some(exp) => exp.initial.min(exp.max),
            None => self.delays.first().copied().unwrap_or(0),
        }
    }
}

/// One connection the mock handed out.
#[derive(Clone, Debug, Default)]
pub struct ConnModel {
    pub broken: bool,
    pub busy: bool,
    pub calls: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Idle,
    /// Dialled at `start` (an attempt dials as it starts).
    Attempt {
        start: u64,
        kind: DialKind,
        conn: Option<usize>,
    },
    Connected {
        conn: usize,
        since: u64,
    },
    /// Waiting to retry at `retry_at`, in nanoseconds (jittered delays are
    /// not whole milliseconds).
    Waiting {
        retry_at: u64,
    },
    Closed,
}

/// The model's time (whole milliseconds) at which a retry due at `at`
/// nanoseconds starts: the last timer tick at or before it, as the service
/// arms its retry timer just under a millisecond early and the timer rounds
/// up to its next tick.
fn fires_at(at: u64) -> u64 {
    at / 1_000_000
}

/// What the service shows of its retry: the attempt it follows and when it
/// is, in nanoseconds since the case began, read from its watch. With
/// jitter, the model learns each delay from it and checks it is in its
/// band.
#[derive(Clone)]
pub struct Peek(pub std::sync::Arc<dyn Fn() -> (u32, Option<u64>) + Send + Sync>);

impl std::fmt::Debug for Peek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peek")
    }
}

#[derive(Clone, Debug)]
pub struct Model {
    pub cfg: Cfg,
    pub now: u64,
    st: St,
    /// From the first failure until a connection proves itself.
    outage: bool,
    attempt: u32,
    attempt_start: u64,
    /// Delays taken from the current schedule run.
    taken: usize,
    last: Option<Last>,
    /// `poll_ready` said `Ready(Ok)` and no call used it yet.
    ready: bool,
    /// A fatal response error on the current connection, not yet seen by
    /// `poll_ready`.
    fatal: bool,
    generation: u64,
    pub connects: u64,
    pub disconnects: u64,
    pub dials: usize,
    pub queue: VecDeque<DialKind>,
    make_not_ready: bool,
    pub conns: Vec<ConnModel>,
    /// With an exponential schedule: the service's retry, as its watch
    /// shows it.
    peek: Option<Peek>,
}

impl Model {
    pub fn new(cfg: Cfg) -> Self {
        Self {
            cfg,
            now: 0,
            st: St::Idle,
            outage: false,
            attempt: 0,
            attempt_start: 0,
            taken: 0,
            last: None,
            ready: false,
            fatal: false,
            generation: 0,
            connects: 0,
            disconnects: 0,
            dials: 0,
            queue: VecDeque::new(),
            make_not_ready: false,
            conns: Vec::new(),
            peek: None,
        }
    }

    /// Learns each jittered delay from `peek` (required with an exponential
    /// schedule).
    pub fn with_peek(mut self, peek: Peek) -> Self {
        self.peek = Some(peek);
        self
    }

    // ===== what the watch shows =====

    pub fn phase(&self) -> Phase {
        match self.st {
            St::Idle => Phase::Idle,
            St::Attempt { .. } if !self.outage => Phase::Connecting,
            St::Attempt { .. } | St::Waiting { .. } => Phase::Disconnected,
            St::Connected { .. } => Phase::Connected,
            St::Closed => Phase::Closed,
        }
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the retry is, in nanoseconds since the case began.
    pub fn retry_at(&self) -> Option<u64> {
        match self.st {
            St::Waiting { retry_at } => Some(retry_at),
            _ => None,
        }
    }

    pub fn last(&self) -> Option<Last> {
        self.last
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.st, St::Connected { .. })
    }

    /// The connections the service holds: the live one, or the one a
    /// running attempt is about to hand over.
    pub fn held(&self) -> Option<usize> {
        match self.st {
            St::Connected { conn, .. } => Some(conn),
            St::Attempt { conn, .. } => conn,
            _ => None,
        }
    }

    /// The next time something is due: a retry, a deadline, a dial
    /// resolving, or a connection proving itself.
    pub fn next_event(&self) -> Option<u64> {
        let due = match self.st {
            St::Waiting { retry_at } => Some(fires_at(retry_at)),
            St::Attempt { .. } => self.wake_at(),
            St::Connected { since, .. } => Some(since + self.cfg.proof_of_life()),
            St::Idle | St::Closed => None,
        };
        due.filter(|t| *t > self.now)
    }

    /// After a `Pending` `poll_ready`: the time the timer (or the make
    /// future) wakes the caller. A busy connection wakes it instead.
    pub fn wake_at(&self) -> Option<u64> {
        match self.st {
            St::Waiting { retry_at } => Some(fires_at(retry_at)),
            St::Attempt { start, kind, .. } => {
                let deadline = start + self.cfg.timeout;
                Some(
                    kind.resolves_at(start)
                        .map_or(deadline, |t| t.min(deadline)),
                )
            }
            _ => None,
        }
    }

    /// After a `Pending` `poll_ready`: the connection whose readiness the
    /// caller waits on.
    pub fn waits_on_conn(&self) -> Option<usize> {
        match self.st {
            St::Connected { conn, .. } if self.conns[conn].busy => Some(conn),
            _ => None,
        }
    }

    // ===== the environment =====

    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    pub fn push_dial(&mut self, kind: DialKind) {
        self.queue.push_back(kind);
    }

    pub fn fail_make_ready(&mut self) {
        self.make_not_ready = true;
    }

    /// Breaks the newest connection; `false` if there is none.
    pub fn kill_newest(&mut self) -> bool {
        self.conns.last_mut().map(|c| c.broken = true).is_some()
    }

    pub fn set_busy_newest(&mut self, busy: bool) -> bool {
        self.conns.last_mut().map(|c| c.busy = busy).is_some()
    }

    // ===== the service =====

    /// One `poll_ready`.
    pub fn poll(&mut self) -> Ready {
        loop {
            if std::mem::take(&mut self.fatal) {
                self.lose(Cause::Fatal);
            }
            match self.st {
                St::Closed => {
                    let Some(Last::GaveUp { attempts, cause }) = self.last else {
                        unreachable!("a service closes only by giving up");
                    };
                    return Ready::GaveUp { attempts, cause };
                }
                St::Idle => self.start_attempt(),
                St::Waiting { retry_at } if self.now >= fires_at(retry_at) => self.start_attempt(),
                St::Waiting { .. } => return self.pending(),
                St::Connected { conn, .. } => {
                    let c = &self.conns[conn];
                    if c.broken {
                        self.lose(Cause::Reset);
                    } else if c.busy {
                        return Ready::Pending;
                    } else {
                        self.ready = true;
                        return Ready::Ok;
                    }
                }
                St::Attempt { start, kind, conn } => match kind.resolved(start, self.now) {
                    Some(true) => self.connected(conn.expect("a connecting dial has a conn")),
                    Some(false) => self.fail(Cause::Refused),
                    None if self.now >= start + self.cfg.timeout => self.fail(Cause::Timeout),
                    None => return self.pending(),
                },
            }
        }
    }

    /// One `call(n)`: what its response future resolves to.
    pub fn call(&mut self, n: u32) -> Answer {
        let ready = std::mem::take(&mut self.ready);
        match self.st {
            St::Connected { conn, .. } if ready => {
                self.conns[conn].calls += 1;
                match n {
                    0 => Answer::Broken {
                        conn,
                        generation: self.generation,
                    },
                    n => Answer::Ok(n + 1),
                }
            }
            _ if !ready => Answer::NotReady,
            St::Closed => {
                let Some(Last::GaveUp { attempts, cause }) = self.last else {
                    unreachable!("a service closes only by giving up");
                };
                Answer::GaveUp { attempts, cause }
            }
            _ => Answer::Unavailable {
                attempt: self.attempt,
                retry_at: self.retry_at(),
                cause: self.last,
            },
        }
    }

    /// A response future resolved with `answer` and was seen by its caller.
    pub fn responded(&mut self, answer: Answer) {
        if let Answer::Broken { generation, .. } = answer {
            if self.cfg.classify && self.is_connected() && generation == self.generation {
                self.fatal = true;
            }
        }
    }

    pub fn mark_disconnected(&mut self) {
        self.lose(Cause::Marked);
    }

    pub fn reset_backoff(&mut self) {
        self.taken = 0;
        if let St::Waiting { retry_at } = &mut self.st {
            *retry_at = self.now * 1_000_000;
        }
    }

    /// The service is dropped (or its shared task closes).
    pub fn drop_service(&mut self) {
        if self.is_connected() {
            self.disconnects += 1;
        }
        self.st = St::Closed;
    }

    // ===== transitions =====

    fn pending(&mut self) -> Ready {
        if self.outage && !self.cfg.wait_for_ready {
            self.ready = true;
            Ready::Ok
        } else {
            Ready::Pending
        }
    }

    fn start_attempt(&mut self) {
        self.attempt += 1;
        self.attempt_start = self.now;
        if std::mem::take(&mut self.make_not_ready) {
            return self.fail(Cause::MakeNotReady);
        }
        let kind = self.queue.pop_front().unwrap_or(DialKind::Connect);
        self.dials += 1;
        let conn = kind.makes_conn().then(|| {
            self.conns.push(ConnModel::default());
            self.conns.len() - 1
        });
        self.st = St::Attempt {
            start: self.now,
            kind,
            conn,
        };
    }

    fn connected(&mut self, conn: usize) {
        self.generation += 1;
        self.connects += 1;
        self.last = None;
        self.st = St::Connected {
            conn,
            since: self.now,
        };
    }

    fn fail(&mut self, cause: Cause) {
        let gave_up = self.cfg.max_attempts.is_some_and(|max| self.attempt >= max);
        let delay = if gave_up {
            None
        } else {
            self.taken += 1;
            match self.cfg.exponential {
                Some(exp) => Some(self.jittered(exp.band(self.taken - 1))),
                None => self.cfg.delay(self.taken - 1).map(|d| d * 1_000_000),
            }
        };
        match delay {
            None => {
                self.last = Some(Last::GaveUp {
                    attempts: self.attempt,
                    cause,
                });
                self.st = St::Closed;
            }
            Some(delay) => {
                self.outage = true;
                self.last = Some(Last::Cause(cause));
                self.st = St::Waiting {
                    retry_at: (self.attempt_start * 1_000_000 + delay).max(self.now * 1_000_000),
                };
            }
        }
    }

    /// The delay the service drew in `band` (nanoseconds) for the failure
    /// of the attempt now ending, as its watch shows it. If the service has
    /// already started the next attempt (the retry was due at once), its
    /// watch no longer shows the retry: the earliest the band allows
    /// stands in, which is as due as the service found it.
    fn jittered(&self, (low, high): (f64, f64)) -> u64 {
        let peek = self
            .peek
            .as_ref()
            .expect("an exponential schedule needs a peek");
        let start = self.attempt_start * 1_000_000;
        let (attempt, retry_at) = (peek.0)();
        let (low, high) = (low.floor() as u64, high.ceil() as u64);
        match retry_at {
            Some(at) if attempt == self.attempt => {
                let now = self.now * 1_000_000;
                let drawn = at
                    .checked_sub(start)
                    .expect("a retry after its attempt's start");
                // In the band, or moved to now (`max(now)`) from a point in
                // the band already past.
                let in_band = (low..=high).contains(&drawn);
                let moved_to_now = at == now && start + low <= now;
                assert!(
                    in_band || moved_to_now,
                    "a jittered delay of {drawn} ns outside its band {low}..={high} ns"
                );
                drawn
            }
            _ => {
                assert!(
                    fires_at(start + low) <= self.now,
                    "the service retried at once, before the band {low}..={high} ns allows"
                );
                low
            }
        }
    }

    fn lose(&mut self, cause: Cause) {
        let St::Connected { since, .. } = self.st else {
            return;
        };
        self.fatal = false;
        self.disconnects += 1;
        if self.now - since < self.cfg.proof_of_life() {
            return self.fail(cause);
        }
        self.taken = 0;
        self.attempt = 0;
        self.outage = false;
        self.last = Some(Last::Cause(cause));
        self.st = St::Waiting {
            retry_at: self.now * 1_000_000,
        };
    }
}
