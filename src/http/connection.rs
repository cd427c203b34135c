use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use hyper::{
    body::{Body, Incoming},
    client::conn::{http1, http2, TrySendError},
};
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::{
    close::{CloseSignal, ConnectionClosed},
    origin::Origin,
    replay::{self, Fate},
};
use crate::error::Resend;

// ===== Http1Connection =====

/// One HTTP/1 connection, made by [`Http1Connector`]: a
/// `Service<http::Request<B>>` answering `http::Response<Incoming>`, one
/// request at a time (`poll_ready` is `Pending` while a response is
/// outstanding).
///
/// The request URI is sent in origin-form and a missing `Host` header is
/// filled in; see the [module docs](super#request-uris).
///
/// # Closing
///
/// `poll_ready` returns `Err(`[`ConnectionClosed`]`)` once the connection has
/// closed: the server closed it (idle or after a `Connection: close`
/// response), the socket failed, or a request was cancelled mid-flight
/// (HTTP/1 cannot abandon one request and keep the connection). While the
/// connection is open, `poll_ready` leaves the caller's waker with the task
/// driving it, even when it answers `Ready(Ok)`, so a task parked on
/// readiness alone is woken as soon as an idle connection goes away. redial's eager shared handle relies on this to notice idle
/// disconnects without polling.
///
/// Calling `call` without a `Ready(Ok)` from `poll_ready` first never
/// panics: hyper sends the request if the connection can take it, and
/// otherwise its response future fails with hyper's "connection was not
/// ready" error. Dropping the connection closes it once no response is
/// outstanding; the driving task then ends.
///
/// [`Http1Connector`]: super::Http1Connector
///
/// # Examples
///
/// Used directly, without reconnecting:
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use http::Request;
/// use http_body_util::Empty;
/// use hyper::body::Bytes;
/// use redial::http::Http1Connector;
/// use tower::{Service, ServiceExt};
///
/// let mut connection = Http1Connector::new().oneshot("http://127.0.0.1:3000".parse()?).await?;
/// let req = Request::get("/").body(Empty::<Bytes>::new())?;
/// let res = connection.ready().await?.call(req).await?;
/// println!("{}", res.status());
/// # Ok(())
/// # }
/// ```
pub struct Http1Connection<B> {
    inner: Conn<http1::SendRequest<B>>,
}

impl<B> Http1Connection<B> {
    pub(crate) fn new(sender: http1::SendRequest<B>, closed: CloseSignal, origin: Origin) -> Self {
        Self {
            inner: Conn::new(sender, closed, origin),
        }
    }
}

impl<B> fmt::Debug for Http1Connection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner
            .debug_struct("Http1Connection", f)
            .field("ready", &self.inner.sender.is_ready())
            .finish()
    }
}

// ===== Http2Connection =====

/// One HTTP/2 connection, made by [`Http2Connector`]: a
/// `Service<http::Request<B>>` answering `http::Response<Incoming>`, with
/// any number of requests in flight at once (each on its own stream).
///
/// A path-only request URI gets the target's scheme and authority; see the
/// [module docs](super#request-uris).
///
/// # Closing
///
/// `poll_ready` returns `Err(`[`ConnectionClosed`]`)` once the connection has
/// closed: the server closed it or sent `GOAWAY` and finished, the socket
/// failed, or a keep-alive ping went unanswered (when set up with
/// [`Http2Connector::keep_alive`]). While the connection is open, `poll_ready`
/// leaves the caller's waker with the task driving it, even when it answers
/// `Ready(Ok)`, so a task parked on readiness alone is woken as soon as an
/// idle connection goes away. redial's eager shared
/// handle relies on this to notice idle disconnects without polling.
///
/// Calling `call` without a `Ready(Ok)` from `poll_ready` first is allowed
/// while the connection is open; on a closed one the response future fails
/// with hyper's error, not a panic. Dropping the connection closes it once
/// no stream is outstanding; the driving task then ends.
///
/// [`Http2Connector`]: super::Http2Connector
/// [`Http2Connector::keep_alive`]: super::Http2Connector::keep_alive
///
/// # Examples
///
/// Used directly, without reconnecting:
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use http::Request;
/// use http_body_util::Empty;
/// use hyper::body::Bytes;
/// use redial::http::Http2Connector;
/// use tower::{Service, ServiceExt};
///
/// let mut connection = Http2Connector::new().oneshot("http://127.0.0.1:50051".parse()?).await?;
/// let req = Request::get("/").body(Empty::<Bytes>::new())?;
/// let res = connection.ready().await?.call(req).await?;
/// println!("{}", res.status());
/// # Ok(())
/// # }
/// ```
pub struct Http2Connection<B> {
    inner: Conn<http2::SendRequest<B>>,
}

