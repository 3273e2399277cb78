//! The listeners' side of a TLS connection, on rustls's unbuffered API: this stream owns the
//! buffers, and holds them only while they hold bytes.
//!
//! rustls's buffered connection keeps a 4 KB read buffer for as long as it lives, whatever the
//! connection does; with 1,000 idle police terminals that buffer alone is 4 MB. Here the TLS
//! bytes read and not yet processed, the TLS bytes not yet sent and the plaintext not yet read
//! live in buffers of this stream that are freed as soon as they are empty, and read room is
//! taken only once the socket is readable: a connection waiting for its client's next request
//! holds no buffer at all. Reads take up to one full TLS record at a time, into room that is not
//! zeroed first.
//!
//! Limits: no early data (the listeners do not offer it), and `is_write_vectored` is false
//! (hyper then gathers headers and body into one write, so one TLS record carries both).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::BufMut;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus};
use rustls::{CommonState, ServerConfig};
use tokio::io::{AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

mod async_io;

/// Room for one whole TLS record (16 KB of plaintext and the most a record may add) per read.
const READ_SIZE: usize = 16 * 1024 + 5 + 256;
/// The most TLS bytes held unprocessed: a handshake message may span records up to 64 KB (as
/// rustls's own limit); application records are at most [`READ_SIZE`].
const MAX_INCOMING: usize = 0x1_0000 + READ_SIZE;
/// Plaintext taken per write: larger writes are taken in parts.
const MAX_WRITE: usize = 64 * 1024;
/// TLS bytes waiting to be sent above which a write waits for the socket first.
const MAX_OUTGOING: usize = 64 * 1024;

/// A server-side TLS stream over TCP whose handshake is complete.
pub struct ServerTls {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// TLS bytes read: `incoming[start..]` are not yet processed.
    incoming: Vec<u8>,
    start: usize,
    /// TLS bytes to send: `outgoing[sent..]`.
    outgoing: Vec<u8>,
    sent: usize,
    /// Plaintext decrypted and not yet read: `plain[taken..]`.
    plain: Vec<u8>,
    taken: usize,
    /// The peer sent close_notify; once `plain` is read, reads see the end.
    peer_closed: bool,
    /// The TCP stream ended.
    eof: bool,
    /// Our close_notify: asked for by a shutdown, queued by `process` at the traffic state.
    close: Close,
    /// The task waiting to read, woken when a write's processing decrypted data for it.
    reader: Option<Waker>,
}

/// Where our close_notify is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Close {
    NotAsked,
    Asked,
    Queued,
}

/// What processing the TLS bytes at hand reached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reached {
    /// More TLS bytes from the peer are needed to go on.
    NeedInput,
    /// Application data may be sent (and `plain` holds what was received).
    Traffic,
    /// Both sides sent close_notify.
    Closed,
}

