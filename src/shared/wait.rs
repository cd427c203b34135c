//! A request's wait in the queue, with a wait timeout: the timer its
//! response future arms, and the claim that settles, once, whether the task
//! sends the request or the caller gives up on it.
//!
//! The claim closes a race the caller's closing of its oneshot leaves open:
//! the task checks that the caller still waits, then calls the connection,
//! and on a multi-threaded runtime the caller's wait could run out between
//! the two. Whoever takes the claim first decides, so a request the caller
//! was told was never sent is never sent.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use pin_project_lite::pin_project;
use tokio::{
    sync::oneshot::error::RecvError,
    time::{sleep, Instant, Sleep},
};
use tower::BoxError;

use super::message::Rx;
use crate::{error::Unavailable, ConnectionWatch};

/// Who has a queued request: the task, to send it, or its caller, whose
/// wait ran out. Taken once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claim(Arc<AtomicBool>);

impl Claim {
    /// Takes the request; `false` if the other side has.
    pub(crate) fn take(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }
}

pin_project! {
    /// The caller's side: the timer, from the call, and what the error
    /// reports.
    pub(crate) struct Wait {
        #[pin]
        sleep: Sleep,
        limit: Duration,
        claim: Claim,
        watch: ConnectionWatch,
    }
}

impl Wait {
    /// A wait of `limit` from now, and the claim to send with the request.
    /// The timer enters tokio's wheel only when first polled.
    pub(crate) fn new(limit: Duration, watch: ConnectionWatch) -> (Pin<Box<Self>>, Claim) {
        let claim = Claim::default();
        let wait = Box::pin(Self {
            sleep: sleep(limit),
            limit,
            claim: claim.clone(),
            watch,
        });
        (wait, claim)
    }

    /// Polls a queued request's answer, `rx`. With a wait that has run out
    /// and a request the caller took back, the answer is the wait's error,
    /// and the channel is closed, so the task skips the request too.
    pub(crate) fn poll_answer<F>(
        wait: &mut Option<Pin<Box<Self>>>,
        rx: &mut Rx<F>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Result<F, BoxError>, RecvError>> {
        let answer = Pin::new(&mut *rx).poll(cx);
        let (Poll::Pending, Some(armed)) = (&answer, wait.as_mut()) else {
            return answer;
        };
        match ready!(armed.as_mut().poll_expired(cx)) {
            Some(error) => {
                rx.close();
                Poll::Ready(Ok(Err(error)))
            }
            // The task took it first; its answer wakes us. The wait is kept:
            // should the connection hand the request back, its deadline has
            // passed, and it is not sent again.
            None => Poll::Pending,
        }
    }

    /// `Pending` until the wait runs out; then `Ready(Some(error))` if the
    /// caller took the request (it will not be sent), or `Ready(None)` if
    /// the task took it first (its answer is on the way).
    fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BoxError>> {
        let this = self.project();
        if this.sleep.poll(cx).is_pending() {
            return Poll::Pending;
        }
        if !this.claim.take() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(unavailable(this.watch, *this.limit)))
    }

    /// For a request the connection handed back, to send again within the
    /// same wait: a fresh claim, the task having taken the first, under the
    /// deadline of the original call. Once that has passed, the caller's
    /// wait is over: the error, and the request is not sent again.
    pub(crate) fn renew(self: Pin<&mut Self>) -> Result<Claim, BoxError> {
        let this = self.project();
        if this.sleep.deadline() <= Instant::now() {
            return Err(unavailable(this.watch, *this.limit));
        }
        *this.claim = Claim::default();
        Ok(this.claim.clone())
    }
}

/// The error of a request whose wait of `limit` ran out.
fn unavailable(watch: &ConnectionWatch, limit: Duration) -> BoxError {
    let state = watch.state();
    let error = Unavailable::new(state.last_error.clone(), state.attempt, state.retry_at)
        .after_waiting(limit);
    Box::new(error)
}
