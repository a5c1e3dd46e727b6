//! The OMEMO service: our device list and bundle on PEP, contacts' device lists and bundles,
//! sessions, and OMEMO chat messages in and out (legacy OMEMO, docs/protocol.md §6).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use minidom::Element;
use shieldcall_omemo::fingerprint::conversations_display;
use shieldcall_omemo::ns::{AXOLOTL, DEVICELIST_NODE, bundle_node};
use shieldcall_omemo::xml::{Bundle, DeviceList, EncryptedElement};
use shieldcall_omemo::{Account, PublicKey, Recipient, SqliteStore, Store, TrustLevel};
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Message, MessageType};

use crate::connection::Xmpp;
use crate::error::ClientError;
use crate::pep::{self, Fetched};
use crate::policy::{Policies, PolicyWatch};

/// XEP-0380 explicit message encryption.
pub const EME: &str = "urn:xmpp:eme:0";
/// XEP-0334 message processing hints.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0297 forwarding (inside carbons).
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// The body other clients show instead of the encrypted message (Conversations' wording).
pub const FALLBACK_BODY: &str =
    "I sent you an OMEMO encrypted message but your client doesn\u{2019}t seem to support that.";

/// Most devices of one JID we fetch bundles and build sessions for in one go: a device list of a
/// thousand ids (the engine's parsing cap) must not turn one `send` into a thousand fetches.
pub const MAX_SESSION_DEVICES: usize = 64;

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The account database path for `jid` under `data_dir`.
pub fn database_path(data_dir: &Path, jid: &BareJid) -> PathBuf {
    data_dir.join(format!("{jid}.sqlite"))
}

/// Creates the data dir (and missing parents) readable by the user only (0700).
pub fn create_data_dir(data_dir: &Path) -> Result<(), ClientError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(data_dir)
        .map_err(|e| ClientError::io(format!("cannot create {}", data_dir.display()), e))
}

/// Opens the account's OMEMO identity, creating one (new device id, keys) the first time.
pub fn open_account(data_dir: &Path, jid: &BareJid) -> Result<Account<SqliteStore>, ClientError> {
    create_data_dir(data_dir)?;
    let path = database_path(data_dir, jid);
    let (account, _created) =
        Account::open_or_create(SqliteStore::open(&path)?, jid.as_str(), now())?;
    if account.jid() != jid.as_str() {
        return Err(ClientError::AccountMismatch {
            path,
            owner: account.jid().to_owned(),
            expected: jid.to_string(),
        });
    }
    Ok(account)
}

/// One device of a contact (or of us) as `devices` shows it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Device id.
    pub device: u32,
    /// Identity key, when known (from a session or the bundle).
    pub identity: Option<PublicKey>,
    /// Trust of that key.
    pub trust: Option<TrustLevel>,
    /// Why the key is unknown (bundle missing or malformed).
    pub problem: Option<String>,
    /// This is the device we are running on.
    pub this_device: bool,
}

/// A decrypted (or undecryptable) incoming chat message.
#[derive(Debug)]
pub enum Received {
    /// A message we could read.
    Message {
        /// Sender bare JID (our own for messages from our other devices).
        from: String,
        /// Recipient bare JID, for messages we sent from another device (sent carbons).
        to: Option<String>,
        /// Sender device.
        device: u32,
        /// Plaintext.
        body: String,
        /// Trust of the sender's key.
        trust: TrustLevel,
    },
    /// An OMEMO message we cannot read; never dropped silently.
    Undecryptable {
        /// Sender.
        from: String,
        /// Why.
        reason: String,
    },
    /// A device list changed.
    DeviceList {
        /// Whose.
        jid: String,
        /// The devices.
        devices: Vec<u32>,
    },
}

/// The OMEMO service of one account on a live connection. It holds the process's one
/// connection to the account database, the account's store: the device-list cache and the
/// call policies and history are kept through it.
#[derive(Debug)]
pub struct OmemoService {
    xmpp: Xmpp,
    account: Account<SqliteStore>,
    /// Notices call-policy changes (see [`Self::trust_or_policy_changed`]).
    policy_watch: PolicyWatch,
    own: BareJid,
    /// Our account's device list as last fetched, published or notified in this session.
    own_devices: Option<Vec<u32>>,
    /// Another process holds the online lock: it publishes our keys, this one does not.
    guest: bool,
}

