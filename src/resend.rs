//! [`Resend`]: a request a connection hands back, to be sent on the next one.

use std::{
    error::Error,
    fmt,
    sync::{Mutex, PoisonError},
};

use tower::BoxError;

/// A request a connection hands back because it cannot have been
/// processed: the connection's response future fails with this error, and
/// redial's shared handle ([`Shared`](crate::Shared)) sends the request again
/// on the next connection, once. A plain [`Reconnect`](crate::Reconnect)
/// cannot (it has handed the response future to the caller), so the caller
/// gets this error and can take the request back with
/// [`into_request`](Self::into_request).
///
/// There are two cases, and a connection must hand a request back only in
/// them (redial's `http` connections follow these rules exactly):
///
/// - [**unwritten**](Self::unwritten): no byte of the request reached the
///   connection, e.g. the connection was found closed before the request
///   was handed to it (gRPC's transparent retry, hyper-util's
///   `retry_canceled_requests`), or the server refused it unprocessed
///   (HTTP/2 `REFUSED_STREAM`). Sent again whatever the method.
/// - [**unanswered**](Self::unanswered): the request was written on a
///   connection that had already served a request, it is idempotent, and
///   the connection closed before any byte of the response arrived: the
///   race with a server closing an idle connection (Go's net/http
///   `shouldRetryRequest`). The connection hands back a copy it kept.
///
/// Its [`source`](Error::source) is the connection's own error, and its
/// message says which case it is. A request is sent at most twice: when
/// one handed back once is handed back again, `Shared` gives the caller
/// this error too. So a caller that gets a `Resend` holds a request that
/// was not processed, or that is safe to send again, and can send it
/// again itself ([`into_request`](Self::into_request)); any other error of
/// a request that reached a connection means it may have been processed.
///
/// # Examples
///
/// A connection of your own, handing a request back when it finds its
/// socket closed before writing:
///
/// ```
/// use redial::error::Resend;
///
/// fn send(open: bool, request: String) -> Result<String, tower::BoxError> {
///     if !open {
///         let closed = std::io::Error::from(std::io::ErrorKind::NotConnected);
///         return Err(Resend::unwritten(request, closed).into());
///     }
///     Ok(format!("sent {request}"))
/// }
///
/// let err = send(false, "ping".into()).unwrap_err();
/// let resend = err.downcast::<Resend<String>>().unwrap();
/// assert!(resend.is_unwritten());
/// assert_eq!(resend.into_request(), "ping");
/// ```
pub struct Resend<Req> {
    // A mutex only so that the error is `Sync` whatever the request is, as
    // a `BoxError` must be; it is never locked while shared.
    request: Mutex<Req>,
    unwritten: bool,
    source: BoxError,
}

impl<Req> Resend<Req> {
    /// No byte of `request` was written: it may be sent again whatever its
    /// method. `error` is why the connection could not send it.
    pub fn unwritten(request: Req, error: impl Into<BoxError>) -> Self {
        Self::new(request, true, error.into())
    }

    /// `request` is idempotent and was written on a connection that had
    /// already served a request, which closed before any byte of the
    /// response arrived. `request` is a copy the connection kept; `error`
    /// is the connection's.
    pub fn unanswered(request: Req, error: impl Into<BoxError>) -> Self {
        Self::new(request, false, error.into())
    }

    fn new(request: Req, unwritten: bool, source: BoxError) -> Self {
        Self {
            request: Mutex::new(request),
            unwritten,
            source,
        }
    }

    /// `true` if no byte of the request was written; `false` if it was
    /// written and left unanswered.
    pub fn is_unwritten(&self) -> bool {
        self.unwritten
    }

    /// The request, to send again.
    pub fn into_request(self) -> Req {
        self.request
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The request and the connection's error.
    pub fn into_parts(self) -> (Req, BoxError) {
        let source = self.source;
        let request = self
            .request
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        (request, source)
    }

    /// The connection's error.
    pub fn into_error(self) -> BoxError {
        self.source
    }
}

impl<Req> fmt::Debug for Resend<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resend")
            .field("unwritten", &self.unwritten)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<Req> fmt::Display for Resend<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unwritten {
            f.write_str("request not sent: the connection could not take it")
        } else {
            f.write_str("request unanswered: the connection closed before the response")
        }
    }
}

impl<Req: Send + 'static> Error for Resend<Req> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}