impl ServerTls {
    /// Runs the server side of a TLS handshake on `tcp`.
    ///
    /// # Errors
    /// An `InvalidData` error wrapping the [`rustls::Error`] when the handshake fails (after the
    /// alert is sent, best effort); `UnexpectedEof` when the client closes during it.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<ServerTls> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut s = ServerTls {
            tcp,
            conn,
            incoming: Vec::new(),
            start: 0,
            outgoing: Vec::new(),
            sent: 0,
            plain: Vec::new(),
            taken: 0,
            peer_closed: false,
            eof: false,
            close: Close::NotAsked,
            reader: None,
        };
        loop {
            let reached = s.process(&mut None, None)?;
            std::future::poll_fn(|cx| s.poll_send(cx)).await?;
            match reached {
                Reached::Traffic if !s.conn.is_handshaking() => return Ok(s),
                Reached::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
                Reached::Traffic | Reached::NeedInput => {
                    std::future::poll_fn(|cx| s.poll_fill(cx)).await?;
                    if s.eof {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the TLS handshake"));
                    }
                }
            }
        }
    }

    /// The TLS state: the peer's certificates, the protocol ALPN chose.
    pub fn connection(&self) -> &CommonState {
        &self.conn
    }

    /// The TCP stream (to wait for it to become readable).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Processes the TLS bytes at hand until more input is needed or application data may be
    /// sent: decrypted data goes to `dst` while it has room, the rest to `plain`; handshake
    /// messages and alerts to `outgoing`. In the traffic state, `write` (taken) is encrypted
    /// into `outgoing`, and close_notify is queued when a shutdown asked for it.
    fn process(&mut self, write: &mut Option<&[u8]>, mut dst: Option<&mut ReadBuf<'_>>) -> io::Result<Reached> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming[self.start..]);
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    // Let the alert rustls queued for the peer out, then fail.
                    self.discard(discard);
                    self.queue_alerts();
                    return Err(tls_error(e));
                }
            };
            let reached = match state {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        take_plaintext(record.payload, &mut dst, &mut self.plain, &mut self.taken);
                    }
                    None
                }
                // The listeners' configurations accept no early data: rustls never gets here.
                ConnectionState::ReadEarlyData(_) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS early data, which is not accepted"));
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    encode_into(&mut self.outgoing, &mut e);
                    None
                }
                // The bytes are in `outgoing`, which is sent in order before anything later.
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Reached::NeedInput),
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    None
                }
                ConnectionState::Closed => Some(Reached::Closed),
                ConnectionState::WriteTraffic(mut w) => {
                    if self.close == Close::Asked {
                        encrypt_into(&mut self.outgoing, |out| w.queue_close_notify(out))?;
                        self.close = Close::Queued;
                    }
                    if let Some(data) = write.take() {
                        encrypt_into(&mut self.outgoing, |out| w.encrypt(data, out))?;
                    }
                    Some(Reached::Traffic)
                }
                _ => return Err(io::Error::other("unexpected TLS connection state")),
            };
            self.discard(discard);
            if let Some(r) = reached {
                return Ok(r);
            }
        }
    }

    /// Marks the next `n` bytes of `incoming` processed; an emptied buffer is freed.
    fn discard(&mut self, n: usize) {
        self.start += n;
        if self.start == self.incoming.len() {
            self.incoming = Vec::new();
            self.start = 0;
        }
    }

    /// After a TLS error: encodes what rustls queued for the peer (its alert) and sends what
    /// the socket takes at once.
    fn queue_alerts(&mut self) {
        for _ in 0..4 {
            // The same bytes as before: rustls may still hold places in them.
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.incoming[self.start..]);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut e)) => encode_into(&mut self.outgoing, &mut e),
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                _ => break,
            }
            self.discard(discard);
        }
        while self.sent < self.outgoing.len() {
            match self.tcp.try_write(&self.outgoing[self.sent..]) {
                Ok(n) if n > 0 => self.sent += n,
                _ => break,
            }
        }
    }

    /// Reads what the socket has into `incoming`, at most one full record's room at a time; a
    /// read of nothing marks the end of the stream. The room is taken once the socket is
    /// readable, and not written before the socket fills it.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let pending = self.incoming.len() - self.start;
        if pending >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS message over 64 KB")));
        }
        let room = READ_SIZE.min(MAX_INCOMING - pending);
        // Room is taken only once the socket is readable.
        ready!(self.tcp.poll_read_ready(cx))?;
        if self.incoming.capacity() - self.incoming.len() < room {
            // Processed bytes are moved out of the way only when room runs out.
            self.incoming.drain(..self.start);
            self.start = 0;
            self.incoming.reserve_exact(room);
        }
        // Through `AsyncRead` rather than `try_read_buf`: a read that does not fill the room
        // tells tokio the socket is drained, which saves a read that would only say
        // "would block" after every message.
        let mut limited = (&mut self.incoming).limit(room);
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.tcp), cx, &mut limited);
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        if ready!(read)? == 0 {
            self.eof = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Sends `outgoing` until it is empty.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Copies plaintext already decrypted into `buf`; true when there was some.
    fn read_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.taken == self.plain.len() {
            return false;
        }
        let n = (self.plain.len() - self.taken).min(buf.remaining());
        buf.put_slice(&self.plain[self.taken..self.taken + n]);
        self.taken += n;
        if self.taken == self.plain.len() {
            self.plain = Vec::new();
            self.taken = 0;
        }
        true
    }
}

