//! External Service Discovery (XEP-0215, `urn:xmpp:extdisco:2`): the STUN and TURN servers the
//! account's own server offers, with the time-limited credentials it makes for them (Prosody's
//! `mod_turn_external`, ejabberd's `mod_stun_disco`: coturn's REST credentials), as the
//! [`IceServer`]s the media engine gathers candidates with.
//!
//! Asking a stranger's STUN server would tell it who calls whom; the servers here come from the
//! account's own XMPP server, which knows that anyway.
//!
//! * [`services_request`] and [`credentials_request`] build the IQ payloads;
//! * [`parse_services`] and [`parse_credentials`] read the answers: pure, bounded (at most
//!   [`MAX_SERVICES`] services, every string capped), never panicking, each malformed answer
//!   with its own [`ExtdiscoError`]; services of types and transports a call cannot use
//!   (`ftp`, `stuns`, TURN over DTLS) are skipped, not errors;
//! * [`discover`] asks the server over a connection, fetches the credentials of restricted TURN
//!   services that came without them, and gives the usable servers (a server without XEP-0215
//!   gives none);
//! * [`refresh_at`] says when to ask again, before the credentials expire.
//!
//! Passwords are [`Secret`]s: no `Debug` and no error of this module shows one.
//!
//! What the servers send (recorded by tests/extdisco.rs from Debian 12's packages, attributes
//! in minidom's order, passwords replaced; the unit tests hold the parser against them):
//!
//! ```xml
//! <!-- Prosody 0.12.3, mod_turn_external with turn_external_tcp and turn_external_tls_port -->
//! <services xmlns='urn:xmpp:extdisco:2'>
//!   <service host='127.0.0.1' port='29466' transport='udp' type='stun'/>
//!   <service host='127.0.0.1' port='29466' transport='tcp' type='stun'/>
//!   <service expires='2026-12-02T13:41:35Z' host='127.0.0.1' password='…' port='29466'
//!            restricted='1' transport='udp' type='turn' username='1796218895'/>
//!   <service … the same for transport='tcp' …/>
//!   <service host='127.0.0.1' port='29467' transport='tcp' type='turns'/>
//! </services>
//! <!-- ejabberd 23.01, mod_stun_disco -->
//! <services xmlns='urn:xmpp:extdisco:2'>
//!   <service host='127.0.0.1' port='29463' restricted='false' transport='udp' type='stun'/>
//!   <service expires='2026-12-02T13:41:32Z' host='127.0.0.1' password='…' port='29463'
//!            restricted='true' transport='udp' type='turn'
//!            username='1796218892:66fd3be633438904'/>
//!   <service … turn over tcp, turns over tcp, the same credentials …/>
//!   <service host='127.0.0.1' port='29464' restricted='false' transport='tcp' type='stuns'/>
//! </services>
//! ```
//!
//! Prosody 0.12.3 announces `turns` without credentials and without `restricted` (its module
//! makes them for `turn` only): such a service gets those of the `turn` service on its host,
//! which the same TURN server checks with the same secret ([`lend_turn_credentials`]); a bare
//! `turns` without such a neighbour is kept as it came (anonymous TURN). ejabberd answers a
//! `<credentials/>` request with a `<services/>` element, which [`parse_credentials`] takes too.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use minidom::Element;
use shieldcall_media::{IceServer, IceServerKind, IceTransport, Secret};
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::stanza_error::{DefinedCondition, StanzaError};

use crate::connection::Xmpp;
use crate::error::ClientError;
pub use crate::error::ExtdiscoError;

/// XEP-0215 External Service Discovery, version 2.
pub const NS: &str = "urn:xmpp:extdisco:2";

/// At most this many `<service/>` elements in one answer (Prosody's `mod_turn_external` sends
/// at most five); more is an error, not a truncation.
pub const MAX_SERVICES: usize = 16;
/// Longest `host` (a DNS name has at most 253 characters; an IPv6 address far fewer).
pub const MAX_HOST_LEN: usize = 253;
/// Longest `username` or `password` (coturn's REST user names are `EXPIRY:user`, the
/// passwords 28 characters of base64).
pub const MAX_CREDENTIAL_LEN: usize = 512;
/// Longest `name` (a label for people).
pub const MAX_NAME_LEN: usize = 256;
/// Longest `type`, `port`, `transport`, `restricted` or `expires` looked at.
pub const MAX_SHORT_ATTRIBUTE_LEN: usize = 64;

/// How long the whole discovery (the list, then the credentials) may take.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Never ask again sooner than this after a discovery, whatever the credentials say.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Never wait longer than this to ask again (a server may say its credentials last for years).
pub const MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// After a failed discovery, ask again this much later.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5 * 60);
/// The share of the remaining validity after which [`refresh_at`] asks again, in percent.
pub const REFRESH_AT_PERCENT: u32 = 80;

/// STUN's and TURN's default port (RFC 8489, RFC 8656) when a service names none.
pub const DEFAULT_PORT: u16 = 3478;
/// TURN over TLS's default port.
pub const DEFAULT_TLS_PORT: u16 = 5349;

/// One usable service of an answer: the server as media takes it (defaults filled in), and
/// what discovery needs beyond it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The server (its `port` and `transport` are the defaults when the service named none).
    pub server: IceServer,
    /// The service said credentials are needed (`restricted`).
    pub restricted: bool,
    /// The port as the server wrote it (`None`: it wrote none and `server.port` is the
    /// default): a credentials request names it only then, as the server matches on it.
    pub announced_port: Option<u16>,
    /// Its label for people (`name`).
    pub name: Option<String>,
}