fn parse_bare(jid: &str) -> Result<BareJid, ClientError> {
    let j: Jid = jid
        .parse()
        .map_err(|e| ClientError::Usage(format!("'{jid}' is not a valid JID: {e}")))?;
    if j.node().is_none() {
        return Err(ClientError::Usage(format!(
            "'{jid}' is not a user JID (user@domain)"
        )));
    }
    Ok(j.to_bare())
}

/// Parses a contact JID given on the command line.
pub fn contact_jid(jid: &str) -> Result<BareJid, ClientError> {
    parse_bare(jid)
}

impl OmemoService {
    /// Wraps an opened account on a connection; creates the call-policy tables in its
    /// database if missing.
    pub fn new(xmpp: Xmpp, account: Account<SqliteStore>) -> Result<Self, ClientError> {
        let own = xmpp.bare();
        Policies::open(account.store())?;
        Ok(Self {
            xmpp,
            account,
            policy_watch: PolicyWatch::new(),
            own,
            own_devices: None,
            guest: false,
        })
    }

    /// Marks this service as a guest beside the process holding the online lock: it never
    /// publishes our bundle or device list (the holder does, from the same database).
    pub fn set_guest(&mut self, guest: bool) {
        self.guest = guest;
    }

    /// Whether this service is a guest (see [`Self::set_guest`]).
    pub fn is_guest(&self) -> bool {
        self.guest
    }

