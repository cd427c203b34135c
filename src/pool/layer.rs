use std::{fmt, marker::PhantomData};

use tower::{BoxError, Layer, Service};

use super::Pool;
use crate::{error::ConfigError, Reconnect, ReconnectLayer};

/// Builds [`Pool`]s inside a [`tower::ServiceBuilder`]: each `layer(make)`
/// builds `size` [`Reconnect`]s with the [`ReconnectLayer`]'s settings, each
/// from its own clone of `make`, and spawns each with a queue of
/// [`bound`](Self::bound) requests.
///
/// Made with [`ReconnectLayer::pool`].
#[must_use]
pub struct PoolLayer<T, Req> {
    layer: ReconnectLayer<T>,
    size: usize,
    bound: usize,
    _request: PhantomData<fn(Req)>,
}

impl<T, Req> PoolLayer<T, Req> {
    /// The queue bound of each connection unless [`bound`](Self::bound)
    /// sets another.
    pub const DEFAULT_BOUND: usize = 1024;

    pub(crate) fn new(layer: ReconnectLayer<T>, size: usize) -> Self {
        Self {
            layer,
            size,
            bound: Self::DEFAULT_BOUND,
            _request: PhantomData,
        }
    }

    /// Sets how many requests each connection's queue holds: a pool of `n`
    /// holds `n × bound`, and `poll_ready` waits only when the queue of the
    /// connection it chose is full.
    ///
    /// Must be at least 1. Default is 1024
    /// ([`DEFAULT_BOUND`](Self::DEFAULT_BOUND)).
    pub fn bound(mut self, bound: usize) -> Self {
        self.bound = bound;
        self
    }

    /// Checks the pool's size and bound and the layer's settings, returning
    /// the layer or the first rule broken.
    ///
    /// ```
    /// use redial::{error::ConfigError, ReconnectLayer};
    ///
    /// let err = ReconnectLayer::new(()).pool::<u32>(0).validate().unwrap_err();
    /// assert_eq!(err, ConfigError::PoolSizeNotPositive);
    /// assert_eq!(err.to_string(), "a pool must have at least 1 connection");
    /// ```
    pub fn validate(self) -> Result<Self, ConfigError> {
        self.check()?;
        Ok(self)
    }

    /// The layer, the size and the bound.
    pub(crate) fn parts(&self) -> (&ReconnectLayer<T>, usize, usize) {
        (&self.layer, self.size, self.bound)
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.size == 0 {
            return Err(ConfigError::PoolSizeNotPositive);
        }
        if self.bound == 0 {
            return Err(ConfigError::QueueBoundNotPositive);
        }
        self.layer.check()
    }
}

impl<M, T, Req> Layer<M> for PoolLayer<T, Req>
where
    M: Service<T> + Clone,
    T: Clone,
    Reconnect<M, T>: Service<Req, Error = BoxError> + Send + 'static,
    <Reconnect<M, T> as Service<Req>>::Future: Send + 'static,
    Req: Send + 'static,
{
    type Service = Pool<Req, <Reconnect<M, T> as Service<Req>>::Future>;

    /// # Panics
    ///
    /// If the settings are invalid (see [`validate`](Self::validate)), or
    /// outside a tokio runtime.
    #[track_caller]
    fn layer(&self, make: M) -> Self::Service {
        if let Err(err) = self.check() {
            panic!("invalid redial configuration: {err}");
        }
        Pool::start(&self.layer, &make, self.size, self.bound)
    }
}

impl<T: Clone, Req> Clone for PoolLayer<T, Req> {
    fn clone(&self) -> Self {
        Self::new(self.layer.clone(), self.size).bound(self.bound)
    }
}

impl<T: fmt::Debug, Req> fmt::Debug for PoolLayer<T, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolLayer")
            .field("layer", &self.layer)
            .field("size", &self.size)
            .field("bound", &self.bound)
            .finish()
    }
}
