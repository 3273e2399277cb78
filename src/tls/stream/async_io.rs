//! The stream as tokio sees it: reads hand out decrypted records, writes are encrypted and
//! sent without holding more than a bounded amount.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Close, MAX_OUTGOING, MAX_WRITE, Reached, ServerTls};

impl AsyncRead for ServerTls {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.read_plain(buf) {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let reached = this.process(&mut None, Some(buf))?;
            // Handshake messages (a key update's answer) and alerts go out as they come.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            if buf.filled().len() > before || this.taken < this.plain.len() {
                return Poll::Ready(Ok(()));
            }
            // The end: after close_notify, or when the TCP stream ended (a message cut short
            // there is for hyper's framing to notice).
            if reached == Reached::Closed || this.peer_closed || this.eof {
                return Poll::Ready(Ok(()));
            }
            match this.poll_fill(cx) {
                Poll::Pending => {
                    this.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(r) => r?,
            }
        }
    }
}

impl AsyncWrite for ServerTls {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.outgoing.len() - this.sent > MAX_OUTGOING {
            ready!(this.poll_send(cx))?;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let part = &buf[..buf.len().min(MAX_WRITE)];
        let mut write = Some(part);
        let had = this.plain.len() - this.taken;
        let reached = this.process(&mut write, None)?;
        if this.plain.len() - this.taken > had
            && let Some(w) = this.reader.take()
        {
            // Records that came before the write's turn are decrypted now: the reader may go on.
            w.wake();
        }
        if write.is_some() {
            let why = if reached == Reached::Closed { "TLS connection closed" } else { "TLS handshake not complete" };
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, why)));
        }
        // Sent as far as the socket takes it now; the rest by the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(part.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.close == Close::NotAsked {
            this.close = Close::Asked;
            // A connection that already failed has nothing more to say: the TCP stream closes.
            let _ = this.process(&mut None, None);
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
