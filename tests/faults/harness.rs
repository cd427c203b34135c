//! What every case uses: the client configuration and its backoff schedule,
//! the clients under test, callers that record each request's outcome, and
//! the checks that nothing is left behind.

use std::{
    error::Error,
    io,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use redial::{
    error::{Closed, ConnectTimeout, ConnectionLost, Resend, Unavailable},
    http::{ConnectionClosed, Http1Connector, Http2Connector},
    Backoff, ConnectionWatch, ReconnectLayer,
};
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{sleep, timeout_at, Instant},
};
use tower::{buffer::Buffer, util::BoxCloneService, BoxError, Layer, Service, ServiceExt};

use crate::{server::Proto, support::errors::find};

pub type Body = Full<Bytes>;

// ===== the configuration and its schedule =====

/// Bounds each attempt: TCP, and the HTTP/2 preface.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// The first retry delay, and the proof of life that resets the schedule.
pub const INITIAL: Duration = Duration::from_millis(100);
/// The longest retry delay, a hard ceiling even with jitter.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// From the heal to the first connected attempt, at worst: the attempt
/// running at the heal fails, the next starts at most `MAX_DELAY` after it
/// and takes at most `CONNECT_TIMEOUT`.
pub const RECOVERY_BOUND: Duration = MAX_DELAY.saturating_add(CONNECT_TIMEOUT);
/// What a request may take beyond its deadline before the case fails.
pub const GRACE: Duration = Duration::from_secs(1);
/// How late this loaded machine may run what is due (a timer, a woken
/// task, a request's round trip on 127.0.0.1): scheduling, not design. It
/// is added once per scheduled event to the bounds on attempts derived
/// from the configuration.
pub const SLACK: Duration = Duration::from_millis(100);
/// The same for a bound on one request, or on one gap between attempts:
/// a single stall counts in full there, and eight cases share two cores,
/// and a `Buffer` worker polls only when the next caller's request comes
/// (every `PACE`). Still under the connect timeout plus the first delay,
/// so a fail-fast caller made to wait out attempts, or a retry a delay
/// late, is caught.
pub const REQUEST_SLACK: Duration = Duration::from_millis(250);

/// gRPC's schedule with the delays above: ×1.6, ±20 %.
pub fn backoff() -> Backoff {
    Backoff::exponential(INITIAL, MAX_DELAY)
}

/// The nominal delays of [`backoff`], from the first.
fn nominal_delays() -> impl Iterator<Item = f64> {
    let max = MAX_DELAY.as_secs_f64();
    std::iter::successors(Some(INITIAL.as_secs_f64()), move |d| {
        Some((d * Backoff::DEFAULT_MULTIPLIER).min(max))
    })
}

/// The earliest attempt `k` (counting from 0) can start after the first:
/// each starts at least the shortest jittered delay after the one before
/// (delays count from the start of an attempt).
pub fn earliest_start(k: usize) -> Duration {
    let low = 1.0 - Backoff::DEFAULT_JITTER;
    Duration::from_secs_f64(nominal_delays().take(k).map(|d| d * low).sum())
}

/// The most attempts that can start within `window` of the first.
pub fn max_attempts(window: Duration) -> u32 {
    (1..).find(|&k| earliest_start(k) > window).unwrap() as u32
}

/// The longest gap between the start of attempt `n` (counting from 1) of
/// an outage and the start of the next, when each attempt lasts up to
/// `attempt`: the longest jittered delay (never above the maximum), or the
/// attempt's length when it overruns its delay, plus [`SLACK`].
pub fn longest_gap(n: usize, attempt: Duration) -> Duration {
    let high = 1.0 + Backoff::DEFAULT_JITTER;
    let nominal = nominal_delays().nth(n - 1).unwrap();
    let delay = Duration::from_secs_f64((nominal * high).min(MAX_DELAY.as_secs_f64()));
    delay.max(attempt) + SLACK
}

/// The latest attempt `k` (counting from 0) starts after the client is
/// built when each attempt lasts up to `attempt`.
fn latest_start(k: usize, attempt: Duration) -> Duration {
    SLACK + (1..=k).map(|n| longest_gap(n, attempt)).sum::<Duration>()
}

/// The fewest attempts that start within `window` of building the client
/// when each lasts up to `attempt`.
pub fn min_attempts(window: Duration, attempt: Duration) -> u32 {
    (0..).find(|&k| latest_start(k, attempt) > window).unwrap() as u32
}

// ===== the clients under test =====

/// The plain `Reconnect` under `tower::buffer::Buffer`, or the shared
/// handle (`Reconnect::spawn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Buffer,
    Shared,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    FailFast,
    WaitForReady,
}

pub type Client = BoxCloneService<Request<Body>, Response<Incoming>, BoxError>;

/// How to close a client: the shared handle is closed; a `Buffer` closes
/// when its last clone is dropped.
pub type Closer = Option<Box<dyn FnOnce()>>;

