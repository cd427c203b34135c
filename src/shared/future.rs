use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::sync::oneshot;
use tower::BoxError;

use super::{
    message::{Message, Resender, Rx},
    wait::Wait,
};
use crate::error::{Closed, Resend};

pin_project! {
    /// The response future of [`Shared`](crate::Shared): waits for the
    /// task to send the request, then for the response. When the
    /// connection hands the request back ([`Resend`]), it goes back to the
    /// task to be sent on the next connection, once.
    pub struct ResponseFuture<Req, F> {
        #[pin]
        state: State<F>,
        // With a wait timeout, while queued, and kept once sent: a request
        // sent again is still bounded by it, counted from the call.
        wait: Option<Pin<Box<Wait>>>,
        // `None` once used: a request is sent again at most once.
        resend: Option<Arc<Resender<Req, F>>>,
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

impl<Req, F> ResponseFuture<Req, F> {
    pub(crate) fn new(
        rx: Rx<F>,
        wait: Option<Pin<Box<Wait>>>,
        resend: Arc<Resender<Req, F>>,
    ) -> Self {
        Self {
            state: State::Queued { rx },
            wait,
            resend: Some(resend),
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            wait: None,
            resend: None,
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
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Sent { fut } => {
                    let error = match ready!(fut.poll(cx)) {
                        Ok(response) => return Poll::Ready(Ok(response)),
                        Err(error) => error.into(),
                    };
                    match error.downcast::<Resend<Req>>() {
                        Ok(resend) => match this.resend.take() {
                            Some(tx) => this.state.set(send_again(&tx, *resend, this.wait)),
                            // Handed back a second time: not sent a third;
                            // the caller gets the `Resend`, with the
                            // request and the connection's error in it.
                            None => return Poll::Ready(Err(resend)),
                        },
                        Err(error) => return Poll::Ready(Err(error)),
                    }
                }
                StateProj::Queued { rx } => match ready!(match this.wait {
                    // Without a wait timeout, the answer alone.
                    None => Pin::new(rx).poll(cx),
                    Some(_) => Wait::poll_answer(this.wait, rx, cx),
                }) {
                    // Sent: the response future is polled in this same poll.
                    Ok(Ok(fut)) => this.state.set(State::Sent { fut }),
                    Ok(Err(error)) => return Poll::Ready(Err(error)),
                    // The task went away without answering: it panicked or
                    // its runtime shut down. The watch shows `Closed`; the
                    // task recorded why before it dropped the request.
                    Err(_) => {
                        return Poll::Ready(Err(match this.resend {
                            Some(resend) => resend.closed_error(),
                            None => Box::new(Closed::new(None)),
                        }))
                    }
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

/// Queues a handed-back request with the task, ahead of new ones. With a
/// wait timeout, the caller's wait goes on from the call: the request gets
/// a fresh claim under the same deadline, and if that deadline has passed
/// it fails with `Unavailable` and is not sent again.
#[cold]
fn send_again<Req, F>(
    tx: &Resender<Req, F>,
    resend: Resend<Req>,
    wait: &mut Option<Pin<Box<Wait>>>,
) -> State<F> {
    let claim = match wait.as_mut().map(|wait| wait.as_mut().renew()) {
        Some(Ok(claim)) => Some(claim),
        Some(Err(error)) => return State::Failed { error: Some(error) },
        None => None,
    };
    let (answer, rx) = oneshot::channel();
    let message = Message {
        request: resend.into_request(),
        tx: answer,
        span: tracing::Span::current(),
        claim,
    };
    match tx.send(message) {
        Ok(()) => State::Queued { rx },
        // The task has closed: the request was never processed, and
        // nothing will send it now.
        Err(_) => State::Failed {
            error: Some(Box::new(Closed::new(None))),
        },
    }
}

impl<Req, F> fmt::Debug for ResponseFuture<Req, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Queued { .. } => "queued",
            State::Sent { .. } => "sent",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("may_resend", &self.resend.is_some())
            .finish()
    }
}