impl Service {
    /// A TURN service that needs credentials it did not bring: ask with
    /// [`credentials_request`].
    pub fn needs_credentials(&self) -> bool {
        self.server.kind != IceServerKind::Stun
            && self.restricted
            && (self.server.username.is_none() || self.server.password.is_none())
    }
}

/// `<services xmlns='urn:xmpp:extdisco:2'/>`: every service (the payload of an IQ get to the
/// account's server).
pub fn services_request() -> Element {
    Element::builder("services", NS).build()
}

/// `<credentials xmlns='urn:xmpp:extdisco:2'><service host type [port]/></credentials>`: the
/// credentials of one service (ejabberd answers a request naming one service only).
pub fn credentials_request(service: &Service) -> Element {
    let mut s = Element::builder("service", NS)
        .attr(nc!("host"), service.server.host.as_str())
        .attr(nc!("type"), kind_name(service.server.kind));
    if let Some(port) = service.announced_port {
        s = s.attr(nc!("port"), port.to_string());
    }
    Element::builder("credentials", NS)
        .append(s.build())
        .build()
}

/// The usable services of a `<services/>` answer, in its order.
pub fn parse_services(answer: &Element) -> Result<Vec<Service>, ExtdiscoError> {
    if !answer.is("services", NS) {
        return Err(ExtdiscoError::WrongPayload {
            expected: "services",
        });
    }
    parse_list(answer)
}

/// The services of an answer to [`credentials_request`]: `<credentials/>` as XEP-0215 has it,
/// or `<services/>` as ejabberd 23.01 answers.
pub fn parse_credentials(answer: &Element) -> Result<Vec<Service>, ExtdiscoError> {
    if !(answer.is("credentials", NS) || answer.is("services", NS)) {
        return Err(ExtdiscoError::WrongPayload {
            expected: "credentials",
        });
    }
    parse_list(answer)
}

/// Puts the credentials of `answer` (from [`parse_credentials`]) into the services of
/// `services` that need them: same type and host (ignoring case), and the same port when the
/// answer names one. Returns how many got credentials.
pub fn apply_credentials(services: &mut [Service], answer: &[Service]) -> usize {
    let mut filled = 0;
    for s in services.iter_mut().filter(|s| s.needs_credentials()) {
        let found = answer.iter().find(|a| {
            a.server.kind == s.server.kind
                && a.server.host.eq_ignore_ascii_case(&s.server.host)
                && a.announced_port.is_none_or(|p| p == s.server.port)
                && a.server.username.is_some()
                && a.server.password.is_some()
        });
        if let Some(a) = found {
            s.server.username.clone_from(&a.server.username);
            s.server.password.clone_from(&a.server.password);
            if a.server.expires.is_some() {
                s.server.expires = a.server.expires;
            }
            filled += 1;
        }
    }
    filled
}

/// Gives a `turns` service that came without credentials and without `restricted` the
/// credentials of a `turn` service on the same host. Prosody 0.12.3's `mod_turn_external`
/// makes its REST credentials for `turn` only and announces `turns` bare, although both go to
/// the one TURN server that checks them with the same secret on every port. Returns how many
/// got credentials.
pub fn lend_turn_credentials(services: &mut [Service]) -> usize {
    let lenders: Vec<IceServer> = services
        .iter()
        .filter(|s| s.server.kind == IceServerKind::Turn)
        .filter(|s| s.server.username.is_some() && s.server.password.is_some())
        .map(|s| s.server.clone())
        .collect();
    let mut lent = 0;
    for s in services.iter_mut().filter(|s| {
        s.server.kind == IceServerKind::Turns
            && !s.restricted
            && s.server.username.is_none()
            && s.server.password.is_none()
    }) {
        if let Some(l) = lenders
            .iter()
            .find(|l| l.host.eq_ignore_ascii_case(&s.server.host))
        {
            s.server.username.clone_from(&l.username);
            s.server.password.clone_from(&l.password);
            s.server.expires = l.expires;
            lent += 1;
        }
    }
    lent
}

/// The servers a call can use: every STUN service, and the TURN services that have
/// credentials or never needed any.
pub fn usable(services: Vec<Service>) -> Vec<IceServer> {
    services
        .into_iter()
        .filter(|s| !s.needs_credentials())
        .map(|s| s.server)
        .collect()
}

/// When to discover again: at [`REFRESH_AT_PERCENT`] of the shortest remaining validity among
/// `servers`, counted from `now` (the time of this discovery), but no sooner than
/// [`MIN_REFRESH_INTERVAL`] and no later than [`MAX_REFRESH_INTERVAL`] after `now`. `None`:
/// nothing expires.
pub fn refresh_at(servers: &[IceServer], now: SystemTime) -> Option<SystemTime> {
    let earliest = servers.iter().filter_map(|s| s.expires).min()?;
    let remaining = earliest.duration_since(now).unwrap_or(Duration::ZERO);
    let wait = (remaining / 100)
        .saturating_mul(REFRESH_AT_PERCENT)
        .clamp(MIN_REFRESH_INTERVAL, MAX_REFRESH_INTERVAL);
    now.checked_add(wait)
}

