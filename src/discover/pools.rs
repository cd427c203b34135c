//! [`Pools`]: a [`Pool`] per endpoint a source names, and one watch over
//! all of them.

use std::{
    fmt,
    marker::PhantomData,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{ready, Context, Poll},
};

use futures_util::Stream;
use tower::{
    discover::{Change, Discover},
    BoxError, Service,
};

use crate::{watch::Aggregate, ConnectionWatch, Pool, PoolLayer, Reconnect, ReconnectLayer};

/// The endpoints a [`Pools`] holds now, each with its pool's watch.
type Listing<K> = Arc<Mutex<Vec<(K, ConnectionWatch)>>>;

/// A [`Pool`] per endpoint of a source, as a
/// [`tower::discover::Discover`] that `tower::balance::p2c::Balance` takes:
/// each endpoint the source inserts gets a pool of connections with the
/// layer's settings, each one it removes is dropped (the balancer drops
/// its pool; what that pool has queued or in flight is still sent and
/// answered, then its connections close), and one [`ConnectionWatch`]
/// shows all the endpoints as one.
///
/// Made with [`PoolLayer::discover`]. Each pool is a [`tower::load::Load`]
/// (its requests in flight), which is what `Balance` weighs.
///
/// # Readiness
///
/// A pool with no connection up is `Pending`, whatever the layer's
/// `wait_for_ready` says, so the balancer skips it and sends its requests
/// to the endpoints that are up, and takes it back when it reconnects. How
/// long the balancer waits while no endpoint is up is for a layer around it
/// to bound (`tower::timeout`): a pool does not turn ready when a
/// `wait_timeout` runs out, since a dead endpoint would then draw requests
/// away from the live ones.
///
/// Once a request is in a connection's queue it stays with that
/// connection, which fails fast: if the connection is lost before the
/// request is written (or hands it back to be sent again), the request
/// fails at once with [`Unavailable`](crate::error::Unavailable) rather
/// than wait for an endpoint that may be gone for good. Such a request
/// never reached the server, so sending it again through the balancer is
/// safe; it then goes to an endpoint that is up.
///
/// `max_attempts` is not used: an endpoint leaves when the source removes
/// it, never by giving up (the balancer would drop it for good while the
/// source still names it).
///
/// # The watch
///
/// [`watch`](Self::watch) follows the same rule as a pool's, one level up:
/// `Connected` if any endpoint is, else `Connecting` if any is, else
/// `Idle`, else `Disconnected` with the newest cause and the earliest
/// retry; the counters are summed, including those of endpoints since
/// removed. With no endpoint (none found yet, or the source removed them
/// all) it is `Connecting`: looking for one. It is `Closed` once this
/// source is dropped (with the balancer) and every pool has closed, or once
/// the source has ended with no endpoint. [`endpoints`](Self::endpoints)
/// lists each endpoint's own watch.
///
/// [`when_none_up`](Self::when_none_up) calls a hook whenever no endpoint
/// is up and one has just failed: with `discover::dns` (feature `dns`), a refresh, so
/// that a name whose addresses all moved is looked up again at once.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use std::convert::Infallible;
/// use redial::{discover, Phase, ReconnectLayer};
/// use tower::{balance::p2c::Balance, service_fn, Service, ServiceExt};
///
/// // Connects to an endpoint (a port here); each connection echoes.
/// let connector = service_fn(|port: u16| async move {
///     Ok::<_, Infallible>(service_fn(move |n: u32| async move {
///         Ok::<_, Infallible>(format!("{n} from {port}"))
///     }))
/// });
/// let (registry, endpoints) = discover::channel([8001_u16, 8002]);
/// let pools = ReconnectLayer::new(()).pool(2).discover(endpoints, connector);
/// let watch = pools.watch(); // one watch over every endpoint
/// let listing = pools.endpoints(); // and each one's own
///
/// assert_eq!(watch.phase(), Phase::Connecting); // none found yet
///
/// let mut balanced = Balance::new(pools);
/// let reply = balanced.ready().await?.call(7).await?;
/// assert!(reply.starts_with("7 from 800"), "{reply}");
/// assert!(watch.is_connected());
/// assert_eq!(listing.keys(), [8001, 8002]);
///
/// registry.send_replace(vec![8002, 8003]); // the registry's new set
/// balanced.ready().await?; // the balancer reads the changes as it gets ready
/// assert_eq!(listing.keys(), [8002, 8003]);
///
/// drop(balanced); // closes every endpoint's pool
/// watch.subscribe().wait_for(|state| state.is_closed()).await?;
/// # Ok(())
/// # }
/// ```
pub struct Pools<D: Discover, M, Req> {
    source: D,
    layer: ReconnectLayer<()>,
    size: usize,
    bound: usize,
    make: M,
    /// The watch over every endpoint.
    aggregate: Arc<Aggregate>,
    /// Each endpoint's pool watch writer, to take it out of the watch when
    /// the endpoint goes.
    members: Vec<(D::Key, Arc<Aggregate>)>,
    listing: Listing<D::Key>,
    /// Endpoints inserted so far: numbers them in logs.
    inserted: u64,
    /// The source ended: it is not polled again.
    ended: bool,
    _request: PhantomData<fn(Req)>,
}

// Keys are never pinned: they are cloned and compared, never polled.
// Nor is the make service: it is cloned for each connection, never polled
// in place.
impl<D: Discover + Unpin, M, Req> Unpin for Pools<D, M, Req> {}

/// The endpoints of a [`Pools`] and each one's watch: a clone-able view to
/// keep once the `Pools` has gone into the balancer (empty once it is
/// dropped).
pub struct Endpoints<K> {
    listing: Listing<K>,
}