    /// Call policies and history, on the account store's connection.
    pub fn policies(&self) -> Policies<'_> {
        Policies::opened(self.account.store())
    }

    /// True when trust or a call policy changed since the last call, also in another process
    /// (the first call only starts counting).
    pub fn trust_or_policy_changed(&mut self) -> Result<bool, ClientError> {
        let trust = self.account.trust_changed()?;
        let policy = self
            .policy_watch
            .changed(&Policies::opened(self.account.store()))?;
        Ok(trust || policy)
    }

    /// The engine.
    pub fn account(&self) -> &Account<SqliteStore> {
        &self.account
    }

    /// The engine, mutable.
    pub fn account_mut(&mut self) -> &mut Account<SqliteStore> {
        &mut self.account
    }

    /// The connection.
    pub fn xmpp(&self) -> &Xmpp {
        &self.xmpp
    }

    /// Best effort: a list that cannot be cached is still used.
    fn cache_device_list(&mut self, jid: &str, devices: &[u32]) {
        let _ = self.account.cache_device_list(jid, devices);
    }

    /// Fetches a device list explicitly (servers differ in what they push). A missing node is an
    /// empty list; a malformed one is an error naming the JID. Caches what it got.
    ///
    /// The first time we see a contact's list we also subscribe to it, so that a contact outside
    /// our roster (no presence subscription, no `+notify`) still tells us about new devices.
    pub async fn fetch_device_list(&mut self, jid: &BareJid) -> Result<Vec<u32>, ClientError> {
        let target = (jid != &self.own).then(|| Jid::from(jid.clone()));
        if let Some(t) = &target
            && self.account.store().device_list(jid.as_str())?.is_none()
        {
            // Best effort: servers may refuse subscriptions from strangers.
            let _ = pep::subscribe(&self.xmpp, t.clone(), DEVICELIST_NODE).await;
        }
        match pep::fetch(&self.xmpp, target, DEVICELIST_NODE).await? {
            Fetched::Item(el) => {
                let list = DeviceList::from_element(&el).map_err(|e| {
                    ClientError::Protocol(format!("device list of {jid} is malformed: {e}"))
                })?;
                self.cache_device_list(jid.as_str(), &list.devices);
                if jid == &self.own {
                    self.own_devices = Some(list.devices.clone());
                }
                Ok(list.devices)
            }
            Fetched::Missing(_) => Ok(Vec::new()),
        }
    }

    /// Publishes our device list (keeping the other devices already there) and our bundle, both
    /// with an open access model.
    pub async fn publish_own(&mut self) -> Result<(), ClientError> {
        let own = self.own.clone();
        let mut devices = match self.fetch_device_list(&own).await {
            Ok(d) => d,
            // Our own list is malformed: replace it rather than stay invisible.
            Err(ClientError::Protocol(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        let me = self.account.device_id();
        if self.guest {
            return Ok(());
        }
        // Bundle first: a peer that sees our id in the list should find the bundle.
        self.publish_bundle().await?;
        if !devices.contains(&me) {
            devices.push(me);
            self.publish_device_list(&devices).await?;
        }
        Ok(())
    }

    async fn publish_device_list(&mut self, devices: &[u32]) -> Result<(), ClientError> {
        if self.guest {
            return Ok(());
        }
        let el = DeviceList {
            devices: devices.to_vec(),
        }
        .to_element();
        pep::publish(&self.xmpp, DEVICELIST_NODE, "current", el).await?;
        let own = self.own.to_string();
        self.cache_device_list(&own, devices);
        self.own_devices = Some(devices.to_vec());
        Ok(())
    }

    /// Publishes our current bundle (not as a guest: the lock holder keeps it current).
    pub async fn publish_bundle(&mut self) -> Result<(), ClientError> {
        if self.guest {
            return Ok(());
        }
        let bundle = self.account.bundle()?.to_element();
        pep::publish(
            &self.xmpp,
            &bundle_node(self.account.device_id()),
            "current",
            bundle,
        )
        .await
    }

    /// Fetches and parses a device's bundle.
    pub async fn fetch_bundle(&self, jid: &BareJid, device: u32) -> Result<Bundle, ClientError> {
        let target = (jid != &self.own).then(|| Jid::from(jid.clone()));
        match pep::fetch(&self.xmpp, target, &bundle_node(device)).await? {
            Fetched::Item(el) => Bundle::from_element(&el).map_err(|e| {
                ClientError::Protocol(format!("bundle of {jid} device {device} is malformed: {e}"))
            }),
            Fetched::Missing(why) => Err(ClientError::Protocol(format!(
                "{jid} device {device} has no bundle ({why})"
            ))),
        }
    }

    /// Makes sure a session exists with each device; returns the devices that have one and the
    /// problems with the others.
    pub async fn ensure_sessions(
        &mut self,
        jid: &BareJid,
        devices: &[u32],
    ) -> (Vec<u32>, Vec<String>) {
        let mut ok = Vec::new();
        let mut problems = Vec::new();
        if devices.len() > MAX_SESSION_DEVICES {
            problems.push(format!(
                "{jid} lists {} devices; only the first {MAX_SESSION_DEVICES} are used",
                devices.len()
            ));
        }
        for &d in devices.iter().take(MAX_SESSION_DEVICES) {
            if jid == &self.own && d == self.account.device_id() {
                continue;
            }
            match self.account.has_session(jid.as_str(), d) {
                Ok(true) => {
                    ok.push(d);
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            }
            let built = match self.fetch_bundle(jid, d).await {
                Ok(bundle) => self
                    .account
                    .build_session(jid.as_str(), d, &bundle)
                    .map(|_| ())
                    .map_err(|e| ClientError::Protocol(format!("{jid} device {d}: {e}"))),
                Err(e) => Err(e),
            };
            match built {
                Ok(()) => ok.push(d),
                Err(e) => problems.push(e.to_string()),
            }
        }
        (ok, problems)
    }

    /// Encrypts `text` for every usable device of `to` and our own other devices and sends it.
    /// Returns the devices of `to` it was encrypted for and warnings about skipped devices.
    pub async fn send_message(
        &mut self,
        to: &BareJid,
        text: &str,
    ) -> Result<(Vec<u32>, Vec<String>), ClientError> {
        let their = self.fetch_device_list(to).await?;
        if their.is_empty() {
            return Err(ClientError::Protocol(format!(
                "{to} has no OMEMO devices (no device list published, or not visible to us)"
            )));
        }
        let (their_ok, mut warnings) = self.ensure_sessions(to, &their).await;
        let own = self.own.clone();
        let own_devices = if to == &own {
            Vec::new()
        } else if let Some(known) = self.own_devices.clone() {
            known // fetched or published moments ago by publish_own, or kept fresh by notifications
        } else {
            match self.fetch_device_list(&own).await {
                Ok(d) => d,
                Err(e) => {
                    warnings.push(e.to_string());
                    Vec::new()
                }
            }
        };
        let (own_ok, own_problems) = self.ensure_sessions(&own, &own_devices).await;
        warnings.extend(own_problems);
        let mut recipients = Vec::new();
        let mut for_them = Vec::new();
        for (jid, devices) in [(to, &their_ok), (&own, &own_ok)] {
            for &d in devices {
                let trust = match self.account.session_identity(jid.as_str(), d)? {
                    Some(k) => self.account.trust(jid.as_str(), &k)?,
                    None => continue,
                };
                if trust.is_trusted() {
                    recipients.push(Recipient::new(jid.as_str(), d));
                    if jid == to {
                        for_them.push(d);
                    }
                } else {
                    warnings.push(format!(
                        "not encrypting for {jid} device {d}: its key is {}",
                        trust.as_str()
                    ));
                }
            }
        }
        if for_them.is_empty() {
            let detail = if warnings.is_empty() {
                String::new()
            } else {
                format!(": {}", warnings.join("; "))
            };
            return Err(ClientError::Protocol(format!(
                "no trusted device of {to} to encrypt for{detail}"
            )));
        }
        let encrypted = self.account.encrypt(&recipients, text.as_bytes())?;
        self.xmpp.send(omemo_message(to, &encrypted))?;
        Ok((for_them, warnings))
    }

    /// Handles an incoming message stanza: device-list notifications, OMEMO messages (direct,
    /// carbon copies, offline). Returns what the user should see.
    pub async fn handle_message(&mut self, msg: Message) -> Vec<Received> {
        let mut out = Vec::new();
        let from_bare = msg.from.as_ref().map(|f| f.to_bare());
        if msg.type_ == MessageType::Error {
            // A bounce of something we sent: say so instead of trying to decrypt our own message.
            let why = msg
                .payloads
                .iter()
                .find(|p| p.name() == "error")
                .and_then(|e| e.children().next().map(|c| c.name().to_owned()))
                .unwrap_or_else(|| "unknown error".into());
            out.push(Received::Undecryptable {
                from: from_bare.map(|f| f.to_string()).unwrap_or_default(),
                reason: format!("a message could not be delivered ({why})"),
            });
            return out;
        }
        let from_self = from_bare.as_ref().is_none_or(|f| f == &self.own);
        // Carbons are only valid from our own bare JID (XEP-0280 §11, CVE-2017-5589).
        if from_self {
            for p in &msg.payloads {
                let sent = p.is("sent", crate::presence::CARBONS);
                if (sent || p.is("received", crate::presence::CARBONS))
                    && let Some(inner) = p
                        .get_child("forwarded", FORWARD)
                        .and_then(|f| f.children().find(|c| c.name() == "message"))
                    && let Ok(inner) = Message::try_from(inner.clone())
                {
                    let to = sent
                        .then(|| inner.to.as_ref().map(|t| t.to_bare().to_string()))
                        .flatten();
                    let sender = inner
                        .from
                        .as_ref()
                        .map(|f| f.to_bare())
                        .unwrap_or_else(|| self.own.clone());
                    self.decrypt_into(&inner, &sender, to, &mut out).await;
                }
            }
        }
        for p in &msg.payloads {
            if let Some((node, payload)) = pep::event_item(p)
                && node == DEVICELIST_NODE
            {
                let jid = from_bare.clone().unwrap_or_else(|| self.own.clone());
                match DeviceList::from_element(&payload) {
                    Ok(list) => {
                        self.cache_device_list(jid.as_str(), &list.devices);
                        if jid == self.own {
                            self.own_devices = Some(list.devices.clone());
                        }
                        if jid == self.own && !list.devices.contains(&self.account.device_id()) {
                            // Another client dropped us from the list: put ourselves back.
                            let mut devices = list.devices.clone();
                            devices.push(self.account.device_id());
                            if let Err(e) = self.publish_device_list(&devices).await {
                                out.push(Received::Undecryptable {
                                    from: jid.to_string(),
                                    reason: format!("republishing our device list: {e}"),
                                });
                            }
                        }
                        out.push(Received::DeviceList {
                            jid: jid.to_string(),
                            devices: list.devices,
                        });
                    }
                    Err(e) => out.push(Received::Undecryptable {
                        from: jid.to_string(),
                        reason: format!("malformed device list ignored: {e}"),
                    }),
                }
            }
        }
        if let Some(sender) = from_bare {
            self.decrypt_into(&msg, &sender, None, &mut out).await;
        }
        out
    }

    async fn decrypt_into(
        &mut self,
        msg: &Message,
        sender: &BareJid,
        to: Option<String>,
        out: &mut Vec<Received>,
    ) {
        let Some(el) = msg.payloads.iter().find(|p| p.is("encrypted", AXOLOTL)) else {
            return;
        };
        let enc = match EncryptedElement::from_element(el) {
            Ok(e) => e,
            Err(e) => {
                out.push(Received::Undecryptable {
                    from: sender.to_string(),
                    reason: format!("malformed OMEMO element: {e}"),
                });
                return;
            }
        };
        if sender == &self.own && enc.sid == self.account.device_id() {
            return; // our own message reflected back
        }
        match self.account.decrypt(sender.as_str(), &enc) {
            Ok(d) => {
                if d.bundle_changed {
                    let _ = self.publish_bundle().await;
                }
                if let Some(pt) = d.plaintext {
                    out.push(Received::Message {
                        from: sender.to_string(),
                        to,
                        device: d.sender_device,
                        body: String::from_utf8_lossy(&pt).into_owned(),
                        trust: d.trust,
                    });
                }
            }
            Err(e) => out.push(Received::Undecryptable {
                from: sender.to_string(),
                reason: format!("cannot decrypt message from device {}: {e}", enc.sid),
            }),
        }
    }

    /// Devices of `jid` with fingerprints and trust (for our own JID, includes this device).
    pub async fn devices(&mut self, jid: &BareJid) -> Result<Vec<DeviceInfo>, ClientError> {
        let list = match self.fetch_device_list(jid).await {
            Ok(l) => l,
            Err(e) => {
                // Fall back to what we cached, but say so.
                match self.account.store().device_list(jid.as_str())? {
                    Some(l) => l,
                    None => return Err(e),
                }
            }
        };
        let mut out = Vec::new();
        for d in list {
            if jid == &self.own && d == self.account.device_id() {
                let k = self.account.identity_key();
                out.push(DeviceInfo {
                    device: d,
                    identity: Some(k),
                    trust: Some(TrustLevel::Verified),
                    problem: None,
                    this_device: true,
                });
                continue;
            }
            let (identity, problem) = match self.account.session_identity(jid.as_str(), d)? {
                Some(k) => (Some(k), None),
                None => match self.fetch_bundle(jid, d).await {
                    Ok(b) => match shieldcall_omemo::account::verify_bundle(&b) {
                        Ok(()) => (Some(b.identity_key), None),
                        Err(e) => (None, Some(format!("bundle signature invalid: {e}"))),
                    },
                    Err(e) => (None, Some(e.to_string())),
                },
            };
            let trust = match &identity {
                Some(k) => Some(self.account.trust(jid.as_str(), k)?),
                None => None,
            };
            out.push(DeviceInfo {
                device: d,
                identity,
                trust,
                problem,
                this_device: false,
            });
        }
        Ok(out)
    }
}

/// Devices of `contact` as the account database knows them, without connecting: the cached
/// device list (or, without one, the devices we hold sessions with), each with the identity key
/// of our session and its trust. For our own JID, this device is included.
pub fn offline_devices(
    account: &Account<SqliteStore>,
    contact: &BareJid,
) -> Result<Vec<DeviceInfo>, ClientError> {
    let store = account.store();
    let mut list = match store.device_list(contact.as_str())? {
        Some(l) => l,
        None => store.session_devices(contact.as_str())?,
    };
    let own = contact.as_str() == account.jid();
    if own && !list.contains(&account.device_id()) {
        list.push(account.device_id());
    }
    let mut out = Vec::with_capacity(list.len());
    for d in list {
        if own && d == account.device_id() {
            out.push(DeviceInfo {
                device: d,
                identity: Some(account.identity_key()),
                trust: Some(TrustLevel::Verified),
                problem: None,
                this_device: true,
            });
            continue;
        }
        let identity = account.session_identity(contact.as_str(), d)?;
        let trust = match &identity {
            Some(k) => Some(account.trust(contact.as_str(), k)?),
            None => None,
        };
        out.push(DeviceInfo {
            device: d,
            problem: identity
                .is_none()
                .then(|| "no session yet (its key is fetched when online)".to_owned()),
            identity,
            trust,
            this_device: false,
        });
    }
    Ok(out)
}

/// The OMEMO chat message as Conversations sends it: `<encrypted/>`, the EME hint, the store hint
/// and the fallback body.
pub fn omemo_message(to: &BareJid, encrypted: &EncryptedElement) -> Message {
    let mut m = Message::new(Some(Jid::from(to.clone())));
    m.type_ = MessageType::Chat;
    m.bodies.insert(
        xmpp_parsers::message::Lang(String::new()),
        FALLBACK_BODY.to_owned(),
    );
    m.payloads.push(encrypted.to_element());
    m.payloads.push(
        Element::builder("encryption", EME)
            .attr(nc!("namespace"), AXOLOTL)
            .attr(nc!("name"), "OMEMO")
            .build(),
    );
    m.payloads.push(Element::builder("store", HINTS).build());
    m
}

/// Fingerprint text as Conversations shows it.
pub fn fingerprint(key: &PublicKey) -> String {
    conversations_display(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shieldcall_omemo::MemoryStore;

    /// How many open file descriptors of this process refer to `path`.
    #[cfg(target_os = "linux")]
    fn open_descriptors(path: &Path) -> usize {
        let path = path.canonicalize().unwrap();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target == &path)
            .count()
    }

    /// One connection to the account database per process: the service keeps the device-list
    /// cache and the call policies through the account's store, opening no file of its own.
    #[cfg(target_os = "linux")]
    #[test]
    fn one_database_connection_per_account() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob): (BareJid, BareJid) = (
            "alice@example.org".parse().unwrap(),
            "bob@example.org".parse().unwrap(),
        );
        let path = database_path(dir.path(), &alice);
        let account = open_account(dir.path(), &alice).unwrap();
        assert_eq!(open_descriptors(&path), 1);
        let xmpp = Xmpp::disconnected("alice@example.org/test".parse().unwrap());
        let mut svc = OmemoService::new(xmpp, account).unwrap();
        svc.cache_device_list(bob.as_str(), &[5]);
        svc.policies().set(Some(bob.as_str()), true).unwrap();
        svc.policies()
            .record_verified_call(bob.as_str(), 5, 1_800_000_000)
            .unwrap();
        assert!(!svc.trust_or_policy_changed().unwrap());
        svc.policies().set(None, true).unwrap();
        assert!(svc.trust_or_policy_changed().unwrap());
        assert_eq!(open_descriptors(&path), 1);
        drop(svc);
        assert_eq!(open_descriptors(&path), 0);

        // All of it is in the file.
        let account = open_account(dir.path(), &alice).unwrap();
        let devices = offline_devices(&account, &bob).unwrap();
        assert_eq!(devices.iter().map(|d| d.device).collect::<Vec<_>>(), [5]);
        let settings = Policies::open(account.store())
            .unwrap()
            .contact(bob.as_str())
            .unwrap();
        assert!(settings.require_verified());
        assert_eq!(settings.last_verified_call, Some((5, 1_800_000_000)));
    }

    #[test]
    fn chat_message_has_conversations_shape() {
        let mut a = Account::create(MemoryStore::new(), "alice@example.org", Some(7), 0).unwrap();
        let b = Account::create(MemoryStore::new(), "bob@example.org", Some(9), 0).unwrap();
        a.build_session("bob@example.org", 9, &b.bundle().unwrap())
            .unwrap();
        let enc = a
            .encrypt(&[Recipient::new("bob@example.org", 9)], b"top secret")
            .unwrap();
        let to: BareJid = "bob@example.org".parse().unwrap();
        let el: Element = omemo_message(&to, &enc).into();
        assert_eq!(el.attr("type"), Some("chat"));
        assert_eq!(el.attr("to"), Some("bob@example.org"));
        assert!(el.get_child("encrypted", AXOLOTL).is_some());
        let eme = el.get_child("encryption", EME).unwrap();
        assert_eq!(eme.attr("namespace"), Some(AXOLOTL));
        assert_eq!(eme.attr("name"), Some("OMEMO"));
        assert!(el.get_child("store", HINTS).is_some());
        assert_eq!(
            el.get_child("body", "jabber:client").unwrap().text(),
            FALLBACK_BODY
        );
        assert!(!String::from(&el).contains("top secret"));
    }
}
