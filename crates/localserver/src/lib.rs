//! Throw-away local servers for shieldcall's demo, tests and benchmarks, and the bounded child
//! processes they need: one implementation of each, used by all three (`publish = false`).
//!
//! * [`Prosody`]: a Prosody (Debian 12's 0.12) in a directory of its own, plaintext c2s (and,
//!   with [`ProsodyConfig::tls`], STARTTLS and direct TLS with a throw-away CA) on free loopback
//!   ports, only the modules a client needs for OMEMO and calls; stopped by pid when dropped.
//! * [`Ejabberd`]: an ejabberd (Debian 12's 23.01) the same way, for tests against a second
//!   server implementation; it waits for the virtual host, not only the port, before
//!   registering.
//! * [`PulseAudio`]: a sound server of its own (its socket, its modules), for tests through real
//!   audio devices; ready once a sink renders.
//! * [`process`]: finding a tool, a free loopback port, running a command to its end within a
//!   deadline (both pipes drained, killed by pid when late or cancelled), and trimming output
//!   for one-line error messages.
//! * [`cli`]: the `shieldcall` command line for an account of such a server, and the device
//!   its `fingerprint` event names.
//! * [`WorkDir`]: a private temporary directory, removed unless kept.
//! * [`wav`]: reading a call's recording and judging it (its tone, its length, silence, the
//!   frames that carry a tone).
//! * [`lab`] and [`Coturn`]: the network-namespace lab (two home hosts behind NAT routers,
//!   endpoint-independent or symmetric, and an internet segment for the servers, on the
//!   documentation ranges only, removed when dropped) and a throw-away coturn in it (or on
//!   loopback) with its REST credentials ([`rest_credentials`]); docs/lab.md.
//!
//! Nothing here reads the network beyond 127.0.0.1, and every wait has a deadline. Errors are
//! [`Error`] values; the tests' panicking wrappers live with the tests.
//!
//! ```no_run
//! use shieldcall_localserver::{Prosody, ProsodyConfig, process};
//! # fn main() -> Result<(), shieldcall_localserver::Error> {
//! let dir = std::env::temp_dir().join("example-prosody");
//! std::fs::create_dir_all(&dir).map_err(|e| shieldcall_localserver::Error::io("mkdir", e))?;
//! let server = Prosody::launch(&dir, &ProsodyConfig::default(), &process::never)?;
//! server.register("alice", "secret")?;
//! println!("log in to alice@localhost at {}", server.server());
//! # Ok(()) }
//! ```

mod certs;
pub mod cli;
mod coturn;
mod ejabberd;
pub mod lab;
pub mod process;
mod prosody;
mod pulseaudio;
pub mod wav;
mod workdir;

pub use coturn::{Coturn, CoturnConfig, TurnCredentials, rest_credentials};
pub use ejabberd::{
    Ejabberd, EjabberdConfig, StunDisco, StunDiscoService, StunDiscoTransport, StunDiscoType,
};
pub use lab::Lab;
pub use prosody::{DOMAIN, InNamespace, Prosody, ProsodyConfig, TurnExternal};
pub use pulseaudio::PulseAudio;
pub use workdir::WorkDir;

use std::process::ExitStatus;
use std::time::Duration;

/// What went wrong starting or driving a local server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool is not installed (Debian package named).
    #[error("{tool} is not installed (Debian: apt-get install -y {package})")]
    NotInstalled {
        /// The executable looked for.
        tool: String,
        /// The Debian package that has it.
        package: String,
    },
    /// A file system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command or a wait did not finish in time.
    #[error("{what} did not finish within {}s", limit.as_secs())]
    Timeout {
        /// What was waited for.
        what: String,
        /// The deadline it had.
        limit: Duration,
    },
    /// The caller's cancel condition became true (Ctrl-C in the demo).
    #[error("{what}: cancelled")]
    Cancelled {
        /// What was cut short.
        what: String,
    },
    /// A command ran and failed.
    #[error("{what} failed ({status}): {output}")]
    Failed {
        /// The command.
        what: String,
        /// How it ended.
        status: ExitStatus,
        /// What it printed, on one line.
        output: String,
    },
    /// A server exited or never became ready; with the end of its log.
    #[error("{what}; last output: {output}")]
    NotReady {
        /// What happened.
        what: String,
        /// The end of its log and console, on one line.
        output: String,
    },
}

impl Error {
    /// An [`Error::Io`] for `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
