use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use pin_project_lite::pin_project;
use tower::BoxError;

use crate::shared;

pin_project! {
    /// The response future of [`Pool`](crate::Pool): the chosen
    /// connection's [`shared::ResponseFuture`], counted in that
    /// connection's load until it resolves.
    pub struct ResponseFuture<Req, F> {
        #[pin]
        inner: shared::ResponseFuture<Req, F>,
        load: Option<Arc<()>>,
    }
}

impl<Req, F> ResponseFuture<Req, F> {
    pub(super) fn new(inner: shared::ResponseFuture<Req, F>, load: Arc<()>) -> Self {
        Self {
            inner,
            load: Some(load),
        }
    }

    pub(super) fn failed(error: BoxError) -> Self {
        Self {
            inner: shared::ResponseFuture::failed(error),
            load: None,
        }
    }
}

impl<Req, F, T, E> Future for ResponseFuture<Req, F>
where
    Req: Send + 'static,
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        // No longer in flight: the connection's load drops now, not when
        // the caller drops the future.
        this.load.take();
        Poll::Ready(output)
    }
}

impl<Req, F> fmt::Debug for ResponseFuture<Req, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish()
    }
}