impl<B> Http2Connection<B> {
    pub(crate) fn new(sender: http2::SendRequest<B>, closed: CloseSignal, origin: Origin) -> Self {
        Self {
            inner: Conn::new(sender, closed, origin),
        }
    }
}

impl<B> fmt::Debug for Http2Connection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.debug_struct("Http2Connection", f).finish()
    }
}

// ===== Service =====

// Both connections' `Service` impl, the same but for the type: the work is
// `Conn`'s.
macro_rules! connection_service {
    ($connection:ident) => {
        impl<B> Service<Request<B>> for $connection<B>
        where
            B: Body + Send + 'static,
        {
            type Response = Response<Incoming>;
            type Error = BoxError;
            type Future = ResponseFuture;

            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
                self.inner.poll_ready(cx)
            }

            fn call(&mut self, req: Request<B>) -> ResponseFuture {
                self.inner.call(req)
            }
        }
    };
}

connection_service!(Http1Connection);
connection_service!(Http2Connection);

// ===== Conn =====

/// What both connections are: hyper's sender `S`, which knows how its
/// protocol sends (see [`Sender`]), the close signal, and the target.
struct Conn<S> {
    sender: S,
    closed: CloseSignal,
    origin: Origin,
    /// Requests handed to this connection so far.
    sent: u64,
    /// When the connection was made.
    opened: Instant,
}

/// How long a connection must have stood open before its first request for
/// that request to count as on a reused connection: the connection was not
/// made for it (an eager connection, or one kept from earlier), so a server
/// may be closing it for idleness just as the request arrives, as on a
/// connection that has served requests. A request on a connection made for
/// it and sent at once is never sent again.
const FRESH: Duration = Duration::from_millis(1);

impl<S> Conn<S> {
    fn new(sender: S, closed: CloseSignal, origin: Origin) -> Self {
        Self {
            sender,
            closed,
            origin,
            sent: 0,
            opened: Instant::now(),
        }
    }

    fn poll_ready<B>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        S: Sender<B>,
    {
        // The close signal first, so our waker is left with it even when the
        // sender is ready: hyper's HTTP/2 `poll_ready` registers no waker at
        // all, so the close signal is what wakes a parked caller.
        if let Poll::Ready(failed) = self.closed.poll_closed(cx) {
            return Poll::Ready(Err(ConnectionClosed::new(failed).into()));
        }
        self.sender
            .poll_ready(cx)
            .map_err(|err| ConnectionClosed::new(Some(err)).into())
    }

    /// Sends `req`, keeping a copy when a failure could let it be sent
    /// again (see [`Resend`]): on HTTP/2, where a refused stream was not
    /// processed whatever the method, and for an idempotent request on a
    /// reused connection.
    fn call<B>(&mut self, mut req: Request<B>) -> ResponseFuture
    where
        S: Sender<B>,
        B: Body + Send + 'static,
    {
        S::fill_in(&self.origin, &mut req);
        let reused = self.sent > 0 || self.opened.elapsed() >= FRESH;
        self.sent += 1;
        // Unanswered, a request may go again only if idempotent on a reused
        // connection; refused (HTTP/2), whatever it is.
        let again_if_unanswered = reused && replay::idempotent(&req);
        let copy = if S::HTTP2 || again_if_unanswered {
            replay::copy(&req)
        } else {
            None
        };
        let sent = self.sender.try_send(req);
        ResponseFuture::new(async move {
            let mut err = match sent.await {
                Ok(res) => return Ok(res),
                Err(err) => err,
            };
            if let Some(req) = err.take_message() {
                return Err(Resend::unwritten(req, err.into_error()).into());
            }
            let err = err.into_error();
            match (copy, Fate::of(&err)) {
                (Some(copy), Fate::Refused) => Err(Resend::unwritten(copy, err).into()),
                (Some(copy), Fate::Unanswered) if again_if_unanswered => {
                    Err(Resend::unanswered(copy, err).into())
                }
                _ => Err(err.into()),
            }
        })
    }