/// A client of `uri`, its watch, and the log of its dials.
pub fn client(
    uri: Uri,
    proto: Proto,
    kind: Kind,
    mode: Mode,
) -> (Client, ConnectionWatch, Closer, Dials) {
    let dials = Dials::default();
    let dialer = Dialer::new(&dials);
    let layer = ReconnectLayer::new(uri)
        .connect_timeout(CONNECT_TIMEOUT)
        .backoff(backoff())
        .wait_for_ready(mode == Mode::WaitForReady);
    macro_rules! wrap {
        ($connector:expr) => {{
            let svc = layer.layer($connector);
            let watch = svc.watch();
            match kind {
                Kind::Buffer => (
                    BoxCloneService::new(Buffer::new(svc, 64)),
                    watch,
                    None,
                    dials,
                ),
                Kind::Shared => {
                    let shared = svc.spawn(64);
                    let closer = shared.clone();
                    let close: Box<dyn FnOnce()> = Box::new(move || closer.close());
                    (BoxCloneService::new(shared), watch, Some(close), dials)
                }
            }
        }};
    }
    match proto {
        Proto::Http1 => wrap!(Http1Connector::<Body, _>::with_connector(dialer)),
        Proto::Http2 => wrap!(Http2Connector::<Body, _>::with_connector(dialer)),
    }
}

/// When each connect attempt dialled, as the TCP dialler under redial's
/// connector saw it: a count of attempts kept apart from the watch's, for
/// the watch to be checked against.
#[derive(Clone, Debug, Default)]
pub struct Dials(Arc<Mutex<Vec<Instant>>>);

impl Dials {
    pub fn log(&self) -> Vec<Instant> {
        self.0.lock().unwrap().clone()
    }
}

/// hyper-util's `HttpConnector` set up as redial's default, logging each
/// dial.
#[derive(Clone)]
struct Dialer {
    tcp: HttpConnector,
    dials: Dials,
}

impl Dialer {
    fn new(dials: &Dials) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        Self {
            tcp,
            dials: dials.clone(),
        }
    }
}

impl Service<Uri> for Dialer {
    type Response = <HttpConnector as Service<Uri>>::Response;
    type Error = <HttpConnector as Service<Uri>>::Error;
    type Future = <HttpConnector as Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.dials.0.lock().unwrap().push(Instant::now());
        self.tcp.call(uri)
    }
}

// ===== callers and what became of their requests =====

/// What became of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered `hello <path>`.
    Ok,
    /// `Unavailable`: failed fast, never sent.
    FailedFast,
    /// hyper's error: on a connection that died under it, which may have
    /// delivered it.
    Lost,
    /// `Resend`: the connection handed it back, never written or
    /// idempotent and unanswered, and it could not be sent again (a plain
    /// `Reconnect` cannot; `Shared` sends it once more, and gives it back
    /// only if the next connection hands it back too).
    HandedBack,
    /// `Closed`.
    Closed,
    /// Neither a redial error nor hyper's: the case fails.
    Untyped,
    /// Not resolved by its deadline + `GRACE`: the case fails.
    Hung,
}

#[derive(Debug)]
pub struct Record {
    pub path: String,
    pub issued: Instant,
    pub resolved: Instant,
    pub outcome: Outcome,
    /// For `FailedFast`, the cause `Unavailable` carried.
    pub cause: Option<Cause>,
    /// The error, for a failing case's message.
    pub error: Option<String>,
}

/// Callers sending `/c<i>/<n>` one after the other, pausing `PACE` between
/// requests as an application would, until stopped.
pub struct Callers {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Record>>>,
    first_ok: watch::Receiver<Option<Instant>>,
}

pub const PACE: Duration = Duration::from_millis(20);

