//! The steady path that `tests/alloc.rs` and `tests/memory.rs` measure: a
//! connection that echoes each request at once, its make service, and a
//! request polled by hand with no executor.

use std::{
    convert::Infallible,
    fmt,
    future::{ready, Future, Ready},
    pin::pin,
    task::{Context, Poll},
};

use tower::{service_fn, util::ServiceFn, Service};

/// A connection that answers every request at once with the request.
pub type Echo = ServiceFn<fn(u64) -> Ready<Result<u64, Infallible>>>;

/// A make service whose future is `std::future::Ready` (`Unpin`, as
/// `tower::reconnect` requires), handing out an `Echo`.
pub type MakeEcho = ServiceFn<fn(()) -> Ready<Result<Echo, Infallible>>>;

pub fn make_echo() -> MakeEcho {
    service_fn(|()| ready(Ok(service_fn(|x| ready(Ok(x))))))
}

/// The connecting `Reconnect` arms a tokio timer, which needs a runtime.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// One request as the overhead bench makes it: `poll_ready`, `call`, and one
/// poll of the response future, with the caller's waker and no executor.
pub fn request<S>(svc: &mut S, cx: &mut Context<'_>, req: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: fmt::Debug,
{
    let Poll::Ready(Ok(())) = svc.poll_ready(cx) else {
        panic!("service not ready");
    };
    match pin!(svc.call(req)).poll(cx) {
        Poll::Ready(Ok(res)) => res,
        Poll::Ready(Err(err)) => panic!("request failed: {err:?}"),
        Poll::Pending => panic!("response future of a no-op service is pending"),
    }
}