/// Asks the account's server for its STUN and TURN services, fetches missing credentials of
/// restricted TURN services (and lends a bare `turns` those of its host's `turn`,
/// [`lend_turn_credentials`]), and gives the usable servers ([`usable`]), all within
/// [`DISCOVERY_TIMEOUT`]. A server without XEP-0215 (`service-unavailable`,
/// `feature-not-implemented`) gives an empty list. A restricted service whose credentials
/// cannot be had is left out.
pub async fn discover(xmpp: &Xmpp) -> Result<Vec<IceServer>, ClientError> {
    match tokio::time::timeout(DISCOVERY_TIMEOUT, discover_services(xmpp)).await {
        Ok(services) => services.map(usable),
        Err(_) => Err(ClientError::Timeout(
            "the server's STUN/TURN services (XEP-0215)",
        )),
    }
}

/// What [`discover`] does before [`usable`], without its timeout (each IQ has its own): every
/// service of the answer, with the credentials that could be fetched.
pub async fn discover_services(xmpp: &Xmpp) -> Result<Vec<Service>, ClientError> {
    let server = own_server(xmpp);
    let answer = xmpp
        .iq(Some(server.clone()), false, services_request())
        .await?;
    let payload = match answer {
        Ok(Some(p)) => p,
        Ok(None) => return Err(ExtdiscoError::EmptyAnswer.into()),
        Err(e) if not_supported(&e) => return Ok(Vec::new()),
        Err(e) => {
            return Err(ClientError::Protocol(format!(
                "the server refused its STUN/TURN services (XEP-0215): {:?}",
                e.defined_condition
            )));
        }
    };
    let mut services = parse_services(&payload)?;
    let asks: Vec<Service> = services
        .iter()
        .filter(|s| s.needs_credentials())
        .cloned()
        .collect();
    let answers =
        futures::future::join_all(asks.iter().map(|s| request_credentials(xmpp, s))).await;
    for found in answers.into_iter().flatten() {
        apply_credentials(&mut services, &found);
    }
    lend_turn_credentials(&mut services);
    Ok(services)
}

/// Asks the account's server for the credentials of `service` ([`credentials_request`]); the
/// services of its answer ([`parse_credentials`]).
pub async fn request_credentials(
    xmpp: &Xmpp,
    service: &Service,
) -> Result<Vec<Service>, ClientError> {
    let answer = xmpp
        .iq(Some(own_server(xmpp)), false, credentials_request(service))
        .await?;
    match answer {
        Ok(Some(p)) => Ok(parse_credentials(&p)?),
        Ok(None) => Err(ExtdiscoError::EmptyAnswer.into()),
        Err(e) => Err(ClientError::Protocol(format!(
            "the server gave no credentials for {}: {:?}",
            service.server.label(),
            e.defined_condition
        ))),
    }
}

/// `host` as a STUN/TURN server's host: a host name or an IP address (IPv6 with or without
/// brackets, given back without), as the media engine will resolve it; `None` for anything
/// else (spaces, slashes, control characters, empty, a leading dot or dash).
pub fn valid_host(host: &str) -> Option<String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Some(bare.to_owned());
    }
    let name_ok = !bare.is_empty()
        && !bare.starts_with(['.', '-'])
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    name_ok.then(|| bare.to_owned())
}

// ---------------------------------------------------------------------------------------------
// helpers

/// The account's server: the domain of its JID.
fn own_server(xmpp: &Xmpp) -> Jid {
    Jid::from(BareJid::from(xmpp.jid.domain()))
}

/// The server does not speak XEP-0215 (RFC 6120's conditions for an unknown payload).
fn not_supported(e: &StanzaError) -> bool {
    matches!(
        e.defined_condition,
        DefinedCondition::ServiceUnavailable | DefinedCondition::FeatureNotImplemented
    )
}

fn kind_name(kind: IceServerKind) -> &'static str {
    match kind {
        IceServerKind::Stun => "stun",
        IceServerKind::Turn => "turn",
        IceServerKind::Turns => "turns",
    }
}

fn parse_list(parent: &Element) -> Result<Vec<Service>, ExtdiscoError> {
    let mut out = Vec::new();
    for (index, el) in parent
        .children()
        .filter(|c| c.is("service", NS))
        .enumerate()
    {
        if index >= MAX_SERVICES {
            return Err(ExtdiscoError::TooManyServices { max: MAX_SERVICES });
        }
        if let Some(s) = parse_service(index, el)? {
            out.push(s);
        }
    }
    Ok(out)
}