impl Callers {
    /// `n` callers over clones of `client`. A request is abandoned as hung
    /// a `GRACE` after the loosest bound the contract gives: in fail-fast
    /// mode the connect timeout (the most a request waits, for the first
    /// attempt); waiting for readiness, `RECOVERY_BOUND` after the heal.
    /// The tighter bounds of each fault's schedule are checked afterwards
    /// (`invariants::Schedule`).
    pub fn start(n: usize, client: &Client, mode: Mode, heal_at: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (first_ok, rx) = watch::channel(None);
        let first_ok = Arc::new(first_ok);
        let tasks = (0..n)
            .map(|i| {
                let (mut client, stop, first_ok) = (client.clone(), stop.clone(), first_ok.clone());
                tokio::spawn(async move {
                    let mut records = Vec::new();
                    for seq in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let path = format!("/c{i}/{seq}");
                        let issued = Instant::now();
                        let deadline = match mode {
                            Mode::FailFast => issued + CONNECT_TIMEOUT,
                            Mode::WaitForReady => issued.max(heal_at) + RECOVERY_BOUND,
                        };
                        let result = timeout_at(deadline + GRACE, get(&mut client, &path)).await;
                        let resolved = Instant::now();
                        let (outcome, cause, error) = match result {
                            Ok(result) => classify(&path, result),
                            Err(_) => (Outcome::Hung, None, None),
                        };
                        if outcome == Outcome::Ok {
                            first_ok.send_if_modified(|at| {
                                at.is_none() && at.replace(resolved).is_none()
                            });
                        }
                        records.push(Record {
                            path,
                            issued,
                            resolved,
                            outcome,
                            cause,
                            error,
                        });
                        sleep(PACE).await;
                    }
                    records
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            first_ok: rx,
        }
    }

    /// When the first request was answered, waiting for it until `by`.
    pub async fn first_ok(&mut self, by: Instant) -> Option<Instant> {
        timeout_at(by, self.first_ok.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|seen| *seen.ok()?)
    }

    /// Stops the callers; every request they made, once all are resolved.
    pub async fn stop(self) -> Vec<Record> {
        self.stop.store(true, Ordering::SeqCst);
        let mut records = Vec::new();
        for task in self.tasks {
            records.extend(task.await.unwrap());
        }
        records
    }
}

/// A GET: readiness, the call, the whole body.
async fn get(client: &mut Client, path: &str) -> Result<String, BoxError> {
    let req = Request::get(path).body(Body::default())?;
    let res = client.ready().await?.call(req).await?;
    let body = res.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn classify(
    path: &str,
    result: Result<String, BoxError>,
) -> (Outcome, Option<Cause>, Option<String>) {
    let err = match result {
        Ok(body) if body == format!("hello {path}") => return (Outcome::Ok, None, None),
        Ok(body) => {
            let wrong = format!("wrong answer {body:?}");
            return (Outcome::Untyped, None, Some(wrong));
        }
        Err(err) => err,
    };
    let mut cause = None;
    let outcome = if find::<Unavailable>(&*err).is_some() {
        // Its cause must be a typed one too.
        cause = Some(Cause::of(&*err));
        match cause {
            Some(Cause::Other) => Outcome::Untyped,
            _ => Outcome::FailedFast,
        }
    } else if find::<Closed>(&*err).is_some() {
        Outcome::Closed
    } else if find::<Resend<Request<Body>>>(&*err).is_some() {
        // Before hyper's error, which is its source.
        Outcome::HandedBack
    } else if find::<hyper::Error>(&*err).is_some() {
        Outcome::Lost
    } else {
        Outcome::Untyped
    };
    (outcome, cause, Some(format!("{err:?}")))
}

/// Why attempts failed, from the typed errors in a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// `ConnectTimeout`.
    Timeout,
    /// `ConnectFailed` over an `io::Error` of kind `ConnectionRefused`.
    Refused,
    /// `ConnectFailed` over `ConnectionClosed`: the peer closed during the
    /// handshake.
    ClosedEarly,
    /// `ConnectionLost`: a connection that did not live to prove itself.
    Lost,
    Other,
}

impl Cause {
    pub fn of(err: &(dyn Error + 'static)) -> Self {
        if find::<ConnectTimeout>(err).is_some() {
            Self::Timeout
        } else if find::<ConnectionLost>(err).is_some() {
            Self::Lost
        } else if find::<ConnectionClosed>(err).is_some() {
            Self::ClosedEarly
        } else if find::<io::Error>(err)
            .is_some_and(|io| io.kind() == io::ErrorKind::ConnectionRefused)
        {
            Self::Refused
        } else {
            Self::Other
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Timeout => "`ConnectTimeout`",
            Self::Refused => "`ConnectFailed` ← refused",
            Self::ClosedEarly => "`ConnectFailed` ← `ConnectionClosed`",
            Self::Lost => "`ConnectionLost`",
            Self::Other => "?",
        }
    }
}

/// The schedule bounds above hold for the delays the configured `Backoff`
/// really draws, and come to what the matrix's table shows for 1 s.
#[test]
fn schedule_bounds_match_the_configured_backoff() {
    let nominal: Vec<f64> = nominal_delays().take(12).collect();
    for _ in 0..1000 {
        for (delay, nominal) in backoff().iter().zip(&nominal) {
            let delay = delay.as_secs_f64();
            let low = nominal * (1.0 - Backoff::DEFAULT_JITTER);
            let high = (nominal * (1.0 + Backoff::DEFAULT_JITTER)).min(MAX_DELAY.as_secs_f64());
            assert!(
                (low - 1e-9..=high + 1e-9).contains(&delay),
                "{delay} vs {nominal}"
            );
        }
    }
    assert_eq!(earliest_start(1), INITIAL.mul_f64(0.8));
    assert_eq!(max_attempts(Duration::from_secs(1)), 5);
    assert_eq!(min_attempts(Duration::from_secs(1), Duration::ZERO), 3);
    assert_eq!(min_attempts(Duration::from_secs(1), CONNECT_TIMEOUT), 3);
    // 100 ms + 20 %, or the 200 ms attempt when longer, plus SLACK; the
    // cap, late on.
    assert_eq!(longest_gap(1, Duration::ZERO), Duration::from_millis(220));
    assert_eq!(longest_gap(1, CONNECT_TIMEOUT), Duration::from_millis(300));
    assert_eq!(longest_gap(9, Duration::ZERO), MAX_DELAY + SLACK);
}
