//! [`dns`]: endpoints from a host name, resolved again and again.

use std::{
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{task::AtomicWaker, Stream};
use tokio::time::{sleep_until, Instant, Sleep};
use tower::discover::Change;

use super::Diff;

/// The soonest a [`Refresh`] makes the next lookup after the last one
/// started: a pool that finds no endpoint up asks on every failure, and
/// that must not become a lookup per failure.
const MIN_REFRESH: Duration = Duration::from_secs(1);

type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;
type Resolver = Box<dyn FnMut(&str, u16) -> Lookup + Send>;

/// Endpoints from DNS: `host` resolved (with `port`) at the first poll,
/// then `every` after each lookup started, and at once when asked through
/// [`Dns::refresher`] (no sooner than a second after the last lookup
/// started). An `every` of zero is taken as one second, so that the
/// source never looks up in a loop. Each answer is a whole set: an address that appears is
/// inserted, one that vanished is removed.
///
/// A lookup that fails, or that answers no address, changes nothing: the
/// endpoints stay as they were, a warning is logged, and the next lookup
/// comes on schedule (or a second after, while no address is known yet). A
/// lookup still running when the next is due is abandoned as failed. Dropping every
/// endpoint because the resolver had a
/// bad moment would turn it into an outage.
///
/// Lookups use tokio's resolver ([`tokio::net::lookup_host`], the system's
/// `getaddrinfo` on a blocking thread); [`with_resolver`](Dns::with_resolver)
/// swaps in another (a DNS client crate, a service registry's API, a test
/// script).
///
/// ```no_run
/// use std::time::Duration;
///
/// let endpoints = redial::discover::dns("api.internal", 443, Duration::from_secs(30));
/// # let _ = endpoints;
/// ```
pub fn dns(host: impl Into<String>, port: u16, every: Duration) -> Dns {
    let every = if every.is_zero() { MIN_REFRESH } else { every };
    Dns {
        host: host.into(),
        port,
        every,
        resolver: Box::new(|host: &str, port: u16| {
            let host = host.to_owned();
            Box::pin(async move {
                tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map(Iterator::collect)
            })
        }),
        lookup: None,
        started: None,
        sleep: None,
        refresh: Arc::new(Wanted::default()),
        diff: Diff::new(),
    }
}

/// The source [`dns`] returns.
pub struct Dns {
    host: String,
    port: u16,
    every: Duration,
    resolver: Resolver,
    /// The lookup under way.
    lookup: Option<Lookup>,
    /// When the last lookup started.
    started: Option<Instant>,
    /// When the next lookup is due; `None` before the first.
    sleep: Option<Pin<Box<Sleep>>>,
    refresh: Arc<Wanted>,
    diff: Diff<SocketAddr>,
}

/// A refresh asked for, and the task to wake for it.
#[derive(Default)]
struct Wanted {
    asked: AtomicBool,
    waker: AtomicWaker,
}

/// Asks a [`Dns`] source to look the name up again now: what a pool does
/// when none of its endpoints is up, since the answer may have moved.
/// Cheap to clone.
#[derive(Clone)]
pub struct Refresh(Arc<Wanted>);

impl Refresh {
    /// Asks for a lookup now, or a second after the last one started if
    /// that is later. Asking again before it runs asks for one lookup.
    pub fn refresh(&self) {
        self.0.asked.store(true, Ordering::Release);
        self.0.waker.wake();
    }
}

impl fmt::Debug for Refresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresh")
            .field("asked", &self.0.asked.load(Ordering::Relaxed))
            .finish()
    }
}

impl Dns {
    /// Looks names up with `resolve` instead of tokio's resolver: it is
    /// called with the host and port for each lookup, and its future gives
    /// every address the name has now.
    pub fn with_resolver<F, Fut>(mut self, mut resolve: F) -> Self
    where
        F: FnMut(&str, u16) -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static,
    {
        self.resolver = Box::new(move |host: &str, port: u16| Box::pin(resolve(host, port)));
        self
    }

    /// A handle that asks for a lookup now.
    pub fn refresher(&self) -> Refresh {
        Refresh(self.refresh.clone())
    }

    /// The addresses of the last lookup that answered.
    pub fn addresses(&self) -> &[SocketAddr] {
        self.diff.current()
    }

    /// Starts a lookup, bounded by the time the next one is due.
    fn start_lookup(&mut self, now: Instant) {
        self.started = Some(now);
        self.refresh.asked.store(false, Ordering::Release);
        tracing::debug!(host = %self.host, port = self.port, "resolving");
        self.lookup = Some((self.resolver)(&self.host, self.port));
        let bound = now + self.every;
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(bound),
            None => self.sleep = Some(Box::pin(sleep_until(bound))),
        }
    }

    /// When the next lookup is due: `every` after the last one started, or
    /// sooner when a refresh was asked for or no endpoint is known yet (the
    /// first lookups failed).
    fn due(&self) -> Instant {
        let Some(started) = self.started else {
            return Instant::now();
        };
        if self.refresh.asked.load(Ordering::Acquire) || self.diff.current().is_empty() {
            started + MIN_REFRESH.min(self.every)
        } else {
            started + self.every
        }
    }

    fn answered(&mut self, answer: io::Result<Vec<SocketAddr>>) {
        match answer {
            Ok(addrs) if !addrs.is_empty() => self.diff.update(addrs),
            Ok(_) => tracing::warn!(
                host = %self.host,
                "dns lookup answered no address; keeping the endpoints as they were"
            ),
            Err(err) => tracing::warn!(
                host = %self.host,
                %err,
                "dns lookup failed; keeping the endpoints as they were"
            ),
        }
    }
}

impl Stream for Dns {
    type Item = Result<Change<SocketAddr, SocketAddr>, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.diff.next() {
                return Poll::Ready(Some(Ok(change)));
            }
            if let Some(lookup) = &mut this.lookup {
                let answer = match lookup.as_mut().poll(cx) {
                    Poll::Ready(answer) => answer,
                    // A lookup that hangs ends at the next one's time.
                    Poll::Pending => match this.sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
                        Some(Poll::Ready(())) => {
                            Err(io::Error::new(io::ErrorKind::TimedOut, "lookup timed out"))
                        }
                        _ => return Poll::Pending,
                    },
                };
                this.lookup = None;
                this.answered(answer);
                continue;
            }
            // Registered before reading the flag, so a refresh asked in
            // between wakes this task.
            this.refresh.waker.register(cx.waker());
            let due = this.due();
            let now = Instant::now();
            if now >= due {
                this.start_lookup(now);
                continue;
            }
            let sleep = match &mut this.sleep {
                Some(sleep) => {
                    if sleep.deadline() != due {
                        sleep.as_mut().reset(due);
                    }
                    sleep
                }
                None => this.sleep.insert(Box::pin(sleep_until(due))),
            };
            if sleep.as_mut().poll(cx).is_ready() {
                this.start_lookup(Instant::now());
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("every", &self.every)
            .field("addresses", &self.diff.current())
            .finish_non_exhaustive()
    }
}