/// One `<service/>`: `None` for a type or transport a call cannot use.
fn parse_service(index: usize, el: &Element) -> Result<Option<Service>, ExtdiscoError> {
    let attr = |name: &'static str, max: usize| -> Result<Option<&str>, ExtdiscoError> {
        match el.attr(name) {
            Some(v) if v.chars().count() > max => Err(ExtdiscoError::TooLong {
                service: index,
                attribute: name,
                max,
            }),
            other => Ok(other),
        }
    };
    let invalid = |attribute: &'static str| ExtdiscoError::InvalidAttribute {
        service: index,
        attribute,
    };
    let kind = match attr("type", MAX_SHORT_ATTRIBUTE_LEN)? {
        Some("stun") => IceServerKind::Stun,
        Some("turn") => IceServerKind::Turn,
        Some("turns") => IceServerKind::Turns,
        // `stuns`, `ftp`, …: not for a call.
        Some(_) => return Ok(None),
        None => {
            return Err(ExtdiscoError::MissingAttribute {
                service: index,
                attribute: "type",
            });
        }
    };
    let transport = match attr("transport", MAX_SHORT_ATTRIBUTE_LEN)? {
        Some("udp") => IceTransport::Udp,
        Some("tcp") => IceTransport::Tcp,
        // `sctp`, …: nothing media speaks.
        Some(_) => return Ok(None),
        None if kind == IceServerKind::Turns => IceTransport::Tcp,
        None => IceTransport::Udp,
    };
    if kind == IceServerKind::Turns && transport == IceTransport::Udp {
        // TURN over DTLS: media speaks TLS over TCP only.
        return Ok(None);
    }
    let host = attr("host", MAX_HOST_LEN)?.ok_or(ExtdiscoError::MissingAttribute {
        service: index,
        attribute: "host",
    })?;
    let host = valid_host(host).ok_or_else(|| invalid("host"))?;
    let announced_port = attr("port", MAX_SHORT_ATTRIBUTE_LEN)?
        .map(|p| match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(invalid("port")),
            Ok(p) => Ok(p),
        })
        .transpose()?;
    let port = announced_port.unwrap_or(match kind {
        IceServerKind::Turns => DEFAULT_TLS_PORT,
        _ => DEFAULT_PORT,
    });
    let restricted = match attr("restricted", MAX_SHORT_ATTRIBUTE_LEN)?.map(str::trim) {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(_) => return Err(invalid("restricted")),
    };
    let expires = attr("expires", MAX_SHORT_ATTRIBUTE_LEN)?
        .map(|e| parse_expires(e).ok_or_else(|| invalid("expires")))
        .transpose()?;
    let username = attr("username", MAX_CREDENTIAL_LEN)?
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    let password = attr("password", MAX_CREDENTIAL_LEN)?
        .filter(|p| !p.is_empty())
        .map(Secret::new);
    let name = attr("name", MAX_NAME_LEN)?.map(str::to_owned);
    Ok(Some(Service {
        server: IceServer {
            kind,
            host,
            port,
            transport,
            username,
            password,
            expires,
        },
        restricted,
        announced_port,
        name,
    }))
}

