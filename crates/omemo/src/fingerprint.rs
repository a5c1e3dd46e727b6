//! Fingerprint display and the `xmpp:` verification URIs carried by Conversations' and Dino's QR
//! codes (docs/protocol.md §6.5).
//!
//! * Conversations shows the identity key without its `05` prefix, lower-case, in blocks of 8.
//! * Dino shows the same hex in blocks of 4.
//! * URI: `xmpp:JID?omemo-sid-N=<64 hex>[;omemo-sid-M=<64 hex>…]`; Conversations' https form
//!   (`https://conversations.im/i/JID?…`) separates with `&`. A bare `omemo=<hex>` means device 0.

use crate::error::Error;
use crate::keys::{PublicKey, hex, unhex};

fn grouped(key: &PublicKey, n: usize) -> String {
    let h = hex(key.montgomery());
    h.as_bytes()
        .chunks(n)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Conversations' display: 8 blocks of 8 lower-case hex digits.
pub fn conversations_display(key: &PublicKey) -> String {
    grouped(key, 8)
}

/// Dino's display: 16 blocks of 4 lower-case hex digits.
pub fn dino_display(key: &PublicKey) -> String {
    grouped(key, 4)
}

/// A parsed verification URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationUri {
    /// Bare JID the keys belong to.
    pub jid: String,
    /// `(device id, identity key)`; device 0 for a bare `omemo=` parameter.
    pub devices: Vec<(u32, PublicKey)>,
}

/// Most keys accepted in one URI.
pub const MAX_URI_KEYS: usize = 64;

fn percent_decode(s: &str) -> Result<String, Error> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            // Exactly two hex digits (from_str_radix alone would take "+1").
            let h = b
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(h.ok_or_else(|| Error::Uri(format!("bad percent escape in '{s}'")))?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Uri("JID is not UTF-8".into()))
}

impl VerificationUri {
    /// Parses the `xmpp:` or Conversations `https://conversations.im/i/` form.
    pub fn parse(uri: &str) -> Result<Self, Error> {
        let uri = uri.trim();
        let rest = if let Some(r) = uri.strip_prefix("xmpp:") {
            r.strip_prefix("//").unwrap_or(r)
        } else if let Some(r) = uri.strip_prefix("https://conversations.im/i/") {
            r
        } else {
            return Err(Error::Uri(
                "must start with 'xmpp:' or 'https://conversations.im/i/'".into(),
            ));
        };
        let (jid, query) = rest.split_once('?').unwrap_or((rest, ""));
        let jid = percent_decode(jid)?;
        if jid.is_empty()
            || jid.contains('/')
            || !jid.contains('@') && jid.contains(char::is_whitespace)
        {
            return Err(Error::Uri(format!("'{jid}' is not a bare JID")));
        }
        let mut devices = Vec::new();
        for param in query.split([';', '&']).filter(|p| !p.is_empty()) {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            let k = k.to_ascii_lowercase();
            let device = if let Some(id) = k.strip_prefix("omemo-sid-") {
                id.parse::<u32>()
                    .map_err(|_| Error::Uri(format!("device id '{id}' is not a number")))?
            } else if k == "omemo" {
                0
            } else {
                continue; // other parameters (action, body…) are not ours
            };
            let v = v.to_ascii_lowercase();
            let bytes = unhex(&v).filter(|b| b.len() == 32).ok_or_else(|| {
                Error::Uri(format!(
                    "fingerprint of device {device} must be 64 hex digits, got '{}'",
                    v.chars().take(70).collect::<String>()
                ))
            })?;
            let mut u = [0u8; 32];
            u.copy_from_slice(&bytes);
            if devices.len() == MAX_URI_KEYS {
                return Err(Error::Uri(format!("more than {MAX_URI_KEYS} keys")));
            }
            devices.push((device, PublicKey::from_montgomery(u)));
        }
        if devices.is_empty() {
            return Err(Error::Uri("no omemo-sid-N=… fingerprint in the URI".into()));
        }
        Ok(Self {
            jid: jid.to_lowercase(),
            devices,
        })
    }
}

