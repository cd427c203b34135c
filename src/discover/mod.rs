//! Where endpoints come from: sources of [`tower::discover::Change`]s, for
//! a pool of connections per endpoint or for `tower::balance`.
//!
//! Each source is a stream of `Change::Insert(endpoint, endpoint)` and
//! `Change::Remove(endpoint)`, the endpoint being its own key, so it is a
//! [`tower::discover::Discover`] of endpoints: what to connect to, not yet
//! a service. A source never fails: a resolver error keeps the endpoints
//! as they were (and is logged), since dropping every endpoint because a
//! lookup failed would turn a DNS hiccup into an outage.
//!
//! - [`list`]: a fixed set, inserted once.
//! - [`channel`]: the whole set, sent again whenever it changes, as a
//!   registry (Consul, Kubernetes endpoints) reports it; the source sends
//!   only the differences.
//! - `dns` (feature `dns`): a host name resolved at start, every
//!   interval, and at once on demand (its `Refresh`).
//!
//! [`PoolLayer::discover`](crate::PoolLayer::discover) turns any of them
//! into [`Pools`]: a pool of connections per endpoint, for
//! `tower::balance`, with one watch over all of them.
//!
//! # Examples
//!
//! A registry's updates, as whole sets:
//!
//! ```
//! use futures_util::StreamExt;
//! use tower::discover::Change;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (endpoints, mut changes) = redial::discover::channel(["10.0.0.1:80", "10.0.0.2:80"]);
//! let show = |change: Change<&str, &str>| match change {
//!     Change::Insert(key, _) => format!("+{key}"),
//!     Change::Remove(key) => format!("-{key}"),
//! };
//! assert_eq!(show(changes.next().await.unwrap().unwrap()), "+10.0.0.1:80");
//! assert_eq!(show(changes.next().await.unwrap().unwrap()), "+10.0.0.2:80");
//!
//! // The registry now says: .2 and .3. Only the difference comes out.
//! endpoints.send_replace(vec!["10.0.0.2:80", "10.0.0.3:80"]);
//! assert_eq!(show(changes.next().await.unwrap().unwrap()), "-10.0.0.1:80");
//! assert_eq!(show(changes.next().await.unwrap().unwrap()), "+10.0.0.3:80");
//! # }
//! ```

#[cfg(feature = "dns")]
mod dns;
mod pools;

use std::{
    collections::{HashSet, VecDeque},
    convert::Infallible,
    fmt,
    hash::Hash,
    pin::Pin,
    task::{ready, Context, Poll},
};

use futures_util::Stream;
use tokio::sync::watch;
use tokio_util::sync::ReusableBoxFuture;
use tower::discover::Change;

#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub use self::dns::{dns, Dns, Refresh};
pub use self::pools::{Endpoints, Pools};

/// Turns successive whole sets of endpoints into the changes between
/// them: each endpoint inserted once when it first appears, removed once
/// when it is gone; in the order the sets list them.
pub(crate) struct Diff<T> {
    current: Vec<T>,
    pending: VecDeque<Change<T, T>>,
}

impl<T: Clone + Eq + Hash> Diff<T> {
    pub(crate) fn new() -> Self {
        Self {
            current: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    /// Queues the changes from the current set to `next`: removals first,
    /// so that a consumer never holds a gone endpoint beside its successor
    /// longer than it must.
    pub(crate) fn update(&mut self, next: impl IntoIterator<Item = T>) {
        let mut seen = HashSet::new();
        let next: Vec<T> = next
            .into_iter()
            .filter(|endpoint| seen.insert(endpoint.clone()))
            .collect();
        let before: HashSet<&T> = self.current.iter().collect();
        for gone in self.current.iter().filter(|e| !seen.contains(*e)) {
            self.pending.push_back(Change::Remove(gone.clone()));
        }
        for new in next.iter().filter(|e| !before.contains(e)) {
            self.pending
                .push_back(Change::Insert(new.clone(), new.clone()));
        }
        self.current = next;
    }

    pub(crate) fn next(&mut self) -> Option<Change<T, T>> {
        self.pending.pop_front()
    }
}

impl<T> Diff<T> {
    /// The endpoints as of the last set.
    pub(crate) fn current(&self) -> &[T] {
        &self.current
    }
}

// Endpoints are never pinned: they are cloned out, never polled.
impl<T> Unpin for Diff<T> {}

/// A fixed set of endpoints: each inserted once, then the stream ends.
///
/// ```
/// let endpoints = redial::discover::list(["10.0.0.1:80", "10.0.0.2:80"]);
/// # let _ = endpoints;
/// ```
pub fn list<T>(endpoints: impl IntoIterator<Item = T>) -> List<T>
where
    T: Clone + Eq + Hash,
{
    let mut diff = Diff::new();
    diff.update(endpoints);
    List { diff }
}

/// The source [`list`] returns.
pub struct List<T> {
    diff: Diff<T>,
}

impl<T: Clone + Eq + Hash> Stream for List<T> {
    type Item = Result<Change<T, T>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.get_mut().diff.next().map(Ok))
    }
}

impl<T: fmt::Debug> fmt::Debug for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("List")
            .field("endpoints", &self.diff.current())
            .finish()
    }
}

/// A source fed whole sets of endpoints through a [`watch::Sender`]: each
/// `send_replace(set)` (or `send`) is the set as it stands now, and the
/// source yields the differences from the last set it read. Sets sent
/// faster than they are read coalesce: only the latest counts, as only the
/// latest is true. The stream ends when the sender is dropped.
///
/// Starts with `initial`. See the [module docs](self) for an example.
pub fn channel<T>(initial: impl IntoIterator<Item = T>) -> (watch::Sender<Vec<T>>, Channel<T>)
where
    T: Clone + Eq + Hash + Send + Sync + 'static,
{
    let (tx, rx) = watch::channel(initial.into_iter().collect::<Vec<T>>());
    let mut diff = Diff::new();
    diff.update(rx.borrow().iter().cloned());
    (
        tx,
        Channel {
            next: ReusableBoxFuture::new(changed(rx)),
            diff,
        },
    )
}

/// The next set, and the receiver to wait on after it.
async fn changed<T>(mut rx: watch::Receiver<Vec<T>>) -> (Option<Vec<T>>, watch::Receiver<Vec<T>>)
where
    T: Clone,
{
    let next = match rx.changed().await {
        Ok(()) => Some(rx.borrow_and_update().clone()),
        Err(_) => None,
    };
    (next, rx)
}

type NextSet<T> = (Option<Vec<T>>, watch::Receiver<Vec<T>>);

/// The source [`channel`] returns.
pub struct Channel<T> {
    next: ReusableBoxFuture<'static, NextSet<T>>,
    diff: Diff<T>,
}

impl<T> Stream for Channel<T>
where
    T: Clone + Eq + Hash + Send + Sync + 'static,
{
    type Item = Result<Change<T, T>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.diff.next() {
                return Poll::Ready(Some(Ok(change)));
            }
            let (set, rx) = ready!(this.next.poll(cx));
            let Some(set) = set else {
                return Poll::Ready(None);
            };
            this.diff.update(set);
            this.next.set(changed(rx));
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("endpoints", &self.diff.current())
            .finish()
    }
}