/// A XEP-0082 dateTime (`2023-11-14T22:13:20Z`, with fractions or an offset) as a time.
fn parse_expires(s: &str) -> Option<SystemTime> {
    let t = xmpp_parsers::date::DateTime::from_str(s.trim()).ok()?.0;
    let secs = u64::try_from(t.timestamp()).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, t.timestamp_subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// `<services>` around the given `<service/>` lines.
    fn services(inner: &str) -> Element {
        el(&format!(
            "<services xmlns='urn:xmpp:extdisco:2'>{inner}</services>"
        ))
    }

    fn one(service: &str) -> Result<Vec<Service>, ExtdiscoError> {
        parse_services(&services(service))
    }

    /// XEP-0215 1.0.0, example 2 ("XMPP Server Returns List"), as published.
    const XEP_LIST: &str = "<services xmlns='urn:xmpp:extdisco:2'>
        <service host='stun.shakespeare.lit' port='9998' transport='udp' type='stun'/>
        <service host='relay.shakespeare.lit' password='jj929jkj5sadjfj93v3n' port='9999'
                 transport='udp' type='turn' username='nb78932lkjlskjfdb7g8'/>
        <service host='192.0.2.1' port='8888' transport='udp' type='stun'/>
        <service host='192.0.2.1' port='8889' password='93jn3bakj9s832lrjbbz' transport='udp'
                 type='turn' username='auu98sjl2wk3e9fjdsl7'/>
        <service host='ftp.shakespeare.lit' name='Shakespearean File Server' password='guest'
                 port='20' transport='tcp' type='ftp' username='guest'/>
      </services>";

    /// Prosody 0.12.3 (Debian 12) with `mod_turn_external`, `turn_external_tcp = true` and
    /// `turn_external_tls_port`, as tests/extdisco.rs recorded it (attributes in minidom's
    /// order; the password replaced).
    const PROSODY: &str = "<services xmlns='urn:xmpp:extdisco:2'>\
        <service host='127.0.0.1' port='29466' transport='udp' type='stun'/>\
        <service host='127.0.0.1' port='29466' transport='tcp' type='stun'/>\
        <service expires='2026-12-02T13:41:35Z' host='127.0.0.1' password='REDACTED' port='29466' restricted='1' transport='udp' type='turn' username='1796218895'/>\
        <service expires='2026-12-02T13:41:35Z' host='127.0.0.1' password='REDACTED' port='29466' restricted='1' transport='tcp' type='turn' username='1796218895'/>\
        <service host='127.0.0.1' port='29467' transport='tcp' type='turns'/>\
        </services>";

    /// ejabberd 23.01 (Debian 12) with `mod_stun_disco` (services stun/udp, turn/udp,
    /// turn/tcp, turns/tcp, stuns/tcp), as tests/extdisco.rs recorded it (the password
    /// replaced).
    const EJABBERD: &str = "<services xmlns='urn:xmpp:extdisco:2'>\
        <service host='127.0.0.1' port='29463' restricted='false' transport='udp' type='stun'/>\
        <service expires='2026-12-02T13:41:32Z' host='127.0.0.1' password='REDACTED' port='29463' restricted='true' transport='udp' type='turn' username='1796218892:66fd3be633438904'/>\
        <service expires='2026-12-02T13:41:32Z' host='127.0.0.1' password='REDACTED' port='29463' restricted='true' transport='tcp' type='turn' username='1796218892:66fd3be633438904'/>\
        <service expires='2026-12-02T13:41:32Z' host='127.0.0.1' password='REDACTED' port='29464' restricted='true' transport='tcp' type='turns' username='1796218892:66fd3be633438904'/>\
        <service host='127.0.0.1' port='29464' restricted='false' transport='tcp' type='stuns'/>\
        </services>";

    /// ejabberd's answer to a `<credentials/>` request for the `turn` service on port 29463:
    /// a `<services/>` element, both transports of that host, port and type.
    const EJABBERD_CREDENTIALS: &str = "<services xmlns='urn:xmpp:extdisco:2'>\
        <service expires='2026-12-02T13:41:33Z' host='127.0.0.1' password='REDACTED' port='29463' restricted='true' transport='udp' type='turn' username='1796218893:66fd3be633438904'/>\
        <service expires='2026-12-02T13:41:33Z' host='127.0.0.1' password='REDACTED' port='29463' restricted='true' transport='tcp' type='turn' username='1796218893:66fd3be633438904'/>\
        </services>";

    /// Prosody's answer to the same request: `<credentials/>`.
    const PROSODY_CREDENTIALS: &str = "<credentials xmlns='urn:xmpp:extdisco:2'>\
        <service expires='2026-12-02T13:41:36Z' host='127.0.0.1' password='REDACTED' port='29466' restricted='1' transport='udp' type='turn' username='1796218896'/>\
        <service expires='2026-12-02T13:41:36Z' host='127.0.0.1' password='REDACTED' port='29466' restricted='1' transport='tcp' type='turn' username='1796218896'/>\
        </credentials>";

    #[test]
    fn the_xeps_example_list_skips_what_a_call_cannot_use() {
        let s = parse_services(&el(XEP_LIST)).unwrap();
        let labels: Vec<String> = s.iter().map(|s| s.server.label()).collect();
        assert_eq!(
            labels,
            [
                "stun:stun.shakespeare.lit:9998?transport=udp",
                "turn:relay.shakespeare.lit:9999?transport=udp",
                "stun:192.0.2.1:8888?transport=udp",
                "turn:192.0.2.1:8889?transport=udp",
            ]
        );
        let turn = &s[1].server;
        assert_eq!(turn.username.as_deref(), Some("nb78932lkjlskjfdb7g8"));
        assert_eq!(
            turn.password.as_ref().map(Secret::expose),
            Some("jj929jkj5sadjfj93v3n")
        );
        assert!(
            s.iter()
                .all(|s| !s.restricted && s.server.expires.is_none())
        );
        assert_eq!(s[0].announced_port, Some(9998));
        assert_eq!(usable(s).len(), 4);
    }

    #[test]
    fn prosodys_answer() {
        let s = parse_services(&el(PROSODY)).unwrap();
        assert_eq!(s.len(), 5);
        let turn = &s[2];
        assert_eq!(turn.server.kind, IceServerKind::Turn);
        assert_eq!(turn.server.transport, IceTransport::Udp);
        assert!(turn.restricted && !turn.needs_credentials());
        assert_eq!(turn.server.username.as_deref(), Some("1796218895"));
        assert_eq!(turn.server.expires, Some(at(1_796_218_895)));
        assert_eq!(s[3].server.transport, IceTransport::Tcp);
        assert!(
            s[..2]
                .iter()
                .all(|s| !s.restricted && s.server.expires.is_none())
        );
        // 0.12.3 makes credentials for `turn` only: its `turns` comes bare and unrestricted,
        // and is kept as it came.
        let turns = &s[4];
        assert_eq!(turns.server.kind, IceServerKind::Turns);
        assert!(!turns.restricted && turns.server.username.is_none());
        assert_eq!(turns.server.label(), "turns:127.0.0.1:29467?transport=tcp");
        let mut s = s;
        assert_eq!(lend_turn_credentials(&mut s), 1);
        assert_eq!(s[4].server.username.as_deref(), Some("1796218895"));
        assert_eq!(s[4].server.password, s[2].server.password);
        assert_eq!(s[4].server.expires, Some(at(1_796_218_895)));
        assert_eq!(lend_turn_credentials(&mut s), 0, "once");
        assert_eq!(usable(s).len(), 5);
        let creds = parse_credentials(&el(PROSODY_CREDENTIALS)).unwrap();
        assert_eq!(creds.len(), 2);
        assert_eq!(creds[0].server.username.as_deref(), Some("1796218896"));
    }

    #[test]
    fn ejabberds_answer() {
        let s = parse_services(&el(EJABBERD)).unwrap();
        assert_eq!(s.len(), 4, "stuns skipped");
        assert!(!s[0].restricted && s[0].server.expires.is_none());
        for t in &s[1..] {
            assert!(t.restricted && !t.needs_credentials());
            assert_eq!(
                t.server.username.as_deref(),
                Some("1796218892:66fd3be633438904")
            );
            assert_eq!(t.server.expires, Some(at(1_796_218_892)));
        }
        assert_eq!(s[3].server.kind, IceServerKind::Turns);
        assert_eq!(s[3].server.port, 29464);
        // Its answer to <credentials/> is <services/>; both fill a restricted service.
        let creds = parse_credentials(&el(EJABBERD_CREDENTIALS)).unwrap();
        let mut bare =
            one("<service type='turn' host='127.0.0.1' port='29463' restricted='true'/>").unwrap();
        assert_eq!(apply_credentials(&mut bare, &creds), 1);
        assert_eq!(bare[0].server.expires, Some(at(1_796_218_893)));
    }

    #[test]
    fn defaults_for_what_a_service_leaves_out() {
        let s = one("<service type='turns' host='turn.example.org'/><service type='stun' host='[2001:db8::3]'/>")
            .unwrap();
        assert_eq!(s[0].server.port, DEFAULT_TLS_PORT);
        assert_eq!(s[0].server.transport, IceTransport::Tcp);
        assert_eq!(s[0].announced_port, None);
        assert_eq!(s[1].server.port, DEFAULT_PORT);
        assert_eq!(s[1].server.transport, IceTransport::Udp);
        assert_eq!(s[1].server.host, "2001:db8::3");
        assert_eq!(s[1].name, None);
    }

    #[test]
    fn unusable_types_and_transports_are_skipped() {
        let s = one(
            "<service type='stuns' host='a.example' port='5349' transport='tcp'/>
             <service type='turns' host='a.example' port='5349' transport='udp'/>
             <service type='turn' host='a.example' transport='sctp'/>
             <service type='http' host='not a host!'/>
             <other xmlns='urn:xmpp:extdisco:2' type='stun' host='x'/>
             <service xmlns='urn:example:other' type='stun' host='x'/>
             <service type='stun' host='b.example' name='Our STUN'/>",
        )
        .unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].server.host, "b.example");
        assert_eq!(s[0].name.as_deref(), Some("Our STUN"));
        assert_eq!(one("").unwrap(), vec![]);
    }

    #[test]
    fn each_malformed_answer_has_its_error() {
        use ExtdiscoError::*;
        let missing = |attribute| MissingAttribute {
            service: 0,
            attribute,
        };
        let invalid = |attribute| InvalidAttribute {
            service: 0,
            attribute,
        };
        for (service, want) in [
            ("<service host='a.example'/>", missing("type")),
            ("<service type='stun'/>", missing("host")),
            ("<service type='stun' host=''/>", invalid("host")),
            ("<service type='stun' host='a b'/>", invalid("host")),
            ("<service type='stun' host='a/b'/>", invalid("host")),
            ("<service type='stun' host='-a'/>", invalid("host")),
            ("<service type='stun' host='a' port='0'/>", invalid("port")),
            (
                "<service type='stun' host='a' port='65536'/>",
                invalid("port"),
            ),
            ("<service type='stun' host='a' port='-1'/>", invalid("port")),
            ("<service type='stun' host='a' port='x'/>", invalid("port")),
            (
                "<service type='turn' host='a' restricted='yes'/>",
                invalid("restricted"),
            ),
            (
                "<service type='turn' host='a' expires='tomorrow'/>",
                invalid("expires"),
            ),
            (
                "<service type='turn' host='a' expires='1969-12-31T23:59:59Z'/>",
                invalid("expires"),
            ),
        ] {
            assert_eq!(one(service), Err(want.clone()), "{service}");
        }
        let long = |attribute: &str, n: usize| {
            one(&format!(
                "<service type='turn' host='a' {attribute}='{}'/>",
                "x".repeat(n)
            ))
        };
        assert!(long("username", MAX_CREDENTIAL_LEN).is_ok());
        assert_eq!(
            long("password", MAX_CREDENTIAL_LEN + 1),
            Err(TooLong {
                service: 0,
                attribute: "password",
                max: MAX_CREDENTIAL_LEN
            })
        );
        assert_eq!(
            long("name", MAX_NAME_LEN + 1),
            Err(TooLong {
                service: 0,
                attribute: "name",
                max: MAX_NAME_LEN
            })
        );
        let host = one(&format!(
            "<service type='stun' host='{}'/>",
            "a".repeat(MAX_HOST_LEN + 1)
        ));
        assert_eq!(
            host,
            Err(TooLong {
                service: 0,
                attribute: "host",
                max: MAX_HOST_LEN
            })
        );
        // The position names the service, counting the skipped ones too.
        assert_eq!(
            one("<service type='ftp' host='a'/><service type='stun'/>"),
            Err(MissingAttribute {
                service: 1,
                attribute: "host"
            })
        );
        assert_eq!(
            parse_services(&el("<query xmlns='urn:xmpp:extdisco:2'/>")),
            Err(WrongPayload {
                expected: "services"
            })
        );
        assert_eq!(
            parse_services(&el("<services xmlns='urn:xmpp:extdisco:1'/>")),
            Err(WrongPayload {
                expected: "services"
            })
        );
        assert_eq!(
            parse_credentials(&el("<services xmlns='urn:xmpp:extdisco:1'/>")),
            Err(WrongPayload {
                expected: "credentials"
            })
        );
    }

    #[test]
    fn the_number_of_services_is_capped() {
        let n = |count: usize| "<service type='stun' host='a'/>".repeat(count);
        assert_eq!(one(&n(MAX_SERVICES)).unwrap().len(), MAX_SERVICES);
        assert_eq!(
            one(&n(MAX_SERVICES + 1)),
            Err(ExtdiscoError::TooManyServices { max: MAX_SERVICES })
        );
        // Skipped types count too: the cap bounds the work, not the result.
        let ftp = "<service type='ftp' host='a'/>".repeat(MAX_SERVICES);
        assert_eq!(
            one(&format!("{ftp}<service type='stun' host='a'/>")),
            Err(ExtdiscoError::TooManyServices { max: MAX_SERVICES })
        );
    }

    #[test]
    fn expiry_in_the_forms_servers_write() {
        let e = |v: &str| {
            one(&format!("<service type='turn' host='a' expires='{v}'/>")).unwrap()[0]
                .server
                .expires
        };
        assert_eq!(e("2023-11-14T22:13:20Z"), Some(at(1_700_000_000)));
        assert_eq!(e("2023-11-14T22:13:20.000000Z"), Some(at(1_700_000_000)));
        assert_eq!(e("2023-11-15T00:13:20+02:00"), Some(at(1_700_000_000)));
        assert_eq!(
            e("2023-11-14T22:13:20.5Z"),
            Some(at(1_700_000_000) + Duration::from_millis(500))
        );
    }

    #[test]
    fn no_debug_and_no_error_shows_a_password() {
        let s = parse_services(&el(XEP_LIST)).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("jj929jkj5sadjfj93v3n"), "{shown}");
        assert!(
            shown.contains("nb78932lkjlskjfdb7g8"),
            "user names may show: {shown}"
        );
        let secret = "hunter2".repeat(100);
        let e = one(&format!(
            "<service type='turn' host='a' password='{secret}'/>"
        ))
        .unwrap_err();
        let err: ClientError = e.clone().into();
        for text in [
            e.to_string(),
            format!("{e:?}"),
            err.to_string(),
            format!("{err:?}"),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
        }
        let e = one("<service type='turn' host='a' password='hunter2' port='x'/>").unwrap_err();
        assert!(!format!("{e} {e:?}").contains("hunter2"));
    }

    /// Strange values in every attribute: an answer or an error, never a panic, and never a
    /// server that a call could not use.
    #[test]
    fn odd_values_never_panic() {
        let values = [
            "",
            " ",
            "0",
            "1",
            "-",
            "\u{0}",
            "é",
            "\u{202e}",
            "udp",
            "tcp",
            "turn",
            "stun",
            "turns",
            "65535",
            "99999999999999999999",
            "::",
            "[]",
            "[::1]",
            "1.2.3.4",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "2023-02-30T00:00:00Z",
            "true",
            "..",
            "a..b",
            "a\tb",
        ];
        let attrs = [
            "type",
            "host",
            "port",
            "transport",
            "restricted",
            "expires",
            "username",
            "password",
        ];
        for a in attrs {
            for v in values {
                let mut service = Element::builder("service", NS)
                    .attr(nc!("type"), "turn")
                    .attr(nc!("host"), "a.example");
                service = match a {
                    "type" => service.attr(nc!("type"), v),
                    "host" => service.attr(nc!("host"), v),
                    "port" => service.attr(nc!("port"), v),
                    "transport" => service.attr(nc!("transport"), v),
                    "restricted" => service.attr(nc!("restricted"), v),
                    "expires" => service.attr(nc!("expires"), v),
                    "username" => service.attr(nc!("username"), v),
                    _ => service.attr(nc!("password"), v),
                };
                let answer = Element::builder("services", NS)
                    .append(service.build())
                    .build();
                if let Ok(list) = parse_services(&answer) {
                    for s in list {
                        assert!(s.server.port != 0 && !s.server.host.is_empty(), "{a}={v:?}");
                        assert!(!s.server.host.contains(char::is_whitespace), "{a}={v:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_requests_are_xep_0215s() {
        let req = services_request();
        assert!(req.is("services", NS));
        assert_eq!(
            req.attrs().into_iter().count(),
            0,
            "every type: no 'type' filter"
        );
        assert_eq!(req.children().count(), 0);
        let s = one("<service type='turn' host='turn.example.org' port='3479' restricted='1'/><service type='turns' host='turn.example.org' restricted='1'/>")
            .unwrap();
        let req = credentials_request(&s[0]);
        assert!(req.is("credentials", NS));
        let service = req.get_child("service", NS).unwrap();
        assert_eq!(service.attr("host"), Some("turn.example.org"));
        assert_eq!(service.attr("type"), Some("turn"));
        assert_eq!(service.attr("port"), Some("3479"));
        assert_eq!(
            service.attrs().into_iter().count(),
            3,
            "only what identifies the service"
        );
        // No port in the request when the server wrote none: Prosody matches on it.
        let req = credentials_request(&s[1]);
        let service = req.get_child("service", NS).unwrap();
        assert_eq!(
            (service.attr("type"), service.attr("port")),
            (Some("turns"), None)
        );
    }

    #[test]
    fn credentials_fill_the_restricted_services_that_need_them() {
        let mut s = one(
            "<service type='turn' host='turn.shakespeare.lit' port='9999' transport='udp' restricted='true'/>
             <service type='turn' host='turn.shakespeare.lit' port='9999' transport='tcp' restricted='true'/>
             <service type='turn' host='other.example' port='9999' restricted='1'/>
             <service type='stun' host='turn.shakespeare.lit' port='9999' restricted='1'/>",
        )
        .unwrap();
        assert_eq!(
            s.iter().map(Service::needs_credentials).collect::<Vec<_>>(),
            [true, true, true, false],
            "STUN needs none"
        );
        // XEP-0215 example 5, "Server Returns Credentials": no port, no transport.
        let answer = parse_credentials(&el("<credentials xmlns='urn:xmpp:extdisco:2'>
               <service host='turn.shakespeare.lit' type='turn' password='jj929jkj5sadjfj93v3n'
                        username='nb78932lkjlskjfdb7g8' expires='2023-11-14T22:13:20Z'/>
             </credentials>"))
        .unwrap();
        assert_eq!(apply_credentials(&mut s, &answer), 2);
        for t in &s[..2] {
            assert_eq!(t.server.username.as_deref(), Some("nb78932lkjlskjfdb7g8"));
            assert_eq!(t.server.expires, Some(at(1_700_000_000)));
            assert!(!t.needs_credentials());
        }
        assert!(s[2].needs_credentials(), "another host keeps waiting");
        let servers = usable(s);
        assert_eq!(servers.len(), 3, "the one without credentials is left out");
        assert!(servers.iter().all(|s| s.host != "other.example"));
    }

    #[test]
    fn credentials_answers_name_the_port_to_match() {
        let mut s =
            one("<service type='turn' host='t.example' port='3478' restricted='1'/>").unwrap();
        // ejabberd answers a credentials request with <services/>, port and all.
        let other_port = parse_credentials(&el(
            "<services xmlns='urn:xmpp:extdisco:2'><service type='turn' host='t.example' port='3479' username='u' password='p'/></services>",
        ))
        .unwrap();
        assert_eq!(apply_credentials(&mut s, &other_port), 0);
        let same = parse_credentials(&el(
            "<services xmlns='urn:xmpp:extdisco:2'><service type='turn' host='T.example' port='3478' username='u' password='p'/></services>",
        ))
        .unwrap();
        assert_eq!(apply_credentials(&mut s, &same), 1);
        assert_eq!(s[0].server.password.as_ref().map(Secret::expose), Some("p"));
        let without = parse_credentials(&el(
            "<credentials xmlns='urn:xmpp:extdisco:2'><service type='turn' host='t.example'/></credentials>",
        ))
        .unwrap();
        let mut fresh = one("<service type='turn' host='t.example' restricted='1'/>").unwrap();
        assert_eq!(
            apply_credentials(&mut fresh, &without),
            0,
            "no credentials in it"
        );
    }

    #[test]
    fn only_a_bare_turns_borrows_and_only_from_its_own_host() {
        let mut s = one(
            "<service type='turn' host='a.example' username='u' password='p' expires='2023-11-14T22:13:20Z'/>
             <service type='turns' host='A.example'/>
             <service type='turns' host='b.example'/>
             <service type='turns' host='a.example' restricted='1'/>
             <service type='turns' host='a.example' username='own' password='own'/>",
        )
        .unwrap();
        assert_eq!(lend_turn_credentials(&mut s), 1);
        assert_eq!(s[1].server.username.as_deref(), Some("u"));
        assert_eq!(s[1].server.expires, Some(at(1_700_000_000)));
        assert!(s[2].server.username.is_none(), "another host lends nothing");
        assert!(
            s[3].server.username.is_none(),
            "restricted: asked for, not lent"
        );
        assert_eq!(s[4].server.username.as_deref(), Some("own"));
        // A STUN service lends nothing, ejabberd's turns brought its own.
        let mut e = parse_services(&el(EJABBERD)).unwrap();
        assert_eq!(lend_turn_credentials(&mut e), 0);
    }

    fn expiring(at: Option<SystemTime>) -> IceServer {
        IceServer {
            kind: IceServerKind::Turn,
            host: "t.example".into(),
            port: 3478,
            transport: IceTransport::Udp,
            username: Some("u".into()),
            password: Some(Secret::new("p")),
            expires: at,
        }
    }

    #[test]
    fn refresh_at_four_fifths_of_the_shortest_validity() {
        let now = at(1_700_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(
            refresh_at(&[expiring(Some(now + Duration::from_secs(1000)))], now),
            Some(now + Duration::from_secs(800))
        );
        assert_eq!(
            refresh_at(
                &[
                    expiring(None),
                    expiring(Some(now + day / 2)),
                    expiring(Some(now + Duration::from_secs(600))),
                ],
                now
            ),
            Some(now + Duration::from_secs(480)),
            "the shortest one counts"
        );
        assert_eq!(refresh_at(&[expiring(None)], now), None, "nothing expires");
        assert_eq!(refresh_at(&[], now), None);
    }

    #[test]
    fn refresh_never_more_often_than_every_30_s_nor_later_than_a_day() {
        let now = at(1_700_000_000);
        let soon = |secs| refresh_at(&[expiring(Some(now + Duration::from_secs(secs)))], now);
        assert_eq!(soon(10), Some(now + MIN_REFRESH_INTERVAL));
        assert_eq!(soon(0), Some(now + MIN_REFRESH_INTERVAL));
        assert_eq!(soon(37), Some(now + MIN_REFRESH_INTERVAL));
        assert_eq!(soon(38), Some(now + Duration::from_millis(30_400)));
        // Already expired (a clock that jumped): still 30 s.
        let past = [expiring(Some(now - Duration::from_secs(100)))];
        assert_eq!(refresh_at(&past, now), Some(now + MIN_REFRESH_INTERVAL));
        // Credentials for ten years: asked again after a day all the same.
        let far = [expiring(Some(now + Duration::from_secs(10 * 365 * 86_400)))];
        assert_eq!(refresh_at(&far, now), Some(now + MAX_REFRESH_INTERVAL));
        let very_far = [expiring(Some(
            UNIX_EPOCH + Duration::from_secs(253_402_300_799),
        ))];
        assert_eq!(refresh_at(&very_far, now), Some(now + MAX_REFRESH_INTERVAL));
    }
}
