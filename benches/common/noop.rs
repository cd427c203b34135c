//! The no-op connection the in-process benches measure against, and the
//! make service that hands it out, so that every bench times the same
//! connection: `service_fn(|x: u64| ready(Ok(x)))`.
//!
//! `benches/overhead.rs`, `benches/shared.rs` and `benches/fanout.rs`
//! include it with `#[path = "common/noop.rs"] mod noop;`. It lives in a
//! subfolder without a `main.rs`, so cargo does not build it as a bench of
//! its own.

use std::{
    convert::Infallible,
    future::{ready, Ready},
};

use tower::{service_fn, Service};

/// What the benches need of the connection. A trait, so that [`make`] can
/// say what it hands out: the type of a closure cannot be written down.
pub(crate) trait Connection:
    Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>>
    + Send
    + 'static
{
}

impl<S> Connection for S where
    S: Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>>
        + Send
        + 'static
{
}

/// The connection: answers every request at once with the request.
pub(crate) fn connection() -> impl Connection {
    service_fn(|x: u64| ready(Ok::<_, Infallible>(x)))
}

/// The make service: a [`connection`] at once. Its future is
/// `std::future::Ready`, which is `Unpin` as tower's `Reconnect` requires.
pub(crate) fn make(
) -> impl Service<(), Response = impl Connection, Error = Infallible, Future: Unpin + Send + 'static>
       + Send
       + 'static {
    service_fn(|(): ()| ready(Ok::<_, Infallible>(connection())))
}
