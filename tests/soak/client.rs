//! The clients under test: `Buffer<Reconnect>` or the shared handle, failing
//! fast or waiting for readiness, over HTTP/1 or HTTP/2, each dialling
//! through a [`Dialer`] that logs every connect attempt.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
use redial::{
    http::{Http1Connector, Http2Connector},
    Backoff, ConnectionWatch, Phase, Reconnect, ReconnectLayer,
};
use tokio::{net::TcpStream, time::Instant};
use tower::{buffer::Buffer, util::BoxCloneSyncService, BoxError, Layer, Service};

use crate::server::Proto;

pub type Body = Full<Bytes>;
/// Any client under test, as its callers see it.
pub type Client = BoxCloneSyncService<Request<Body>, Response<Incoming>, BoxError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `tower::buffer::Buffer` over a plain `Reconnect`.
    Buffer,
    /// `Reconnect::spawn`.
    Shared,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    FailFast,
    WaitForReady,
}

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(1);
const MULTIPLIER: f64 = 1.6;
const JITTER: f64 = 0.2;
/// How late a dial may be logged after its attempt started: the same poll,
/// microseconds, unless the thread is preempted in between.
pub const LOG_SLACK: Duration = Duration::from_millis(50);

/// gRPC's schedule, scaled down: 100 ms ×1.6 up to 1 s, ±20 %.
pub fn backoff() -> Backoff {
    Backoff::exponential(FIRST_DELAY, MAX_DELAY)
        .multiplier(MULTIPLIER)
        .jitter(JITTER)
}

/// The shortest wait the schedule allows between the start of failed
/// attempt `n` (1-based, in one outage) and the next.
pub fn min_delay_after(n: u32) -> Duration {
    let nominal = FIRST_DELAY.as_secs_f64() * MULTIPLIER.powi(n as i32 - 1);
    Duration::from_secs_f64(nominal.min(MAX_DELAY.as_secs_f64()) * (1.0 - JITTER))
}

/// A client under test, with its watch and its log of dials.
pub struct Under {
    pub svc: Client,
    pub watch: ConnectionWatch,
    pub dials: Arc<Dials>,
    close: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Under {
    /// The client of `kind` and `mode` for the server at `uri`, with the
    /// schedule of [`backoff`] and a [`CONNECT_TIMEOUT`].
    pub fn build(kind: Kind, mode: Mode, proto: Proto, uri: Uri) -> Self {
        let dials = Arc::new(Dials::default());
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        let dialer = Dialer {
            tcp,
            dials: dials.clone(),
        };
        let layer = ReconnectLayer::new(uri)
            .connect_timeout(CONNECT_TIMEOUT)
            .backoff(backoff())
            .wait_for_ready(mode == Mode::WaitForReady);
        match proto {
            Proto::Http1 => Self::finish(
                kind,
                layer.layer(Http1Connector::with_connector(dialer)),
                dials,
            ),
            Proto::Http2 => Self::finish(
                kind,
                layer.layer(Http2Connector::with_connector(dialer)),
                dials,
            ),
        }
    }

    fn finish<M>(kind: Kind, svc: Reconnect<M, Uri>, dials: Arc<Dials>) -> Self
    where
        M: Service<Uri>,
        Reconnect<M, Uri>: Service<Request<Body>, Response = Response<Incoming>, Error = BoxError>
            + Send
            + 'static,
        <Reconnect<M, Uri> as Service<Request<Body>>>::Future: Send + 'static,
    {
        let watch = svc.watch();
        dials.watch.set(watch.clone()).unwrap();
        let (svc, close): (Client, Option<Box<dyn FnOnce() + Send + Sync>>) = match kind {
            Kind::Buffer => (BoxCloneSyncService::new(Buffer::new(svc, 1024)), None),
            Kind::Shared => {
                let shared = svc.spawn(1024);
                let handle = shared.clone();
                (
                    BoxCloneSyncService::new(shared),
                    Some(Box::new(move || handle.close())),
                )
            }
        };
        Self {
            svc,
            watch,
            dials,
            close,
        }
    }

    /// Closes the shared handle, or drops the buffer's last handle (every
    /// caller's clone must be gone), and waits until the watch shows
    /// `Closed`.
    pub async fn close(self) -> ConnectionWatch {
        let Self {
            svc, watch, close, ..
        } = self;
        if let Some(close) = close {
            close();
        }
        drop(svc);
        let closed = watch
            .subscribe()
            .wait_for(|s| s.phase() == Phase::Closed)
            .await
            .is_ok();
        assert!(closed || watch.phase() == Phase::Closed, "{watch:?}");
        watch
    }
}

impl fmt::Debug for Under {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Under").field("watch", &self.watch).finish()
    }
}

