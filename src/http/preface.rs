use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use hyper::rt::{Read, ReadBuf, ReadBufCursor, Write};
use tokio::sync::oneshot;

/// The connection's I/O, telling the connect attempt when the server has
/// spoken.
///
/// h2's client handshake only queues our preface; it does not wait for the
/// server's, so a peer that accepts TCP and never speaks HTTP/2 would look
/// connected. An HTTP/2 server's first bytes are its preface (a `SETTINGS`
/// frame, which h2 then checks), so the attempt waits for them, inside the
/// connect timeout, before it hands out the connection.
pub(crate) struct Preface<I> {
    io: I,
    /// `None` once the server has spoken. Dropped with the connection, which
    /// tells a waiting attempt that the server never spoke.
    spoke: Option<oneshot::Sender<()>>,
}

impl<I> Preface<I> {
    /// The wrapped I/O, and what resolves `Ok` once the server has sent its
    /// first bytes, or `Err` if the connection ended first.
    pub(crate) fn new(io: I) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                io,
                spoke: Some(tx),
            },
            rx,
        )
    }
}

impl<I: Read + Unpin> Read for Preface<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.spoke.is_none() || buf.remaining() == 0 {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        // Until the server speaks, read through a small buffer of our own to
        // see whether any bytes came; after that, straight through.
        let mut raw = [0; 64];
        let len = raw.len().min(buf.remaining());
        let mut first = ReadBuf::new(&mut raw[..len]);
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, first.unfilled()))?;
        if !first.filled().is_empty() {
            if let Some(spoke) = this.spoke.take() {
                let _ = spoke.send(());
            }
        }
        buf.put_slice(first.filled());
        Poll::Ready(Ok(()))
    }
}

impl<I: Write + Unpin> Write for Preface<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}
