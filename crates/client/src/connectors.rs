//! tokio-xmpp server connectors that switch Nagle's algorithm off, and whose connection can be
//! cut on purpose ([`Severer`]).
//!
//! tokio-xmpp's own connectors leave it on. A call is set up by a burst of small stanzas in both
//! directions (accept + proceed, session-initiate, its IQ result, session-accept…); with Nagle
//! on, a stanza written while the previous one is unacknowledged waits for the peer's delayed
//! ACK, typically 40 ms on Linux, several times per call. The behaviour is otherwise that of
//! tokio-xmpp's plaintext, STARTTLS and direct-TLS connectors, through its public API.
//!
//! When the host's addresses change (Wi-Fi to mobile), the TCP connection to the server is
//! dead, but nothing says so until tokio-xmpp's read timeout, minutes later; a call's ICE
//! restart needs the connection now. [`Severer::sever`] makes the current connection fail at
//! once, so that the stanza stream reconnects (and resumes, with XEP-0198) right away, as
//! Conversations does on a network change.

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use sasl::common::ChannelBinding;
use tokio::io::{AsyncRead, AsyncWrite, BufStream, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_xmpp::connect::tls_common::{TlsStream, establish_tls_connection};
use tokio_xmpp::connect::{DnsConfig, ServerConnector, starttls::starttls};
use tokio_xmpp::error::ProtocolError;
use tokio_xmpp::xmlstream::{PendingFeaturesRecv, StreamHeader, Timeouts, initiate_stream};
use xmpp_parsers::jid::Jid;

/// Cuts the connector's current connection ([`Severer::sever`]); clones share it.
#[derive(Debug, Clone, Default)]
pub struct Severer(Arc<Mutex<CancellationToken>>);

impl Severer {
    /// Makes the current connection fail now: its reads and writes return
    /// `ConnectionAborted`, and the stanza stream reconnects. Connections made later are not
    /// affected.
    pub fn sever(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).cancel();
    }

    /// A token for a new connection, replacing the last one.
    fn next(&self) -> CancellationToken {
        let token = CancellationToken::new();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = token.clone();
        token
    }
}

/// A TCP connection that a [`Severer`] can cut.
pub struct Severable {
    inner: TcpStream,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl std::fmt::Debug for Severable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Severable")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Severable {
    /// `Err` once severed (and registers the task to be woken when that happens).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.cut.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection cut: the host's network changed",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for Severable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Severable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

async fn tcp(dns: &DnsConfig, severer: &Severer) -> Result<Severable, tokio_xmpp::Error> {
    let stream = dns.resolve().await?;
    stream.set_nodelay(true)?;
    Ok(Severable {
        inner: stream,
        cut: Box::pin(severer.next().cancelled_owned()),
    })
}

fn header(jid: &Jid, with_from: bool) -> StreamHeader<'_> {
    StreamHeader {
        to: Some(Cow::Borrowed(jid.domain().as_str())),
        // Some servers advertise SASL2 only when `from` is set (XEP-0388); tokio-xmpp sets it
        // on direct TLS only.
        from: with_from.then(|| Cow::Owned(jid.to_bare().to_string())),
        id: None,
    }
}

/// Plaintext TCP (only ever used for a loopback server, see `connection.rs`).
#[derive(Debug, Clone)]
pub struct PlainTcp(pub DnsConfig, pub Severer);

impl ServerConnector for PlainTcp {
    type Stream = BufStream<Severable>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let stream = BufStream::new(tcp(&self.0, &self.1).await?);
        let pending = initiate_stream(stream, ns, header(jid, false), timeouts).await?;
        Ok((pending, ChannelBinding::None))
    }
}

/// TCP, then `<starttls/>`; a server without STARTTLS is refused.
#[derive(Debug, Clone)]
pub struct StartTls(pub DnsConfig, pub Severer);

impl ServerConnector for StartTls {
    type Stream = BufStream<TlsStream<Severable>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let stream = BufStream::new(tcp(&self.0, &self.1).await?);
        let plain = initiate_stream(stream, ns, header(jid, false), timeouts).await?;
        let (features, plain) = plain.recv_features().await?;
        if !features.can_starttls() {
            return Err(tokio_xmpp::Error::Protocol(ProtocolError::NoTls));
        }
        let (tls, binding) = starttls(plain, jid.domain().as_str()).await?;
        let pending =
            initiate_stream(BufStream::new(tls), ns, header(jid, false), timeouts).await?;
        Ok((pending, binding))
    }
}

/// Direct TLS (XEP-0368).
#[derive(Debug, Clone)]
pub struct DirectTls(pub DnsConfig, pub Severer);

impl ServerConnector for DirectTls {
    type Stream = BufStream<TlsStream<Severable>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let stream = tcp(&self.0, &self.1).await?;
        let (tls, binding) = establish_tls_connection(stream, jid.domain().as_str()).await?;
        let pending = initiate_stream(BufStream::new(tls), ns, header(jid, true), timeouts).await?;
        Ok((pending, binding))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connection on loopback, its server end, and the severer it was made with.
    async fn pair(severer: &Severer) -> (Severable, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dns = DnsConfig::addr(&addr.to_string());
        let (ours, theirs) = tokio::join!(tcp(&dns, severer), listener.accept());
        (ours.unwrap(), theirs.unwrap().0)
    }

    #[tokio::test]
    async fn a_severed_connection_fails_at_once_and_the_next_one_works() {
        let severer = Severer::default();
        let (mut ours, mut theirs) = pair(&severer).await;
        theirs.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        ours.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");

        // A read that waits is woken by the cut, not by data or a timeout.
        let severing = severer.clone();
        let cut = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            severing.sever();
        });
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), ours.read(&mut buf))
            .await
            .expect("the cut wakes the read");
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        cut.await.unwrap();
        let write = ours.write_all(b"x").await.unwrap_err();
        assert_eq!(write.kind(), io::ErrorKind::ConnectionAborted);

        // The reconnect's connection has a fresh token: the old cut does not reach it.
        let (mut next, mut theirs) = pair(&severer).await;
        next.write_all(b"again").await.unwrap();
        theirs.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"again");
    }
}
