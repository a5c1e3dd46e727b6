//! Signing in: one call that opens the account, takes the online lock, connects, answers disco
//! and ping in the background, runs key maintenance and publishes our OMEMO keys.

use std::path::PathBuf;

use tokio::sync::mpsc::UnboundedReceiver;
use xmpp_parsers::iq::Iq;

use xmpp_parsers::stanza::Stanza;

use crate::connection::{self, ConnectOptions, Incoming};
use crate::error::ClientError;
use crate::lock::OnlineLock;
use crate::omemo_service::{self, OmemoService, open_account};
use crate::presence;

/// How this process is online with the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The only online process of the account device (`listen`, `call`, `chat` in the CLI):
    /// refused with [`ClientError::InUse`] naming the running pid while another one holds it.
    /// With `calls`, Jingle IQs are left to the caller (the call engine answers them) and disco
    /// shows call support.
    Exclusive {
        /// What the lock file names as its holder's command.
        command: &'static str,
        /// This session makes and answers calls.
        calls: bool,
    },
    /// Takes the lock if free, else runs beside its holder without maintaining or publishing
    /// keys (`send`, `devices`).
    Guest {
        /// What the lock file names as its holder's command.
        command: &'static str,
    },
}

/// What [`sign_in`] needs.
#[derive(Debug)]
pub struct SessionOptions {
    /// The account and server.
    pub connect: ConnectOptions,
    /// The data directory (account databases, lock files); created owner-only if missing.
    pub data_dir: PathBuf,
    /// Exclusive or guest.
    pub role: Role,
}

/// A signed-in account.
#[derive(Debug)]
pub struct Session {
    /// The OMEMO service on the connection.
    pub omemo: OmemoService,
    /// Incoming stanzas and connection events (disco and ping already answered).
    pub incoming: UnboundedReceiver<Incoming>,
    /// The online lock, if this process holds it; released when dropped.
    pub lock: Option<OnlineLock>,
}

/// Signs in (see the module docs). Nothing is published before the lock is decided, so a guest
/// never competes with the exclusive holder for prekey ids.
pub async fn sign_in(opts: SessionOptions) -> Result<Session, ClientError> {
    let SessionOptions {
        connect,
        data_dir,
        role,
    } = opts;
    let jid = connect.jid.to_bare();
    let calls = matches!(role, Role::Exclusive { calls: true, .. });
    let account = open_account(&data_dir, &jid)?;
    let lock = match role {
        Role::Exclusive { command, .. } => Some(OnlineLock::acquire(&data_dir, &jid, command)?),
        Role::Guest { command } => OnlineLock::try_acquire(&data_dir, &jid, command)?.ok(),
    };
    let (xmpp, mut incoming) = connection::connect(&connect).await?;
    // Answer IQs (disco, ping) while the set-up runs and afterwards.
    let answerer = xmpp.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = incoming.recv().await {
            if let Incoming::Stanza(st) = &ev
                && let Stanza::Iq(iq) = st.as_ref()
                && !(calls && is_jingle_iq(iq))
                && let Some(answer) = presence::answer_iq(iq, calls)
            {
                let _ = answerer.send(answer);
                continue;
            }
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    let mut omemo = OmemoService::new(xmpp, account)?;
    // A guest leaves key maintenance and publishing to the process holding the lock.
    omemo.set_guest(lock.is_none());
    if lock.is_some() {
        // New prekeys or a rotated signed prekey are published by publish_own below.
        omemo.account_mut().maintain(omemo_service::now())?;
    }
    omemo.publish_own().await?;
    Ok(Session {
        omemo,
        incoming: rx,
        lock,
    })
}

fn is_jingle_iq(iq: &Iq) -> bool {
    match iq {
        Iq::Set { payload, .. } => payload.is("jingle", shieldcall_jingle::ns::JINGLE),
        _ => false,
    }
}