impl<K: Clone> Endpoints<K> {
    /// Each endpoint now, with its pool's watch, in the order they came.
    pub fn list(&self) -> Vec<(K, ConnectionWatch)> {
        self.listing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The endpoints now, in the order they came.
    pub fn keys(&self) -> Vec<K> {
        let listing = self.listing.lock().unwrap_or_else(PoisonError::into_inner);
        listing.iter().map(|(key, _)| key.clone()).collect()
    }
}

impl<K> Clone for Endpoints<K> {
    fn clone(&self) -> Self {
        Self {
            listing: self.listing.clone(),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for Endpoints<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listing = self.listing.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_map()
            .entries(listing.iter().map(|(key, watch)| (key, watch.phase())))
            .finish()
    }
}

impl<Req> PoolLayer<(), Req> {
    /// A pool of this layer's size and settings for each endpoint
    /// `endpoints` names, each connecting with its own clone of `make` to
    /// the endpoint (the source's `Change::Insert(key, target)` gives the
    /// target): see [`Pools`]. The layer is made for no target of its own,
    /// `ReconnectLayer::new(())`.
    ///
    /// # Panics
    ///
    /// If the settings are invalid (see [`validate`](Self::validate)).
    #[track_caller]
    pub fn discover<D, M>(&self, endpoints: D, make: M) -> Pools<D, M, Req>
    where
        D: Discover,
    {
        if let Err(err) = self.check() {
            panic!("invalid redial configuration: {err}");
        }
        let (layer, size, bound) = self.parts();
        // Each connection fails fast; the pool waits for one up (below).
        // An endpoint goes when the source removes it, never by giving up:
        // the balancer would drop it for good while the source still names it.
        let mut layer = layer.clone().wait_for_ready(false);
        layer.config_mut().max_attempts = None;
        let aggregate = Aggregate::new();
        aggregate.refresh(); // no endpoint yet: looking for one
        Pools {
            source: endpoints,
            layer,
            size,
            bound,
            make,
            aggregate,
            members: Vec::new(),
            listing: Arc::default(),
            inserted: 0,
            ended: false,
            _request: PhantomData,
        }
    }
}

impl<D: Discover, M, Req> Pools<D, M, Req> {
    /// One watch over every endpoint (see [the watch](Self#the-watch)).
    pub fn watch(&self) -> ConnectionWatch {
        self.aggregate.watch()
    }

    /// The endpoints and each one's watch, now and later (none once this
    /// source is dropped).
    pub fn endpoints(&self) -> Endpoints<D::Key> {
        Endpoints {
            listing: self.listing.clone(),
        }
    }

    /// Calls `hook` whenever no endpoint is up and one has just failed, as
    /// a DNS source's `Refresh` wants; in place of any hook set before.
    ///
    /// It runs where the failure is published, on whichever task or thread
    /// that is, while the failing endpoint's pool is locked: it must only
    /// signal (set a flag, wake a task, send on a channel), never block or
    /// close a connection itself.
    pub fn when_none_up(self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.aggregate.on_none_up(Arc::new(hook));
        self
    }
}

impl<D, M, Req, T> Stream for Pools<D, M, Req>
where
    D: Discover<Service = T> + Unpin,
    D::Key: Clone,
    M: Service<T> + Clone,
    T: Clone,
    Reconnect<M, T>: Service<Req, Error = BoxError> + Send + 'static,
    <Reconnect<M, T> as Service<Req>>::Future: Send + 'static,
    Req: Send + 'static,
{
    type Item =
        Result<Change<D::Key, Pool<Req, <Reconnect<M, T> as Service<Req>>::Future>>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let change = match ready!(Pin::new(&mut this.source).poll_discover(cx)) {
            None => {
                this.ended = true;
                this.aggregate.end();
                return Poll::Ready(None);
            }
            Some(Err(err)) => return Poll::Ready(Some(Err(err))),
            Some(Ok(change)) => change,
        };
        Poll::Ready(Some(Ok(match change {
            Change::Insert(key, target) => {
                let layer = match &this.layer.config().name {
                    Some(name) => this
                        .layer
                        .retarget(target)
                        .name(format!("{name}@{}", this.inserted)),
                    None => this.layer.retarget(target),
                };
                this.inserted += 1;
                let pool = Pool::start(&layer, &this.make, this.size, this.bound).wait_for_any_up();
                this.leave(&key);
                this.aggregate.join_pool(pool.aggregate());
                this.members.push((key.clone(), pool.aggregate().clone()));
                this.listing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((key.clone(), pool.watch()));
                Change::Insert(key, pool)
            }
            Change::Remove(key) => {
                this.leave(&key);
                Change::Remove(key)
            }
        })))
    }
}

impl<D: Discover, M, Req> Pools<D, M, Req> {
    /// Takes `key`'s pool, if any, out of the watch and the listing.
    fn leave(&mut self, key: &D::Key) {
        if let Some(i) = self.members.iter().position(|(k, _)| k == key) {
            let (_, pool) = self.members.swap_remove(i);
            self.aggregate.leave(&pool);
            self.listing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|(k, _)| k != key);
        }
    }
}

impl<D: Discover, M, Req> Drop for Pools<D, M, Req> {
    /// The balancer drops its pools with this source: the watch goes to
    /// `Closed` once they have all closed.
    fn drop(&mut self) {
        self.aggregate.close();
        self.aggregate.end();
        self.listing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl<D: Discover, M, Req> fmt::Debug for Pools<D, M, Req>
where
    D::Key: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pools")
            .field("state", &self.aggregate.watch().state())
            .field("endpoints", &self.endpoints())
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}
