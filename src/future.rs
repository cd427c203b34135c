//! The response future of [`Reconnect`](crate::Reconnect).
//!
//! The shared handle's is [`shared::ResponseFuture`](crate::shared::ResponseFuture),
//! and the `http` connections' is `http::ResponseFuture`.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use pin_project_lite::pin_project;
use tower::BoxError;

use crate::state::InFlight;

pin_project! {
    /// The response future of [`Reconnect`](crate::Reconnect): the inner
    /// service's future, or an error decided at the time of the call.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner {
            #[pin]
            fut: F,
            // With a classifier or an idle timeout: the request in flight,
            // and the report of a fatal error.
            in_flight: Option<InFlight>,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(fut: F, in_flight: Option<InFlight>) -> Self {
        Self {
            kind: Kind::Inner { fut, in_flight },
        }
    }

    pub(crate) fn failed(error: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Failed {
                error: Some(error.into()),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { fut, in_flight } => {
                let result = ready!(fut.poll(cx)).map_err(Into::into);
                if in_flight.is_some() {
                    InFlight::done(in_flight, result.as_ref().err());
                }
                Poll::Ready(result)
            }
            KindProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseFuture::Inner"),
            Kind::Failed { error } => f
                .debug_struct("ResponseFuture::Failed")
                .field("error", error)
                .finish(),
        }
    }
}
