//! What decides whether a failed request may be sent again: whether it is
//! idempotent, whether a copy of it can be kept, and what its error says
//! about whether the server saw it.

use std::{any::Any, error::Error as StdError, io};

use http::{Method, Request};
use http_body_util::{Empty, Full};
use hyper::body::Bytes;

/// RFC 9110 §9.2.2's idempotent methods, or an `Idempotency-Key` header.
pub(super) fn idempotent<B>(req: &Request<B>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || req.headers().contains_key("idempotency-key")
}

/// A copy of `req` to send again, if its body can be sent twice: the body
/// types that are plain data (`Empty<Bytes>`, `Full<Bytes>`, `String`). A
/// streamed body is gone once sent, so its request gets no copy.
pub(super) fn copy<B: 'static>(req: &Request<B>) -> Option<Request<B>> {
    let body = clone_body(req.body())?;
    let mut copy = Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}

/// `body` cloned, if its type is one known to clone as plain data. Without
/// specialisation, a generic body can be cloned only by finding its type at
/// run time.
fn clone_body<B: 'static>(body: &B) -> Option<B> {
    let mut copy: Option<B> = None;
    let slot: &mut dyn Any = &mut copy;
    let _ = clone_as::<Empty<Bytes>>(body, slot)
        || clone_as::<Full<Bytes>>(body, slot)
        || clone_as::<String>(body, slot);
    copy
}

/// Puts a clone of `body` in `slot` if both are of type `T`.
fn clone_as<T: Clone + 'static>(body: &dyn Any, slot: &mut dyn Any) -> bool {
    match (body.downcast_ref::<T>(), slot.downcast_mut::<Option<T>>()) {
        (Some(body), Some(slot)) => {
            *slot = Some(body.clone());
            true
        }
        _ => false,
    }
}

/// What a request's error says about whether the server processed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// The server refused it unprocessed (HTTP/2 `REFUSED_STREAM`, which
    /// RFC 9113 §8.7 guarantees was not processed).
    Refused,
    /// The connection closed before any byte of the response arrived: the
    /// server may or may not have seen it.
    Unanswered,
    /// Anything else: the server may have answered it in part.
    Other,
}

impl Fate {
    pub(super) fn of(err: &hyper::Error) -> Self {
        if let Some(h2) = find::<h2::Error>(err) {
            return if h2.is_reset()
                && h2.is_remote()
                && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
            {
                Self::Refused
            } else if (h2.is_go_away() && h2.is_remote()) || h2.is_io() {
                Self::Unanswered
            } else {
                Self::Other
            };
        }
        // hyper's "connection closed before message completed", a request
        // hyper cancelled or dropped with its connection (a stream waiting
        // to open when a `GOAWAY` came; hyper has no accessor for this
        // one), or the socket reset before a response.
        if err.is_incomplete_message()
            || err.is_canceled()
            || (err.is_user() && err.to_string() == "dispatch task is gone")
        {
            return Self::Unanswered;
        }
        match find::<io::Error>(err).map(io::Error::kind) {
            Some(
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof,
            ) => Self::Unanswered,
            _ => Self::Other,
        }
    }
}

/// The first error of type `E` in `err`'s source chain, `err` included.
fn find<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_and_the_idempotency_key() {
        for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            let req = Request::builder().method(method).body(()).unwrap();
            assert!(idempotent(&req), "{method}");
        }
        for method in ["POST", "PATCH", "CONNECT"] {
            let req = Request::builder().method(method).body(()).unwrap();
            assert!(!idempotent(&req), "{method}");
        }
        let keyed = Request::post("/")
            .header("Idempotency-Key", "8e03978e")
            .body(())
            .unwrap();
        assert!(idempotent(&keyed));
    }

    #[test]
    fn plain_data_bodies_are_copied_with_the_whole_head() {
        let req = Request::put("http://example.com/a?b")
            .header("x-id", "7")
            .extension(5_u8)
            .body(Full::new(Bytes::from_static(b"body")))
            .unwrap();
        let copied = copy(&req).expect("Full<Bytes> is copied");
        assert_eq!(copied.method(), req.method());
        assert_eq!(copied.uri(), req.uri());
        assert_eq!(copied.version(), req.version());
        assert_eq!(copied.headers(), req.headers());
        assert_eq!(copied.extensions().get::<u8>(), Some(&5));
        assert_eq!(format!("{:?}", copied.body()), format!("{:?}", req.body()));

        assert!(copy(&Request::new(Empty::<Bytes>::new())).is_some());
        assert_eq!(copy(&Request::new(String::from("s"))).unwrap().body(), "s");
    }

    #[test]
    fn streamed_bodies_are_not_copied() {
        let stream = http_body_util::StreamBody::new(futures_util::stream::empty::<
            Result<hyper::body::Frame<Bytes>, std::io::Error>,
        >());
        assert!(copy(&Request::new(stream)).is_none());
        assert!(copy(&Request::new(Full::new(&b"not Bytes"[..]))).is_none());
    }
}
