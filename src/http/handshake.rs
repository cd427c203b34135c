use std::future::Future;

use hyper::{
    body::Body,
    client::conn::{http1, http2},
    rt::{Read, Write},
};
use tokio::runtime::Handle;
use tower::BoxError;

use super::{
    close::{CloseSignal, ConnectionClosed},
    connection::{Http1Connection, Http2Connection},
    executor::BoxedExecutor,
    origin::Origin,
    ping::Pings,
    preface::Preface,
};

/// What HTTP/1 and HTTP/2 do differently once the I/O is dialled: hyper's
/// handshake, what follows it, and the connection it gives. Implemented by
/// hyper's builders, for the body types each protocol takes.
pub(crate) trait Handshake<B>: Clone + Send + 'static {
    type Connection;

    /// Does the handshake over `io` and spawns the task that drives the
    /// connection on `runtime`.
    fn connect<I>(
        self,
        io: I,
        runtime: &Handle,
        origin: Origin,
    ) -> impl Future<Output = Result<Self::Connection, BoxError>> + Send
    where
        I: Read + Write + Unpin + Send + 'static;
}

impl<B> Handshake<B> for http1::Builder
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Connection = Http1Connection<B>;

    async fn connect<I>(
        self,
        io: I,
        runtime: &Handle,
        origin: Origin,
    ) -> Result<Http1Connection<B>, BoxError>
    where
        I: Read + Write + Unpin + Send + 'static,
    {
        let (sender, conn) = self.handshake::<_, B>(io).await?;
        let closed = CloseSignal::spawn(runtime, conn, |_| ());
        Ok(Http1Connection::new(sender, closed, origin))
    }
}

/// What an HTTP/2 attempt needs once the I/O is dialled: hyper's settings,
/// and redial's keep-alive pings, which set hyper's up afresh for each
/// connection (the interval may have grown since the last one).
#[derive(Clone, Debug)]
pub(crate) struct Http2Settings {
    hyper: http2::Builder<BoxedExecutor>,
    pings: Option<Pings>,
}

impl Http2Settings {
    pub(crate) fn new() -> Self {
        Self {
            hyper: http2::Builder::new(BoxedExecutor::new()),
            pings: None,
        }
    }

    pub(crate) fn set_hyper(&mut self, builder: http2::Builder<BoxedExecutor>) {
        self.hyper = builder;
    }

    pub(crate) fn set_pings(&mut self, pings: Pings) {
        self.pings = Some(pings);
    }

    pub(crate) fn pings(&self) -> Option<&Pings> {
        self.pings.as_ref()
    }
}

impl<B> Handshake<B> for Http2Settings
where
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Connection = Http2Connection<B>;

    async fn connect<I>(
        self,
        io: I,
        runtime: &Handle,
        origin: Origin,
    ) -> Result<Http2Connection<B>, BoxError>
    where
        I: Read + Write + Unpin + Send + 'static,
    {
        let Self {
            hyper: mut builder,
            pings,
        } = self;
        // The interval is read at each dial, so a connection dialled after
        // a "too many pings" pings less often.
        let pings = pings.map(|pings| {
            let interval = pings.apply(&mut builder);
            (pings, interval)
        });
        let (io, spoke) = Preface::new(io);
        let (sender, conn) = builder.handshake::<_, B>(io).await?;
        let mut closed = CloseSignal::spawn(runtime, conn, move |err| {
            if let Some((pings, interval)) = pings {
                pings.failed(interval, err);
            }
        });
        // The handshake returns before the server has said anything: wait
        // for its preface, so a peer that never speaks HTTP/2 fails the
        // attempt (by the connect timeout) rather than looking connected.
        if spoke.await.is_err() {
            let failed = std::future::poll_fn(|cx| closed.poll_closed(cx)).await;
            return Err(ConnectionClosed::new(failed).into());
        }
        Ok(Http2Connection::new(sender, closed, origin))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    use super::*;

    /// A connection dialled with userinfo in its target, a credential, does
    /// not print it.
    #[tokio::test]
    async fn connection_debug_leaves_out_userinfo() {
        let (io, _server) = tokio::io::duplex(64);
        let origin = Origin::new(&"http://user:token@127.0.0.1:1/".parse().unwrap());
        let connection: Http1Connection<Empty<Bytes>> = http1::Builder::new()
            .connect(TokioIo::new(io), &Handle::current(), origin)
            .await
            .unwrap();
        let debug = format!("{connection:?}");
        assert!(!debug.contains("token"), "{debug}");
        assert!(debug.contains("127.0.0.1:1"), "{debug}");
    }
}
