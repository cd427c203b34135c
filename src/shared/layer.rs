use std::{fmt, marker::PhantomData};

use tower::{BoxError, Layer, Service};

use super::Shared;
use crate::{Reconnect, ReconnectLayer};

/// Builds [`Shared`] handles inside a [`tower::ServiceBuilder`], as
/// `BufferLayer` builds `Buffer`s: each `layer(make)` builds a [`Reconnect`]
/// with the [`ReconnectLayer`]'s settings and spawns it with a queue of
/// `bound` requests.
///
/// Made with [`ReconnectLayer::shared`].
#[must_use]
pub struct SharedLayer<T, Req> {
    layer: ReconnectLayer<T>,
    bound: usize,
    _request: PhantomData<fn(Req)>,
}

impl<T, Req> SharedLayer<T, Req> {
    pub(crate) fn new(layer: ReconnectLayer<T>, bound: usize) -> Self {
        Self {
            layer,
            bound,
            _request: PhantomData,
        }
    }
}

impl<M, T, Req> Layer<M> for SharedLayer<T, Req>
where
    M: Service<T>,
    T: Clone,
    Reconnect<M, T>: Service<Req, Error = BoxError> + Send + 'static,
    <Reconnect<M, T> as Service<Req>>::Future: Send + 'static,
    Req: Send + 'static,
{
    type Service = Shared<Req, <Reconnect<M, T> as Service<Req>>::Future>;

    /// # Panics
    ///
    /// If `bound` is 0, if the settings are invalid (see
    /// [`ReconnectLayer::validate`]), or outside a tokio runtime.
    #[track_caller]
    fn layer(&self, make: M) -> Self::Service {
        self.layer.build(make).spawn(self.bound)
    }
}

impl<T: Clone, Req> Clone for SharedLayer<T, Req> {
    fn clone(&self) -> Self {
        Self::new(self.layer.clone(), self.bound)
    }
}

impl<T: fmt::Debug, Req> fmt::Debug for SharedLayer<T, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLayer")
            .field("layer", &self.layer)
            .field("bound", &self.bound)
            .finish()
    }
}
