//! The `shieldcall` binary run for an account of a throw-away server: the one command line the
//! demo, the tests and the benchmarks build (JSON output, the loopback server, the account's own
//! data directory, the password from the environment, never from the command line), and the
//! `fingerprint` event they read a device's `xmpp:` URI from.

use std::path::Path;
use std::process::Command;

/// One account as the `shieldcall` binary is run for it.
#[derive(Debug, Clone, Copy)]
pub struct CliAccount<'a> {
    /// The `shieldcall` binary.
    pub exe: &'a Path,
    /// `--server HOST:PORT`.
    pub server: &'a str,
    /// Pass `--insecure-loopback` (plaintext allowed: only for a server on 127.0.0.1; one in
    /// the lab speaks TLS with the throw-away CA, handed over in `SSL_CERT_FILE`).
    pub insecure_loopback: bool,
    /// `--account JID`.
    pub jid: &'a str,
    /// `--data-dir`.
    pub data: &'a Path,
    /// Handed over in `SHIELDCALL_PASSWORD`.
    pub password: &'a str,
}

impl CliAccount<'_> {
    /// `shieldcall --json --insecure-loopback --server … --account … --data-dir … ARGS`, with
    /// the password in the environment and no `SHIELDCALL_ACCOUNT` inherited.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.exe);
        self.add_arguments(&mut c, args);
        c
    }

    /// The same command line run by `base` (`ip netns exec NAME` from
    /// [`crate::lab::Lab::exec`]): the binary and its arguments are appended to it.
    pub fn command_in(&self, mut base: Command, args: &[&str]) -> Command {
        base.arg(self.exe);
        self.add_arguments(&mut base, args);
        base
    }

    fn add_arguments(&self, c: &mut Command, args: &[&str]) {
        c.arg("--json");
        if self.insecure_loopback {
            c.arg("--insecure-loopback");
        }
        c.args(["--server", self.server])
            .args(["--account", self.jid, "--data-dir"])
            .arg(self.data)
            .args(args)
            .env("SHIELDCALL_PASSWORD", self.password)
            .env_remove("SHIELDCALL_ACCOUNT");
    }
}

/// A device as `shieldcall fingerprint` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The OMEMO device id.
    pub id: u64,
    /// The `xmpp:JID?omemo-sid-ID=FINGERPRINT` URI that `shieldcall trust` (or a QR scan)
    /// verifies.
    pub uri: String,
}

/// The device of the first `fingerprint` event among `events` (the JSON lines of
/// `shieldcall --json fingerprint`), if it names one.
pub fn fingerprint_device(events: &[serde_json::Value]) -> Option<Device> {
    let ev = events.iter().find(|v| v["event"] == "fingerprint")?;
    Some(Device {
        id: ev["device_id"].as_u64()?,
        uri: ev["uri"].as_str()?.to_owned(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_keeps_the_password_out_of_the_arguments() {
        let a = CliAccount {
            exe: Path::new("/usr/bin/shieldcall"),
            server: "127.0.0.1:5222",
            insecure_loopback: true,
            jid: "alice@localhost",
            data: Path::new("/tmp/alice"),
            password: "pw",
        };
        let c = a.command(&["listen"]);
        let args: Vec<_> = c
            .get_args()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--json",
                "--insecure-loopback",
                "--server",
                "127.0.0.1:5222",
                "--account",
                "alice@localhost",
                "--data-dir",
                "/tmp/alice",
                "listen"
            ]
        );
        let env: Vec<_> = c.get_envs().collect();
        assert!(env.contains(&("SHIELDCALL_PASSWORD".as_ref(), Some("pw".as_ref()))));
        assert!(env.contains(&("SHIELDCALL_ACCOUNT".as_ref(), None)));
    }

    #[test]
    fn the_fingerprint_event_names_the_device() {
        let events = [
            serde_json::json!({"event": "online"}),
            serde_json::json!({"event": "fingerprint", "device_id": 7, "uri": "xmpp:a@b?omemo-sid-7=00"}),
        ];
        let d = fingerprint_device(&events).unwrap();
        assert_eq!((d.id, d.uri.as_str()), (7, "xmpp:a@b?omemo-sid-7=00"));
        assert_eq!(fingerprint_device(&events[..1]), None);
    }
}
