use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use http::{header::USER_AGENT, HeaderValue, Request, Response};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{sleep, Sleep};
use tonic::{body::Body, Status};
use tower::{BoxError, Service};

use super::deadline::{deadline_status, grpc_timeout, wait_status};
use crate::{
    error::{Closed, ConnectFailed, ConnectTimeout, GaveUp, NotReady, Resend, Unavailable},
    http::SharedHttp2,
    ConnectionWatch,
};

/// What every request's `user-agent` ends with, as tonic's channel ends it
/// with `tonic/…`.
const USER_AGENT_VALUE: &str = concat!("redial/", env!("CARGO_PKG_VERSION"));

/// `first second`; `first` alone should the two not make a header value,
/// which two header values joined by a space always do.
fn join(first: &HeaderValue, second: &HeaderValue) -> HeaderValue {
    let mut both = Vec::with_capacity(first.len() + 1 + second.len());
    both.extend_from_slice(first.as_bytes());
    both.push(b' ');
    both.extend_from_slice(second.as_bytes());
    HeaderValue::from_bytes(&both).unwrap_or_else(|_| first.clone())
}

/// The future the shared handle returns for one call.
type Inner = <SharedHttp2<Body> as Service<Request<Body>>>::Future;

/// A reconnecting gRPC channel: what [`Endpoint::connect`](super::Endpoint::connect)
/// and [`Endpoint::connect_lazy`](super::Endpoint::connect_lazy) return, and
/// what a generated client takes (`HealthClient::new(channel)`).
///
/// It is cheap to clone: every clone shares one HTTP/2 connection, kept by
/// one background task (a [`SharedHttp2`] handle underneath). The task
/// connects at once, reconnects in the background after a loss, and stops
/// when the last clone is dropped or [`close`](Self::close) is called.
///
/// # Errors
///
/// A call answers with a [`tonic::Status`], as over tonic's `Channel`:
///
/// - one that never reached the server (the channel is disconnected and
///   fails fast, is closed, or gave up) fails with `Unavailable` and
///   redial's message; redial's typed error
///   ([`Unavailable`](crate::error::Unavailable),
///   [`Closed`](crate::error::Closed), [`GaveUp`](crate::error::GaveUp), …)
///   is the status's [`source()`](std::error::Error::source);
/// - one whose deadline ([`Endpoint::timeout`](super::Endpoint::timeout) or
///   the request's `grpc-timeout`, from `tonic::Request::set_timeout`)
///   passes fails with `DeadlineExceeded`, naming the last connect error if
///   it was still waiting for a connection (tonic's `Channel` answers
///   `Cancelled` here); so does one that waited out the endpoint's
///   [`wait_timeout`](super::Endpoint::wait_timeout), never sent;
/// - one cut by a lost connection fails with whatever tonic makes of
///   hyper's error, exactly as over tonic's `Channel`.
///
/// Reconnecting is not retrying: a call is sent again only when it never
/// left the client (gRPC's transparent retry: the connection was found
/// closed, or going away after a `GOAWAY`, before the call was written),
/// once, on the next connection. A call's body is a stream that cannot be
/// sent twice, so a call that was written is never sent again.
///
/// # Examples
///
/// A named type, to keep in a struct as tonic's:
///
/// ```
/// use redial::grpc::{Channel, Endpoint};
/// use tonic_health::pb::health_client::HealthClient;
///
/// struct App {
///     health: HealthClient<Channel>,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let channel = Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
/// let app = App {
///     health: HealthClient::new(channel),
/// };
/// # let _ = app.health;
/// # }
/// ```
pub struct Channel {
    inner: SharedHttp2<Body>,
    timeout: Option<Duration>,
    user_agent: HeaderValue,
    /// Why the handle refused readiness: handed to the next `call`, so that
    /// a closed channel answers calls with a status, not a readiness error
    /// (which tonic's generated clients report as `Unknown`).
    refused: Option<BoxError>,
}

// ===== impl Channel =====

impl Channel {
    pub(super) fn new(
        inner: SharedHttp2<Body>,
        timeout: Option<Duration>,
        user_agent: Option<HeaderValue>,
    ) -> Self {
        let user_agent = match user_agent {
            Some(agent) => join(&agent, &HeaderValue::from_static(USER_AGENT_VALUE)),
            None => HeaderValue::from_static(USER_AGENT_VALUE),
        };
        Self {
            inner,
            timeout,
            user_agent,
            refused: None,
        }
    }

    /// A watch on the connection's state: phase, last error, next attempt,
    /// counters. See [`ConnectionWatch`].
    pub fn watch(&self) -> ConnectionWatch {
        self.inner.watch()
    }

    /// Starts the backoff schedule afresh and makes a waiting retry due now,
    /// for every clone: use it when you know the server is back.
    pub fn reset_backoff(&self) {
        self.inner.reset_backoff();
    }

    /// Closes the channel for every clone: later calls fail with
    /// `Unavailable` ("connection closed"), the connection is dropped and
    /// the watch shows [`Closed`](crate::Phase::Closed). Calls already sent
    /// are not cancelled.
    pub fn close(&self) {
        self.inner.close();
    }

    /// The shared handle underneath.
    pub fn get_ref(&self) -> &SharedHttp2<Body> {
        &self.inner
    }
}

