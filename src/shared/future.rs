use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use pin_project_lite::pin_project;
use tower::BoxError;

use super::{message::Rx, wait::Wait};
use crate::error::Closed;

pin_project! {
    /// The response future of [`Shared`](crate::Shared): waits for the
    /// task to send the request, then for the response.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        // With a wait timeout, while queued.
        wait: Option<Pin<Box<Wait>>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Queued { rx: Rx<F> },
        Sent { #[pin] fut: F },
        Failed { error: Option<BoxError> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(rx: Rx<F>, wait: Option<Pin<Box<Wait>>>) -> Self {
        Self {
            state: State::Queued { rx },
            wait,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            wait: None,
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
        let this = self.project();
        let mut state = this.state;
        loop {
            match state.as_mut().project() {
                StateProj::Sent { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Queued { rx } => match ready!(Wait::poll_answer(this.wait, rx, cx)) {
                    // Sent: the response future is polled in this same poll.
                    Ok(Ok(fut)) => state.set(State::Sent { fut }),
                    Ok(Err(error)) => return Poll::Ready(Err(error)),
                    // The task went away without answering: it panicked or
                    // its runtime shut down. The watch shows `Closed`.
                    Err(_) => return Poll::Ready(Err(Box::new(Closed::new(None)))),
                },
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .expect("ResponseFuture polled after completion")))
                }
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Queued { .. } => "queued",
            State::Sent { .. } => "sent",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
