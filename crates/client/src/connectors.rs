//! tokio-xmpp server connectors that switch Nagle's algorithm off.
//!
//! tokio-xmpp's own connectors leave it on. A call is set up by a burst of small stanzas in both
//! directions (accept + proceed, session-initiate, its IQ result, session-accept…); with Nagle
//! on, a stanza written while the previous one is unacknowledged waits for the peer's delayed
//! ACK, typically 40 ms on Linux, several times per call. The behaviour is otherwise that of
//! tokio-xmpp's plaintext, STARTTLS and direct-TLS connectors, through its public API.

use std::borrow::Cow;

use sasl::common::ChannelBinding;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_xmpp::connect::tls_common::{TlsStream, establish_tls_connection};
use tokio_xmpp::connect::{DnsConfig, ServerConnector, starttls::starttls};
use tokio_xmpp::error::ProtocolError;
use tokio_xmpp::xmlstream::{PendingFeaturesRecv, StreamHeader, Timeouts, initiate_stream};
use xmpp_parsers::jid::Jid;

async fn tcp(dns: &DnsConfig) -> Result<TcpStream, tokio_xmpp::Error> {
    let stream = dns.resolve().await?;
    stream.set_nodelay(true)?;
    Ok(stream)
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
pub struct PlainTcp(pub DnsConfig);

impl ServerConnector for PlainTcp {
    type Stream = BufStream<TcpStream>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let stream = BufStream::new(tcp(&self.0).await?);
        let pending = initiate_stream(stream, ns, header(jid, false), timeouts).await?;
        Ok((pending, ChannelBinding::None))
    }
}

/// TCP, then `<starttls/>`; a server without STARTTLS is refused.
#[derive(Debug, Clone)]
pub struct StartTls(pub DnsConfig);

impl ServerConnector for StartTls {
    type Stream = BufStream<TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let stream = BufStream::new(tcp(&self.0).await?);
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
pub struct DirectTls(pub DnsConfig);

impl ServerConnector for DirectTls {
    type Stream = BufStream<TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let stream = tcp(&self.0).await?;
        let (tls, binding) = establish_tls_connection(stream, jid.domain().as_str()).await?;
        let pending = initiate_stream(BufStream::new(tls), ns, header(jid, true), timeouts).await?;
        Ok((pending, binding))
    }
}