impl std::fmt::Display for VerificationUri {
    /// `xmpp:JID?omemo-sid-N=hex;omemo-sid-M=hex` (Conversations' and Dino's QR form).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("xmpp:")?;
        // RFC 5122: characters that would end or confuse the JID part are percent-encoded
        // (a localpart may contain '?', '#', ';', '=' or '%'); '@' and '/' stay as they are.
        for c in self.jid.chars() {
            match c {
                'A'..='Z'
                | 'a'..='z'
                | '0'..='9'
                | '-'
                | '.'
                | '_'
                | '~'
                | '@'
                | '/'
                | '!'
                | '$'
                | '('
                | ')'
                | '*'
                | '+'
                | ','
                | ':' => write!(f, "{c}")?,
                c if !c.is_ascii() => write!(f, "{c}")?,
                c => write!(f, "%{:02X}", c as u32)?,
            }
        }
        for (i, (device, key)) in self.devices.iter().enumerate() {
            let sep = if i == 0 { '?' } else { ';' };
            write!(f, "{sep}omemo-sid-{device}={}", hex(key.montgomery()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_montgomery([b; 32])
    }

    #[test]
    fn jids_with_uri_delimiters_survive_display_and_parse() {
        let u = VerificationUri {
            jid: "a?b#c;d=e%f'g@example.org".into(),
            devices: vec![(7, key(3))],
        };
        let text = u.to_string();
        assert!(text.starts_with("xmpp:a%3Fb%23c%3Bd%3De%25f%27g@example.org?omemo-sid-7="));
        assert_eq!(VerificationUri::parse(&text).unwrap(), u);
    }

    #[test]
    fn percent_escapes_need_two_hex_digits() {
        assert!(percent_decode("a%+1b").is_err());
        assert!(percent_decode("a%4").is_err());
        assert_eq!(percent_decode("a%3fb").unwrap(), "a?b");
    }

    #[test]
    fn display_groupings() {
        let k = key(0xab);
        assert_eq!(conversations_display(&k), ["abababab"; 8].join(" "));
        assert_eq!(dino_display(&k), ["abab"; 16].join(" "));
    }

    #[test]
    fn uri_round_trip_and_forms() {
        let u = VerificationUri {
            jid: "juliet@capulet.example".into(),
            devices: vec![(1284733451, key(1)), (7, key(2))],
        };
        let s = u.to_string();
        assert_eq!(
            s,
            format!(
                "xmpp:juliet@capulet.example?omemo-sid-1284733451={};omemo-sid-7={}",
                "01".repeat(32),
                "02".repeat(32)
            )
        );
        assert_eq!(VerificationUri::parse(&s).unwrap(), u);
        let https = format!(
            "https://conversations.im/i/juliet@capulet.example?omemo-sid-1284733451={}&omemo-sid-7={}",
            "01".repeat(32),
            "02".repeat(32)
        );
        assert_eq!(VerificationUri::parse(&https).unwrap(), u);
        let upper = format!(
            "xmpp:Juliet@Capulet.example?OMEMO-SID-5={}",
            "AB".repeat(32)
        );
        assert_eq!(
            VerificationUri::parse(&upper).unwrap().devices,
            vec![(5, key(0xab))]
        );
        let bare = format!("xmpp:a@b?omemo={}", "01".repeat(32));
        assert_eq!(
            VerificationUri::parse(&bare).unwrap().devices,
            vec![(0, key(1))]
        );
    }

    #[test]
    fn malformed_uris_are_refused_with_reason() {
        for (bad, needle) in [
            ("mailto:a@b", "must start with"),
            ("xmpp:a@b", "no omemo-sid"),
            ("xmpp:a@b?omemo-sid-x=00", "not a number"),
            ("xmpp:a@b?omemo-sid-1=abcd", "64 hex digits"),
            ("xmpp:a@b/res?omemo-sid-1=abcd", "not a bare JID"),
            ("xmpp:a%zz@b?omemo-sid-1=abcd", "percent"),
        ] {
            match VerificationUri::parse(bad) {
                Err(Error::Uri(m)) => assert!(m.contains(needle), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
