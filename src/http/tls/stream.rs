use std::{
    fmt, io,
    pin::Pin,
    task::{Context, Poll},
};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use rustls::ClientConnection;

/// A TLS connection over the I/O `I`, as
/// [`TlsConnector`](super::TlsConnector) returns it: a hyper I/O type
/// (`hyper::rt::Read + Write`).
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub struct TlsStream<I> {
    inner: TokioIo<tokio_rustls::client::TlsStream<TokioIo<I>>>,
}

impl<I> TlsStream<I> {
    pub(super) fn new(stream: tokio_rustls::client::TlsStream<TokioIo<I>>) -> Self {
        Self {
            inner: TokioIo::new(stream),
        }
    }

    /// The I/O underneath, and rustls's side of the connection: what was
    /// negotiated (`alpn_protocol()`, `protocol_version()`), and the
    /// server's certificates.
    pub fn get_ref(&self) -> (&I, &ClientConnection) {
        let (io, tls) = self.inner.inner().get_ref();
        (io.inner(), tls)
    }
}

impl<I: Read + Write + Unpin> Read for TlsStream<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: Read + Write + Unpin> Write for TlsStream<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}

impl<I> fmt::Debug for TlsStream<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (_, tls) = self.get_ref();
        f.debug_struct("TlsStream")
            .field("version", &tls.protocol_version())
            .field("alpn", &tls.alpn_protocol().map(String::from_utf8_lossy))
            .finish_non_exhaustive()
    }
}
