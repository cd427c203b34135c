//! A scripted `MakeService` and a controllable connection, for tests that
//! count dials, time attempts on a paused clock and break connections; and,
//! in its submodules, what several test binaries share besides.
#![allow(dead_code, unreachable_pub)]

pub mod alloc;
#[cfg(feature = "tls")]
#[path = "../../examples/common/tls.rs"]
mod ca;
pub mod echo;
pub mod errors;
pub mod logs;
pub mod net;
#[cfg(feature = "http")]
pub mod police;
#[cfg(feature = "http")]
pub mod relay;
pub mod server;
#[cfg(feature = "tls")]
pub mod tls;

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use tokio::time::Instant;
use tower::Service;

/// Installs a test subscriber once, so `RUST_LOG=redial=debug` shows the
/// state machine's events.
pub fn trace_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// What one dial does.
#[derive(Debug, Clone)]
pub enum Dial {
    /// Connects at once.
    Connect,
    /// Fails at once with this message.
    Fail(&'static str),
    /// Never resolves.
    Hang,
    /// Connects after this long.
    ConnectAfter(Duration),
    /// Fails after this long.
    FailAfter(Duration, &'static str),
    /// Panics inside the make future.
    Panic,
}

#[derive(Debug)]
pub struct DialError(pub &'static str);

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DialError {}

#[derive(Default)]
struct Script {
    queue: VecDeque<Dial>,
    otherwise: Option<Dial>,
    dials: Vec<Instant>,
    conns: Vec<Conn>,
    /// The make service's own readiness: `Some(err)` fails poll_ready once.
    ready_error: Option<&'static str>,
}

/// A `MakeService<&'static str, u32>` whose dials follow a script.
#[derive(Clone, Default)]
pub struct Make {
    script: Arc<Mutex<Script>>,
}

impl Make {
    /// A make service whose every dial connects at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// The dials to make next, in order; after them, `otherwise`.
    pub fn push(&self, dials: impl IntoIterator<Item = Dial>) -> &Self {
        self.script.lock().unwrap().queue.extend(dials);
        self
    }

    /// What every dial does once the queue is empty (default: connect).
    pub fn otherwise(&self, dial: Dial) -> &Self {
        self.script.lock().unwrap().otherwise = Some(dial);
        self
    }

    /// Makes the next `poll_ready` of the make service fail.
    pub fn fail_ready_once(&self, msg: &'static str) {
        self.script.lock().unwrap().ready_error = Some(msg);
    }

    /// How many times the make service was called.
    pub fn dials(&self) -> usize {
        self.script.lock().unwrap().dials.len()
    }

    /// When each dial started.
    pub fn dial_times(&self) -> Vec<Instant> {
        self.script.lock().unwrap().dials.clone()
    }

    /// The gaps between consecutive dials.
    pub fn gaps(&self) -> Vec<Duration> {
        let t = self.dial_times();
        t.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// The connections handed out, oldest first.
    pub fn conns(&self) -> Vec<Conn> {
        self.script.lock().unwrap().conns.clone()
    }

    /// The newest connection.
    pub fn conn(&self) -> Conn {
        self.conns().pop().expect("no connection made yet")
    }
}

impl Service<&'static str> for Make {
    type Response = Conn;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, DialError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        match self.script.lock().unwrap().ready_error.take() {
            Some(msg) => Poll::Ready(Err(DialError(msg))),
            None => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, _target: &'static str) -> Self::Future {
        let mut script = self.script.lock().unwrap();
        script.dials.push(Instant::now());
        let dial = script
            .queue
            .pop_front()
            .or_else(|| script.otherwise.clone())
            .unwrap_or(Dial::Connect);
        let conn = Conn {
            state: Arc::new(ConnState {
                number: script.conns.len(),
                ..ConnState::default()
            }),
        };
        if matches!(dial, Dial::Connect | Dial::ConnectAfter(_)) {
            script.conns.push(conn.clone());
        }
        Box::pin(async move {
            match dial {
                Dial::Connect => Ok(conn),
                Dial::Fail(msg) => Err(DialError(msg)),
                Dial::Hang => std::future::pending().await,
                Dial::ConnectAfter(d) => {
                    tokio::time::sleep(d).await;
                    Ok(conn)
                }
                Dial::FailAfter(d, msg) => {
                    tokio::time::sleep(d).await;
                    Err(DialError(msg))
                }
                Dial::Panic => panic!("the make service panicked"),
            }
        })
    }
}

#[derive(Default)]
struct ConnState {
    broken: AtomicBool,
    busy: AtomicBool,
    /// The next `poll_ready` panics.
    panic_in_poll_ready: AtomicBool,
    /// The next `call` panics.
    panic_in_call: AtomicBool,
    /// Responses wait for `release` while set.
    held: AtomicBool,
    released: tokio::sync::Notify,
    calls: AtomicUsize,
    polls: AtomicUsize,
    waker: Mutex<Option<Waker>>,
    /// Its place among the connections the make service handed out, which
    /// its errors carry.
    number: usize,
}

/// A connection: answers `n` with `n + 1` (or an error for 0), and can be
/// broken (its `poll_ready` then fails) or made busy (`Pending`).
#[derive(Clone, Default)]
pub struct Conn {
    state: Arc<ConnState>,
}

/// A connection's error: what went wrong, and the number of the connection
/// it came from (its place among those the make service handed out).
#[derive(Debug)]
pub struct ConnError(pub &'static str, pub usize);

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ConnError {}

impl Conn {
    /// Breaks the connection: the next `poll_ready` fails, and a task
    /// parked on it is woken.
    pub fn kill(&self) {
        self.state.broken.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Makes `poll_ready` pend (`true`) or be ready again (`false`).
    pub fn set_busy(&self, busy: bool) {
        self.state.busy.store(busy, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        if let Some(w) = self.state.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    /// Makes the next `poll_ready` panic (`true`) or the next `call`.
    pub fn panic_next(&self, in_poll_ready: bool) {
        let flag = if in_poll_ready {
            &self.state.panic_in_poll_ready
        } else {
            &self.state.panic_in_call
        };
        flag.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Makes the responses to requests from now on wait until `release`.
    pub fn hold(&self) {
        self.state.held.store(true, Ordering::SeqCst);
    }

    /// Lets every held response resolve, and later ones resolve at once.
    pub fn release(&self) {
        self.state.held.store(false, Ordering::SeqCst);
        self.state.released.notify_waiters();
    }

    /// How many requests reached this connection.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// How many times its `poll_ready` ran.
    pub fn polls(&self) -> usize {
        self.state.polls.load(Ordering::SeqCst)
    }

    /// Whether anyone but the script and this handle holds the connection
    /// (call it on a handle from `Make::conn`).
    pub fn is_held(&self) -> bool {
        Arc::strong_count(&self.state) > 2
    }
}

impl Service<u32> for Conn {
    type Response = u32;
    type Error = ConnError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, ConnError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        self.state.polls.fetch_add(1, Ordering::SeqCst);
        *self.state.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.state.panic_in_poll_ready.swap(false, Ordering::SeqCst) {
            panic!("the connection's poll_ready panicked (on purpose)");
        }
        if self.state.broken.load(Ordering::SeqCst) {
            return Poll::Ready(Err(ConnError(
                "connection reset by peer",
                self.state.number,
            )));
        }
        if self.state.busy.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, n: u32) -> Self::Future {
        if self.state.panic_in_call.swap(false, Ordering::SeqCst) {
            panic!("the connection's call panicked (on purpose)");
        }
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let held = self
            .state
            .held
            .load(Ordering::SeqCst)
            .then(|| self.state.clone());
        let number = self.state.number;
        Box::pin(async move {
            if let Some(state) = held {
                loop {
                    // Made before the check, so a release in between wakes it.
                    let released = state.released.notified();
                    if !state.held.load(Ordering::SeqCst) {
                        break;
                    }
                    released.await;
                }
            }
            match n {
                0 => Err(ConnError("broken pipe", number)),
                n => Ok(n + 1),
            }
        })
    }
}

/// Polls `svc.poll_ready` once with a mock waker, as tower's own tests do.
pub fn poll_ready<S: Service<R>, R>(svc: &mut S) -> Poll<Result<(), S::Error>> {
    tokio_test::task::spawn(()).enter(|cx, _| svc.poll_ready(cx))
}

/// Advances the paused clock by `ms` milliseconds.
pub async fn advance_ms(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
}