impl Service<Request<Body>> for Channel {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.refused.is_none() {
            if let Err(error) = ready!(self.inner.poll_ready(cx)) {
                self.refused = Some(error);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> ResponseFuture {
        if let Some(error) = self.refused.take() {
            return ResponseFuture::failed(error);
        }
        // As tonic's channel: a request's own user agent comes first.
        let headers = request.headers_mut();
        if let Ok(Some(own)) = headers.try_insert(USER_AGENT, self.user_agent.clone()) {
            headers.insert(USER_AGENT, join(&own, &self.user_agent));
        }
        let limit = match (self.timeout, grpc_timeout(request.headers())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = match limit {
            Some(limit) => Deadline::At {
                sleep: sleep(limit),
                limit,
                watch: self.inner.watch(),
            },
            None => Deadline::None,
        };
        ResponseFuture {
            kind: Kind::Sent {
                fut: self.inner.call(request),
                deadline,
            },
        }
    }
}

impl Clone for Channel {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            timeout: self.timeout,
            user_agent: self.user_agent.clone(),
            refused: None,
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("state", &self.inner.watch().state())
            .field("closed", &self.inner.is_closed())
            .field("timeout", &self.timeout)
            .finish()
    }
}

// ===== ResponseFuture =====

pin_project! {
    /// The response future of [`Channel`]: the call, under its deadline if
    /// it has one.
    pub struct ResponseFuture {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Sent {
            #[pin]
            fut: Inner,
            #[pin]
            deadline: Deadline,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

pin_project! {
    #[project = DeadlineProj]
    enum Deadline {
        None,
        At {
            #[pin]
            sleep: Sleep,
            limit: Duration,
            watch: ConnectionWatch,
        },
    }
}

impl ResponseFuture {
    fn failed(error: BoxError) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Sent { fut, deadline } => {
                if let Poll::Ready(result) = fut.poll(cx) {
                    return Poll::Ready(result.map_err(to_status));
                }
                match deadline.project() {
                    DeadlineProj::At {
                        sleep,
                        limit,
                        watch,
                    } => {
                        ready!(sleep.poll(cx));
                        Poll::Ready(Err(Box::new(deadline_status(*limit, &watch.state()))))
                    }
                    DeadlineProj::None => Poll::Pending,
                }
            }
            KindProj::Failed { error } => Poll::Ready(Err(match error.take() {
                Some(error) => to_status(error),
                None => Box::new(Status::internal("redial: response polled after completion")),
            })),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Sent { .. } => "sent",
            Kind::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// A call that never reached the server becomes an `Unavailable` status
/// with redial's message and error as its source (`DeadlineExceeded` if it
/// waited out the wait timeout), as does one handed back unwritten twice;
/// anything else is left for tonic to read, as it reads its own
/// `Channel`'s errors.
fn to_status(error: BoxError) -> BoxError {
    if let Some(waited) = error
        .downcast_ref::<Unavailable>()
        .and_then(Unavailable::waited)
    {
        return Box::new(wait_status(waited, error));
    }
    let unsent = error.is::<Unavailable>()
        || error.is::<Closed>()
        || error.is::<GaveUp>()
        || error.is::<NotReady>()
        || error.is::<ConnectFailed>()
        || error.is::<ConnectTimeout>()
        || error
            .downcast_ref::<Resend<Request<Body>>>()
            .is_some_and(Resend::is_unwritten);
    if !unsent {
        return error;
    }
    let mut status = Status::unavailable(error.to_string());
    status.set_source(Arc::from(error));
    Box::new(status)
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::error::cause;

    fn code(error: BoxError) -> Option<tonic::Code> {
        to_status(error).downcast::<Status>().ok().map(|s| s.code())
    }

    /// Every error of a call that never reached the server is `Unavailable`
    /// with redial's error as its source; any other error is left as it is.
    #[test]
    fn unsent_calls_are_unavailable() {
        let refused = || cause(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let unsent: Vec<BoxError> = vec![
            Box::new(Unavailable::new(Some(refused()), 1, None)),
            Box::new(Closed::new(None)),
            Box::new(GaveUp::new(3, Some(refused()))),
            Box::new(NotReady::new()),
            Box::new(ConnectFailed::new(std::io::Error::other("refused"))),
            Box::new(ConnectTimeout::new(Duration::from_secs(1))),
            Box::new(Resend::unwritten(Request::new(Body::empty()), "closed")),
        ];
        for error in unsent {
            let message = error.to_string();
            let status = to_status(error).downcast::<Status>().unwrap();
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert_eq!(status.message(), message);
            assert!(status.source().is_some());
        }
        assert_eq!(code("something else".into()), None);
        // Written and unanswered: tonic reads the connection's error.
        let unanswered = Resend::unanswered(Request::new(Body::empty()), "closed");
        assert_eq!(code(Box::new(unanswered)), None);
    }

    /// A call that waited out the wait timeout is `DeadlineExceeded`,
    /// naming the connect error, with redial's `Unavailable` as the source.
    #[test]
    fn waited_out_calls_are_deadline_exceeded() {
        let refused = cause(ConnectFailed::new(std::io::Error::other("refused")));
        let error = Unavailable::new(Some(refused), 2, None).after_waiting(Duration::from_secs(5));
        let status = to_status(Box::new(error)).downcast::<Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            status.message(),
            "no connection within the wait timeout of 5s, never sent: failed to connect"
        );
        let source = status.source().unwrap().downcast_ref::<Unavailable>();
        assert_eq!(source.unwrap().waited(), Some(Duration::from_secs(5)));
    }
}