    fn debug_struct<'a, 'b>(
        &self,
        name: &str,
        f: &'a mut fmt::Formatter<'b>,
    ) -> fmt::DebugStruct<'a, 'b> {
        let mut debug = f.debug_struct(name);
        debug
            .field("target", &self.origin)
            .field("closed", &self.closed.is_closed());
        debug
    }
}

// ===== Sender =====

/// What HTTP/1 and HTTP/2 connections do differently: what a request gets
/// from the target before hyper's sender sends it. Implemented by hyper's
/// senders.
trait Sender<B> {
    const HTTP2: bool;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>>;

    /// Fills in what the protocol needs from the target.
    fn fill_in(origin: &Origin, req: &mut Request<B>);

    /// Sends `req`, or hands it back in the error if it was never written.
    fn try_send(&mut self, req: Request<B>) -> impl Future<Output = Sent<B>> + Send + 'static;
}

/// What hyper's senders answer.
type Sent<B> = Result<Response<Incoming>, TrySendError<Request<B>>>;

impl<B: Body + Send + 'static> Sender<B> for http1::SendRequest<B> {
    const HTTP2: bool = false;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        http1::SendRequest::poll_ready(self, cx)
    }

    fn fill_in(origin: &Origin, req: &mut Request<B>) {
        origin.http1(req);
    }

    fn try_send(&mut self, req: Request<B>) -> impl Future<Output = Sent<B>> + Send + 'static {
        self.try_send_request(req)
    }
}

impl<B: Body + Send + 'static> Sender<B> for http2::SendRequest<B> {
    const HTTP2: bool = true;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        http2::SendRequest::poll_ready(self, cx)
    }

    fn fill_in(origin: &Origin, req: &mut Request<B>) {
        origin.http2(req);
    }

    fn try_send(&mut self, req: Request<B>) -> impl Future<Output = Sent<B>> + Send + 'static {
        self.try_send_request(req)
    }
}

// ===== ResponseFuture =====

/// The response future of [`Http1Connection`] and [`Http2Connection`]:
/// hyper's, boxed because its type has no name. It fails with the
/// [`hyper::Error`] hyper gives, as a [`BoxError`], or, when the request
/// cannot have been processed, with a [`Resend`] that hands it back with
/// hyper's error as its source:
///
/// - hyper gave the request back unwritten (the connection closed before
///   hyper took it), whatever the method;
/// - on HTTP/2, the server refused the stream (`REFUSED_STREAM`), whatever
///   the method, if the body can be sent twice;
/// - the request is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or
///   an `Idempotency-Key` header), the connection is a reused one (it had
///   been sent a request before, or had stood open 1 ms or more before its
///   first, as an eager connection does), the body can be sent twice, and the connection closed before
///   any response arrived (hyper's incomplete-message error, a reset
///   socket, a `GOAWAY`).
///
/// A body can be sent twice when it is plain data: `http_body_util::Empty`
/// or `Full` over [`Bytes`](hyper::body::Bytes), or a `String`. Redial's
/// shared handle sends a handed-back request once more on the next
/// connection; a plain `Reconnect` passes the `Resend` to its caller.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use http::Request;
/// use http_body_util::Empty;
/// use hyper::body::Bytes;
/// use redial::{error::Resend, http::{Http2Connector, ResponseFuture}};
/// use tower::{Service, ServiceExt};
///
/// let mut connection = Http2Connector::new().oneshot("http://127.0.0.1:50051".parse()?).await?;
/// let req = Request::get("/").body(Empty::<Bytes>::new())?;
/// let pending: ResponseFuture = connection.ready().await?.call(req);
/// match pending.await {
///     Ok(res) => println!("{}", res.status()),
///     Err(err) if err.is::<hyper::Error>() => println!("hyper failed: {err}"),
///     Err(err) if err.is::<Resend<Request<Empty<Bytes>>>>() => println!("not processed: {err}"),
///     Err(err) => return Err(err),
/// }
/// # Ok(())
/// # }
/// ```
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>,
}

impl ResponseFuture {
    fn new<F>(fut: F) -> Self
    where
        F: Future<Output = Result<Response<Incoming>, BoxError>> + Send + 'static,
    {
        Self {
            inner: Box::pin(fut),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