/// Hands a decrypted record to the reader's buffer while it has room, the rest to `plain`.
fn take_plaintext(mut payload: &[u8], dst: &mut Option<&mut ReadBuf<'_>>, plain: &mut Vec<u8>, taken: &mut usize) {
    if let Some(d) = dst.as_mut()
        && *taken == plain.len()
    {
        let n = payload.len().min(d.remaining());
        d.put_slice(&payload[..n]);
        payload = &payload[n..];
    }
    if !payload.is_empty() {
        if *taken == plain.len() {
            plain.clear();
            *taken = 0;
        }
        plain.extend_from_slice(payload);
    }
}

/// Appends to `out` what `encrypt` writes into room at its end, growing the room until the
/// result fits.
fn encrypt_into(
    out: &mut Vec<u8>,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<()> {
    let at = out.len();
    loop {
        match encrypt(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(s)) => out.resize(at + s.required_size, 0),
            Err(e) => {
                out.truncate(at);
                return Err(io::Error::other(e));
            }
        }
    }
}

/// Appends the handshake or alert record rustls has ready to `out`, growing it as needed.
fn encode_into<Data>(out: &mut Vec<u8>, e: &mut EncodeTlsData<'_, Data>) {
    let at = out.len();
    loop {
        match e.encode(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return;
            }
            Err(EncodeError::InsufficientSize(s)) => out.resize(at + s.required_size, 0),
            Err(EncodeError::AlreadyEncoded) => {
                out.truncate(at);
                return;
            }
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsConnector;

    use super::*;
    use crate::gateway::config::ListenerConfig;
    use crate::keys::KeyRef;

    impl ServerTls {
        /// Bytes of buffer the stream holds.
        fn held(&self) -> usize {
            self.incoming.capacity() + self.outgoing.capacity() + self.plain.capacity()
        }
    }

    fn pki() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        crate::cli::dev_pki::generate(dir.path(), crate::cli::dev_pki::Ports::default()).unwrap();
        dir
    }

    fn server_config(dir: &Path, tls12: bool) -> Arc<ServerConfig> {
        let l = ListenerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            public_url: None,
            cert: dir.join("gateway/police-side.pem"),
            key: KeyRef::File(dir.join("gateway/police-side.key")),
            client_ca: dir.join("ca/police-ca.pem"),
            crls: vec![dir.join("ca/police-ca.crl.pem")],
            crl_expired: crate::tls::crl::ExpiredCrl::Refuse,
            tls12,
            handshake_timeout_ms: 5000,
            max_connections: 16,
            max_connections_per_source: 16,
            max_connections_per_client: 16,
            request_timeout_ms: 5000,
        };
        super::super::server_config(&l.server_tls(), l.key.file_key().unwrap()).unwrap()
    }

    /// A rustls client: `who` names the certificate under clients/ (none without), TLS 1.2
    /// only when asked.
    fn connector(dir: &Path, who: Option<&str>, tls12: bool) -> TlsConnector {
        let versions: &[&rustls::SupportedProtocolVersion] =
            if tls12 { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
        let builder = rustls::ClientConfig::builder_with_provider(super::super::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(super::super::root_store(&dir.join("ca/police-ca.pem")).unwrap());
        let mut cfg = match who {
            Some(who) => {
                let certs = super::super::load_certs(&dir.join(format!("clients/{who}.pem"))).unwrap();
                let key = super::super::load_key(&dir.join(format!("clients/{who}.key"))).unwrap();
                builder.with_client_auth_cert(certs, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(cfg))
    }

    /// A listener on 127.0.0.1 whose first connection is handed to `serve`.
    async fn one_connection<F, Fut>(config: Arc<ServerConfig>, serve: F) -> (u16, tokio::task::JoinHandle<Fut::Output>)
    where
        F: FnOnce(io::Result<ServerTls>) -> Fut + Send + 'static,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            serve(ServerTls::accept(tcp, config).await).await
        });
        (port, task)
    }

    async fn connect(
        port: u16,
        c: &TlsConnector,
    ) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        c.connect(ServerName::try_from("localhost").unwrap(), tcp).await
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    const SIZES: [usize; 6] = [1, 3000, 16_384, 16_385, 50_000, 200_000];

    /// Echoes messages of [`SIZES`], one after the other; after each the stream holds no buffer.
    async fn echo(s: io::Result<ServerTls>) -> Vec<usize> {
        let mut s = s.unwrap();
        assert_eq!(s.connection().alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut held = Vec::new();
        for n in SIZES {
            let mut buf = vec![0; n];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            s.flush().await.unwrap();
            held.push(s.held());
        }
        held
    }

    async fn round_trips(tls12: bool) {
        let dir = pki();
        let (port, server) = one_connection(server_config(dir.path(), tls12), echo).await;
        let mut c = connect(port, &connector(dir.path(), Some("officer"), tls12)).await.unwrap();
        for (i, n) in SIZES.into_iter().enumerate() {
            let sent = pattern(n, i as u8);
            c.write_all(&sent).await.unwrap();
            c.flush().await.unwrap();
            let mut back = vec![0; n];
            c.read_exact(&mut back).await.unwrap();
            assert!(back == sent, "{n} bytes came back changed");
        }
        assert_eq!(server.await.unwrap(), vec![0; SIZES.len()], "buffers held between messages");
    }

    #[tokio::test]
    async fn messages_of_every_size_go_both_ways_and_leave_no_buffer_held_tls13() {
        round_trips(false).await;
    }

    #[tokio::test]
    async fn messages_of_every_size_go_both_ways_and_leave_no_buffer_held_tls12() {
        round_trips(true).await;
    }

    /// Records that arrive before a write are decrypted by it and kept, in order, for the
    /// reader.
    #[tokio::test]
    async fn a_write_keeps_records_that_came_before_it_for_the_reader() {
        let dir = pki();
        let (port, server) = one_connection(server_config(dir.path(), false), |s| async move {
            let mut s = s.unwrap();
            let mut first = [0u8; 1];
            s.read_exact(&mut first).await.unwrap();
            // The client's next 60 KB are on their way or here; writing processes them.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            s.write_all(b"answer").await.unwrap();
            s.flush().await.unwrap();
            let mut rest = vec![0; 60_000];
            s.read_exact(&mut rest).await.unwrap();
            rest
        })
        .await;
        let mut c = connect(port, &connector(dir.path(), Some("officer"), false)).await.unwrap();
        let sent = pattern(60_000, 7);
        c.write_all(b"x").await.unwrap();
        c.write_all(&sent).await.unwrap();
        c.flush().await.unwrap();
        let mut answer = [0u8; 6];
        c.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
        assert!(server.await.unwrap() == sent);
    }

    /// close_notify each way: the other side reads a clean end, not a cut-off stream.
    #[tokio::test]
    async fn close_notify_ends_the_stream_cleanly_each_way() {
        let dir = pki();
        let (port, server) = one_connection(server_config(dir.path(), false), |s| async move {
            let mut s = s.unwrap();
            let mut buf = Vec::new();
            let n = s.read_to_end(&mut buf).await.unwrap();
            s.write_all(b"bye").await.unwrap();
            s.shutdown().await.unwrap();
            n
        })
        .await;
        let mut c = connect(port, &connector(dir.path(), Some("officer"), false)).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"bye");
        assert_eq!(server.await.unwrap(), 5);
    }

    /// A refused handshake reports rustls's error (the listener's reason for it) and the
    /// client gets the alert.
    #[tokio::test]
    async fn refused_handshakes_carry_the_reason_and_send_the_alert() {
        let dir = pki();
        for (who, reason) in [(None, "no_certificate"), (Some("revoked"), "revoked"), (Some("untrusted"), "untrusted")]
        {
            let (port, server) = one_connection(server_config(dir.path(), false), |s| async move {
                s.map(|_| ()).map_err(|e| crate::tls::handshake_failure_reason(&e))
            })
            .await;
            let client = async {
                let mut c = connect(port, &connector(dir.path(), who, false)).await?;
                // TLS 1.3: the client learns of the refusal when it next reads.
                c.write_all(b"x").await?;
                let mut b = [0u8; 1];
                c.read_exact(&mut b).await.map(|_| ())
            };
            let err = client.await.expect_err("refused client got through");
            assert!(err.to_string().contains("alert"), "{who:?}: {err}");
            assert_eq!(server.await.unwrap(), Err(reason), "{who:?}");
        }
    }

    #[tokio::test]
    async fn a_client_gone_during_the_handshake_is_told_apart() {
        let dir = pki();
        let (port, server) = one_connection(server_config(dir.path(), false), |s| async move {
            s.map(|_| ()).map_err(|e| crate::tls::handshake_failure_reason(&e))
        })
        .await;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        drop(tcp);
        assert_eq!(server.await.unwrap(), Err("closed"));
    }
}