// ===== dials =====

/// One connect attempt, as the connector saw it.
#[derive(Clone, Copy, Debug)]
pub struct Dial {
    pub at: Instant,
    /// The attempt number the watch showed: 1 after a healthy connection
    /// (or at first), rising while the outage lasts.
    pub attempt: u32,
    /// The watch showed `Connected` at the dial: a bug.
    pub while_connected: bool,
}

#[derive(Debug, Default)]
pub struct Dials {
    watch: OnceLock<ConnectionWatch>,
    log: Mutex<Vec<Dial>>,
}

impl Dials {
    fn record(&self) {
        let state = self.watch.get().map(ConnectionWatch::state);
        let dial = Dial {
            at: Instant::now(),
            attempt: state.as_ref().map_or(0, |s| s.attempt()),
            while_connected: state.is_some_and(|s| s.is_connected()),
        };
        self.log.lock().unwrap().push(dial);
    }

    pub fn count(&self) -> u64 {
        self.log.lock().unwrap().len() as u64
    }

    /// Dials at or after `since`.
    pub fn since(&self, since: Instant) -> u64 {
        let log = self.log.lock().unwrap();
        log.iter().filter(|d| d.at >= since).count() as u64
    }

    /// Dials in `from..until`.
    pub fn between(&self, from: Instant, until: Instant) -> u64 {
        let log = self.log.lock().unwrap();
        log.iter().filter(|d| (from..until).contains(&d.at)).count() as u64
    }

    /// Checks every dial against the schedule: none while connected; the
    /// attempts of an outage numbered 1, 2, 3, … and each no sooner after
    /// the one before than the schedule's shortest delay (jitter
    /// included); a first attempt only at the start or after a healthy
    /// connection, so at most `connects + 1` of them.
    pub fn check_schedule(&self, connects: u64) -> Result<(), String> {
        let log = self.log.lock().unwrap();
        let mut firsts = 0;
        for (i, dial) in log.iter().enumerate() {
            if dial.while_connected {
                return Err(format!("dial {i} while connected: {dial:?}"));
            }
            if dial.attempt == 1 {
                firsts += 1;
                continue;
            }
            let Some(prev) = i.checked_sub(1).map(|p| log[p]) else {
                return Err(format!("first dial is attempt {}", dial.attempt));
            };
            if dial.attempt != prev.attempt + 1 {
                return Err(format!(
                    "dial {i}: attempt {} after {}",
                    dial.attempt, prev.attempt
                ));
            }
            let gap = dial.at - prev.at;
            let min = min_delay_after(prev.attempt).saturating_sub(LOG_SLACK);
            if gap < min {
                return Err(format!(
                    "dial {i} (attempt {}) {gap:?} after the one before; the schedule allows {min:?}",
                    dial.attempt
                ));
            }
        }
        if firsts > connects + 1 {
            return Err(format!(
                "{firsts} first attempts for {connects} connections"
            ));
        }
        Ok(())
    }
}

/// hyper-util's `HttpConnector`, logging each dial with the watch's view.
#[derive(Clone)]
struct Dialer {
    tcp: HttpConnector,
    dials: Arc<Dials>,
}

type Dialling = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

impl Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Dialling;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Dialling {
        self.dials.record();
        let dialling = self.tcp.call(uri);
        Box::pin(async move { dialling.await.map_err(Into::into) })
    }
}
