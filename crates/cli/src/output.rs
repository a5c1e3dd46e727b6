//! What the CLI prints: one JSON object per line with `--json`, short human lines otherwise.
//! Everything goes to stdout except human-mode errors and warnings, which go to stderr.

use std::io::Write;

use serde_json::{Value, json};

use crate::omemo_service::Received;

/// The printer.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON object per line.
    pub json: bool,
}

impl Output {
    /// Prints an event: `human` in text mode, `{"event": name, ...fields}` in JSON mode.
    pub fn event(&self, name: &str, fields: Value, human: impl FnOnce() -> String) {
        let mut out = std::io::stdout().lock();
        if self.json {
            let mut obj = json!({ "event": name });
            if let (Some(o), Value::Object(f)) = (obj.as_object_mut(), fields) {
                o.extend(f);
            }
            let _ = writeln!(out, "{obj}");
        } else {
            let _ = writeln!(out, "{}", human());
        }
        let _ = out.flush();
    }

    /// Prints an error (the command may go on, e.g. `listen` after an undecryptable message).
    pub fn error(&self, message: &str) {
        if self.json {
            self.event("error", json!({ "message": message }), String::new);
        } else {
            let _ = writeln!(std::io::stderr().lock(), "error: {message}");
        }
    }

    /// Prints an alarm a person must not miss: in JSON mode the event `name` with `fields`; in
    /// human mode `text` framed on stderr, in bold red on a terminal.
    pub fn alarm(&self, name: &str, fields: Value, text: &str) {
        if self.json {
            self.event(name, fields, String::new);
            return;
        }
        use std::io::IsTerminal;
        let mut err = std::io::stderr().lock();
        let (on, off) = if std::io::stderr().is_terminal() {
            ("\x1b[1;31m", "\x1b[0m")
        } else {
            ("", "")
        };
        let bar = "\u{26A0}".repeat(3);
        let _ = writeln!(err, "{on}{bar} {text} {bar}{off}");
    }

    /// Prints a warning (something skipped, the command goes on).
    pub fn warning(&self, message: &str) {
        if self.json {
            self.event("warning", json!({ "message": message }), String::new);
        } else {
            let _ = writeln!(std::io::stderr().lock(), "warning: {message}");
        }
    }
}

/// Prints what the OMEMO service received.
pub fn report(out: Output, r: Received) {
    match r {
        Received::Message { from, to, device, body, trust } => out.event(
            "message",
            json!({ "from": from, "to": to, "device": device, "body": body, "trust": trust.as_str() }),
            || match &to {
                Some(to) => format!("[{}] {from} (device {device}, to {to}): {body}", trust.as_str()),
                None => format!("[{}] {from} (device {device}): {body}", trust.as_str()),
            },
        ),
        Received::Undecryptable { from, reason } => out.error(&format!("message from {from}: {reason}")),
        Received::DeviceList { jid, devices } => out.event(
            "devicelist",
            json!({ "jid": jid, "devices": devices }),
            || format!("{jid} now has devices {devices:?}"),
        ),
    }
}

/// The lines typed on stdin (with `read`), read on a plain thread because stdin blocks; without
/// `read` a receiver that is closed at once.
pub fn stdin_lines(read: bool) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    if read {
        std::thread::spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    rx
}
