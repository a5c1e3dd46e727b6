//! How the CLI shows a call agent's events: JSON lines or words (docs/events.md), the live
//! status line on a terminal, the y/N question for an incoming call, and Ctrl-C/SIGTERM as
//! "hang up everything". Nothing here decides anything about a call.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use minidom::Element;
use serde_json::{Value, json};
use shieldcall_jingle::{CallEnd, Downgrade, Shield};
use shieldcall_media as media;
use shieldcall_omemo::TrustLevel;
use tokio::sync::mpsc;
use xmpp_parsers::jid::BareJid;

use crate::agent::{AgentCommand, AgentEvent, CallPhase, CallSummary};
use crate::error::ClientError;
use crate::output::Output;

/// What the status line shows of one call.
struct Status {
    peer: String,
    phase: CallPhase,
    shield: Option<Shield>,
    device: Option<u32>,
    connected_at: Option<Instant>,
}

/// Shows one agent's events (see the module docs).
pub struct Presenter {
    out: Output,
    tty: bool,
    calls: BTreeMap<String, Status>,
    /// The call the y/N question is about.
    asking: Option<String>,
    /// The live status line is on screen.
    status_shown: bool,
}

impl Presenter {
    /// A presenter printing through `out`.
    pub fn new(out: Output) -> Self {
        Self {
            out,
            tty: std::io::stdout().is_terminal(),
            calls: BTreeMap::new(),
            asking: None,
            status_shown: false,
        }
    }

    /// Shows `events` until the agent ends; answers typed on stdin (with `read_answers`) and
    /// Ctrl-C/SIGTERM become `commands`.
    pub async fn run(
        self,
        events: mpsc::UnboundedReceiver<AgentEvent>,
        commands: mpsc::UnboundedSender<AgentCommand>,
        read_answers: bool,
    ) -> Result<(), ClientError> {
        let lines = crate::output::stdin_lines(read_answers);
        self.run_with_lines(events, commands, lines).await
    }

    /// [`Presenter::run`] with the typed lines from `lines`.
    async fn run_with_lines(
        mut self,
        mut events: mpsc::UnboundedReceiver<AgentEvent>,
        commands: mpsc::UnboundedSender<AgentCommand>,
        mut lines: mpsc::UnboundedReceiver<String>,
    ) -> Result<(), ClientError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigint = signal(SignalKind::interrupt())
            .map_err(|e| ClientError::io("cannot watch for Ctrl-C", e))?;
        let mut sigterm = signal(SignalKind::terminate())
            .map_err(|e| ClientError::io("cannot watch for SIGTERM", e))?;
        loop {
            self.draw_status();
            let tick = tokio::time::sleep(Duration::from_secs(1));
            // Events first: the agent queues a call's `ringing` and its question together, so an
            // answer typed on seeing `ringing` always finds the question asked (unbiased, the
            // line could win the race and be dropped as an answer to nothing).
            tokio::select! {
                biased;
                ev = events.recv() => {
                    self.clear_status();
                    match ev {
                        Some(ev) => self.show(ev),
                        None => return Ok(()),
                    }
                }
                _ = sigint.recv() => { let _ = commands.send(AgentCommand::HangUpAll); }
                _ = sigterm.recv() => { let _ = commands.send(AgentCommand::HangUpAll); }
                Some(line) = lines.recv() => {
                    self.clear_status();
                    if let Some(sid) = self.asking.take() {
                        let accept = matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes");
                        let _ = commands.send(AgentCommand::Answer { sid, accept });
                    }
                }
                _ = tick => self.clear_status(),
            }
        }
    }

    /// Prints one event.
    pub fn show(&mut self, ev: AgentEvent) {
        let out = self.out;
        match ev {
            AgentEvent::Online { jid, again } => {
                let jid = jid.to_string();
                out.event("online", json!({ "jid": jid }), || {
                    if again {
                        format!("online again as {jid}")
                    } else {
                        format!("online as {jid}")
                    }
                });
            }
            AgentEvent::Received(r) => crate::output::report(out, r),
            AgentEvent::Call {
                sid,
                peer,
                phase,
                jmi,
                device,
            } => {
                if phase == CallPhase::Ended && self.asking.as_deref() == Some(sid.as_str()) {
                    self.asking = None;
                    if !out.json {
                        println!();
                    }
                }
                let status = self.calls.entry(sid.clone()).or_insert_with(|| Status {
                    peer: peer.clone(),
                    phase,
                    shield: None,
                    device: None,
                    connected_at: None,
                });
                status.phase = phase;
                if phase == CallPhase::Connected {
                    status.connected_at = Some(Instant::now());
                }
                let state = phase.as_str();
                let mut fields = json!({ "state": state, "sid": sid, "peer": peer });
                if let Value::Object(f) = &mut fields {
                    if let Some(jmi) = jmi {
                        f.insert("jmi".into(), json!(jmi));
                    }
                    if let Some(device) = device {
                        f.insert("device".into(), json!(device));
                    }
                }
                out.event("call", fields, || format!("call with {peer}: {state}"));
            }
            AgentEvent::Asking { sid, from, .. } => {
                if !out.json {
                    print!("incoming call from {from} — answer? [y/N] ");
                    let _ = std::io::stdout().flush();
                }
                self.asking = Some(sid);
            }
            AgentEvent::Shield {
                sid,
                peer,
                shield,
                device,
            } => {
                if let Some(s) = self.calls.get_mut(&sid) {
                    s.shield = Some(shield);
                    s.device = device;
                }
                let (state, symbol, words) = shield_words(shield);
                out.event(
                    "shield",
                    json!({ "sid": sid, "state": state, "device": device }),
                    || match device {
                        Some(d) => format!("{symbol} {words} — {peer}, device {d}"),
                        None => format!("{symbol} {words} — {peer}"),
                    },
                );
            }
            AgentEvent::Downgrade {
                sid,
                peer,
                kind,
                device,
                refused,
            } => {
                let text = downgrade_text(&peer, kind, device, refused);
                out.alarm(
                    "downgrade",
                    json!({ "sid": sid, "kind": kind.as_str(), "peer": peer.to_string(), "device": device, "text": text }),
                    &text,
                );
            }
            AgentEvent::FirstAudio { sid, after } => {
                let ms = after.as_millis() as u64;
                out.event(
                    "audio",
                    json!({ "sid": sid, "state": "first", "ms": ms }),
                    || format!("first audio from the peer after {ms} ms"),
                );
            }
            AgentEvent::Ended { sid, end } => {
                let (reason, text) = end_reason(&end);
                out.event(
                    "ended",
                    json!({ "sid": sid, "reason": reason, "text": text }),
                    || format!("call ended: {reason} ({text})"),
                );
            }
            AgentEvent::Stats(c) => {
                self.calls.remove(&c.sid);
                let (fields, human) = stats(&c);
                out.event("stats", fields, || human);
            }
            AgentEvent::IceServers { servers } => {
                out.event("ice-servers", json!({ "servers": servers }), || {
                    ice_servers_text(&servers)
                });
            }
            AgentEvent::Sent { to, devices } => show_sent(out, &to, &devices),
            AgentEvent::Trusted {
                jid,
                device,
                fingerprint,
                level,
                previous,
            } => show_trusted(out, &jid, device, &fingerprint, level, previous),
            AgentEvent::Connectivity { sid, lost_for } => {
                let ms = lost_for.map(|d| d.as_millis() as u64);
                out.event(
                    "connectivity",
                    json!({ "sid": sid, "up": lost_for.is_some(), "lost_ms": ms }),
                    || match ms {
                        None => {
                            "the call lost its network path; waiting for it to come back".to_owned()
                        }
                        Some(ms) => format!("the network path is back after {ms} ms"),
                    },
                );
            }
            AgentEvent::Warning(w) => out.warning(&w),
            AgentEvent::Error(e) => out.error(&e),
        }
    }

    /// Whether the live status line is used: a terminal, human output, not asking a question.
    fn live(&self) -> bool {
        self.tty && !self.out.json && self.asking.is_none()
    }

    /// The live status line of the running call: state, time, shield in words and symbol, peer
    /// and device.
    fn status_text(&self) -> Option<String> {
        let c = self.calls.values().find(|c| c.phase != CallPhase::Ended)?;
        let elapsed = c
            .connected_at
            .map(|t| {
                let s = t.elapsed().as_secs();
                format!(" {:02}:{:02}", s / 60, s % 60)
            })
            .unwrap_or_default();
        let shield = match c.shield {
            Some(sh) => {
                let (_, symbol, words) = shield_words(sh);
                format!("{symbol} {words}")
            }
            None => "shield: not yet known".to_owned(),
        };
        let device = match c.device {
            Some(d) => format!(", device {d}"),
            None => String::new(),
        };
        Some(format!(
            "\u{25CF} {}{elapsed} | {shield} | {}{device}",
            c.phase.as_str(),
            c.peer
        ))
    }

    /// Removes the live status line before other output.
    fn clear_status(&mut self) {
        if self.status_shown {
            print!("\r\x1b[2K");
            let _ = std::io::stdout().flush();
            self.status_shown = false;
        }
    }

    /// Draws the live status line (no newline: it is redrawn in place).
    fn draw_status(&mut self) {
        if !self.live() {
            return;
        }
        if let Some(text) = self.status_text() {
            print!("\r\x1b[2K{text}");
            let _ = std::io::stdout().flush();
            self.status_shown = true;
        }
    }
}

/// `sent`: a message went out encrypted to these devices of `to` (the `send` and `chat`
/// commands, and the agent's `Send`).
pub fn show_sent(out: Output, to: &BareJid, devices: &[u32]) {
    out.event(
        "sent",
        json!({ "to": to.to_string(), "devices": devices }),
        || format!("sent to {to} (devices {devices:?})"),
    );
}

/// `trusted` / `distrusted`: a device's new trust (the `trust` and `distrust` commands, and the
/// agent's `Trust`).
pub fn show_trusted(
    out: Output,
    jid: &str,
    device: u32,
    fingerprint: &str,
    level: TrustLevel,
    previous: TrustLevel,
) {
    let (event, words) = match level {
        TrustLevel::Distrusted => ("distrusted", "distrusted"),
        _ => ("trusted", "verified"),
    };
    let prev = previous.as_str();
    out.event(
        event,
        json!({ "jid": jid, "device": device, "fingerprint": fingerprint, "previous": prev }),
        || format!("{jid} device {device}: {fingerprint} is now {words} (was {prev})"),
    );
}

/// The pair of candidates media used last: kinds, and the TURN server of a relayed one.
fn path_json(p: &media::stats::SelectedPair) -> Value {
    json!({
        "local": p.local.as_str(),
        "remote": p.remote.as_str(),
        "relay": p.relay.as_ref().map(|r| json!({ "server": r.server, "transport": r.transport.as_str() })),
    })
}

/// When each kind of candidate was first gathered, in ms from the session's start.
fn gathering_json(g: &media::stats::GatheringTimes) -> Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    json!({
        "srflx": ms(g.srflx),
        "relay_udp": ms(g.relay_udp),
        "relay_tcp": ms(g.relay_tcp),
        "relay_tls": ms(g.relay_tls),
        "complete": ms(g.complete),
    })
}

/// What became of one STUN/TURN server (its label, never credentials).
fn ice_server_json(r: &media::stats::IceServerReport) -> Value {
    use media::stats::IceServerState as S;
    let (state, detail) = match &r.state {
        S::Pending => ("pending", None),
        S::Unused => ("unused", None),
        S::Ready { address, .. } => ("ready", Some(address.to_string())),
        S::Failed(why) => ("failed", Some(why.clone())),
        S::Lost(why) => ("lost", Some(why.clone())),
    };
    json!({ "server": r.label, "state": state, "detail": detail })
}

/// `{"proposing": 0, "ringing": 3, …}`: each set-up stage's time from the call's start, in ms
/// with a tenth (the benchmarks read these).
fn stages_json(stages: &[(&'static str, Duration)]) -> Value {
    let map: serde_json::Map<String, Value> = stages
        .iter()
        .map(|(s, d)| {
            let ms = (d.as_secs_f64() * 10_000.0).round() / 10.0;
            ((*s).to_owned(), json!(ms))
        })
        .collect();
    Value::Object(map)
}

/// The `stats` event of an ended call: its JSON fields and its words.
fn stats(c: &CallSummary) -> (Value, String) {
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    let mut fields = json!({
        "sid": c.sid,
        "peer": c.peer,
        "ms_to_shield": ms(c.shield_after),
        "ms_to_first_audio": ms(c.first_audio_after),
        "recording": c.recording.as_ref().map(|p| p.display().to_string()),
        "stages_ms": stages_json(&c.stages),
        "omemo_ms": c.omemo.iter().map(|(op, d)| json!({ "op": op, "ms": d.as_secs_f64() * 1000.0 })).collect::<Vec<_>>(),
    });
    let mut human;
    match &c.media {
        Some(Ok(r)) => {
            let s = &r.stats;
            if let Value::Object(f) = &mut fields {
                f.extend(
                    json!({
                        "packets_sent": s.packets_sent,
                        "packets_received": s.packets_received,
                        "bytes_sent": s.bytes_sent,
                        "bytes_received": s.bytes_received,
                        "frames_sent": r.frames_from_source,
                        "frames_played": s.frames_played,
                        "frames_concealed": s.frames_concealed,
                        "frames_recorded": r.frames_to_sink,
                        "loss": s.local_loss,
                        "remote_loss": s.remote_loss,
                        "jitter_ms": s.jitter_ms(),
                        "rtt_ms": s.rtt.map(|d| d.as_secs_f64() * 1000.0),
                        "media_ms_to_dtls": ms(s.dtls_connected),
                        "path": s.selected_pair.as_ref().map(path_json),
                        "gathering_ms": gathering_json(&s.gathering),
                        "ice_servers": s.ice_servers.iter().map(ice_server_json).collect::<Vec<_>>(),
                        "ice_restarts": s.ice_restarts,
                        "outages_survived": s.outages_survived,
                        "capture": r.capture.as_ref().map(device_json),
                        "playback": r.playback.as_ref().map(device_json),
                    })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                );
            }
            human = format!(
                "stats: sent {} packets, received {}, played {} frames ({} concealed), loss {}, jitter {}, rtt {}; shield after {}, first audio after {}",
                s.packets_sent,
                s.packets_received,
                s.frames_played,
                s.frames_concealed,
                s.local_loss
                    .map_or("n/a".into(), |l| format!("{:.1} %", l * 100.0)),
                s.jitter_ms().map_or("n/a".into(), |j| format!("{j:.1} ms")),
                s.rtt.map_or("n/a".into(), |d| format!(
                    "{:.1} ms",
                    d.as_secs_f64() * 1000.0
                )),
                ms(c.shield_after).map_or("-".into(), |m| format!("{m} ms")),
                ms(c.first_audio_after).map_or("-".into(), |m| format!("{m} ms")),
            );
            if let Some(p) = &s.selected_pair {
                human.push_str(&format!("; path {p}"));
            }
            for (what, d) in [("microphone", &r.capture), ("speaker", &r.playback)] {
                if let Some(d) = d {
                    human.push_str(&format!(
                            "\n{what} {}: {} Hz, {} ch, {} samples dropped (overruns), {} underruns, {} errors{}",
                            d.name,
                            d.sample_rate,
                            d.channels,
                            d.overrun_samples,
                            d.underruns,
                            d.errors,
                            d.last_error.as_ref().map_or(String::new(), |e| format!(" (last: {e})"))
                        ));
                }
            }
        }
        Some(Err(e)) => {
            human = format!("stats: media failed: {e}");
            if let Value::Object(f) = &mut fields {
                f.insert("media_error".into(), Value::String(e.to_string()));
            }
        }
        None => human = "stats: no media ran".to_owned(),
    }
    (fields, human)
}

/// Words and a symbol for a shield (the status line and `--help` use the same).
pub fn shield_words(s: Shield) -> (&'static str, &'static str, &'static str) {
    match s {
        Shield::Verified => ("verified", "\u{1F6E1}", "verified"),
        Shield::Encrypted => ("encrypted", "\u{1F512}", "encrypted, not verified"),
        Shield::None => ("none", "\u{26A0}", "not verified"),
    }
}

fn reason_name(r: &xmpp_parsers::jingle::Reason) -> String {
    Element::from(r.clone()).name().to_owned()
}

/// The `reason` and `text` of the `ended` event.
pub fn end_reason(end: &CallEnd) -> (String, String) {
    match end {
        CallEnd::LocalHangup => ("success".into(), "you hung up".into()),
        CallEnd::LocalReject => ("decline".into(), "you declined".into()),
        CallEnd::PeerTerminated(r) => (reason_name(r), "the peer ended the call".into()),
        CallEnd::Declined => ("decline".into(), "the callee declined".into()),
        CallEnd::Retracted => (
            "retracted".into(),
            "the caller hung up before the answer".into(),
        ),
        CallEnd::Timeout => ("timeout".into(), "nobody answered".into()),
        CallEnd::AnsweredElsewhere => (
            "answered-elsewhere".into(),
            "answered on another device of this account".into(),
        ),
        CallEnd::RejectedElsewhere => (
            "rejected-elsewhere".into(),
            "declined on another device of this account".into(),
        ),
        CallEnd::Superseded(other) => (
            "superseded".into(),
            format!("both called at once; the other call ({other}) goes on"),
        ),
        CallEnd::Failed(e) => (reason_name(&e.reason()), e.to_string()),
        CallEnd::PeerError => (
            "failed-application".into(),
            "the peer answered with an error".into(),
        ),
    }
}

/// What a person reads about a downgrade (also the JSON `text`).
pub fn downgrade_text(
    peer: &BareJid,
    kind: Downgrade,
    device: Option<u32>,
    refused: bool,
) -> String {
    let device = device.map_or_else(String::new, |d| format!(" {d}"));
    let what = match kind {
        Downgrade::UnverifiedDevice => format!(
            "this call uses {peer}'s device{device}, whose key you have not verified (a new device, \
             or one you distrusted)"
        ),
        Downgrade::PlainFingerprints => format!(
            "{peer}'s side sent its call keys (DTLS fingerprints) unencrypted, without OMEMO"
        ),
        Downgrade::NoDevice => format!(
            "{peer}'s answer names no OMEMO device, so the call keys cannot travel encrypted"
        ),
        Downgrade::OmemoFailed => format!(
            "OMEMO could not encrypt the call keys to {peer}'s device{device}, so they travel \
             unencrypted"
        ),
    };
    let then = if refused {
        "The call is refused: calls with this contact must be verified.".to_owned()
    } else {
        format!(
            "The call is NOT verified: a server operator could be listening in. To refuse such \
             calls: shieldcall policy {peer} --require-verified on"
        )
    };
    format!("NOT VERIFIED: you verified {peer} before, but {what}. {then}")
}

/// The `ice-servers` event in words.
fn ice_servers_text(servers: &[String]) -> String {
    if servers.is_empty() {
        "STUN/TURN: none (your server offers none; calls use host addresses only)".to_owned()
    } else {
        format!("STUN/TURN: {}", servers.join(", "))
    }
}

/// What a live device did, for the `stats` event.
fn device_json(d: &media::audio::DeviceReport) -> Value {
    json!({
        "device": d.name,
        "rate": d.sample_rate,
        "channels": d.channels,
        "period_frames": d.period_frames,
        "overrun_samples": d.overrun_samples,
        "underruns": d.underruns,
        "errors": d.errors,
        "last_error": d.last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer typed as soon as `ringing` shows is the answer to that call, even when the
    /// presenter finds the line and the question waiting at the same time.
    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_typed_on_ringing_answers_that_call() {
        for typed in ["n", "y"] {
            let (events_tx, events) = mpsc::unbounded_channel();
            let (commands, mut commands_rx) = mpsc::unbounded_channel();
            let (lines_tx, lines) = mpsc::unbounded_channel();
            let sid = "s1".to_owned();
            let from: xmpp_parsers::jid::FullJid = "alice@localhost/a".parse().unwrap();
            events_tx
                .send(AgentEvent::Call {
                    sid: sid.clone(),
                    peer: from.to_string(),
                    phase: CallPhase::Ringing,
                    jmi: Some(true),
                    device: None,
                })
                .unwrap();
            // The line is there before the presenter looks at anything.
            lines_tx.send(typed.to_owned()).unwrap();
            events_tx
                .send(AgentEvent::Asking {
                    sid: sid.clone(),
                    from,
                    caller_verified: true,
                })
                .unwrap();
            let out = Output { json: true };
            let presenter = Presenter::new(out).run_with_lines(events, commands, lines);
            let task = tokio::spawn(presenter);
            let answer = tokio::time::timeout(Duration::from_secs(5), commands_rx.recv()).await;
            drop(events_tx);
            let _ = task.await;
            match answer {
                Ok(Some(AgentCommand::Answer { sid: s, accept })) => {
                    assert_eq!((s.as_str(), accept), ("s1", typed == "y"));
                }
                other => panic!("typed {typed:?}: no answer for the call: {other:?}"),
            }
        }
    }

    #[test]
    fn ice_servers_in_words() {
        assert!(ice_servers_text(&[]).contains("none"));
        let t = ice_servers_text(&[
            "stun:192.0.2.1:3478?transport=udp".into(),
            "turns:turn.example.org:5349?transport=tcp".into(),
        ]);
        assert_eq!(
            t,
            "STUN/TURN: stun:192.0.2.1:3478?transport=udp, turns:turn.example.org:5349?transport=tcp"
        );
    }

    #[test]
    fn end_reasons_use_the_jingle_names() {
        use xmpp_parsers::jingle::Reason;
        assert_eq!(end_reason(&CallEnd::LocalHangup).0, "success");
        assert_eq!(
            end_reason(&CallEnd::PeerTerminated(Reason::SecurityError)).0,
            "security-error"
        );
        assert_eq!(end_reason(&CallEnd::Declined).0, "decline");
        assert_eq!(end_reason(&CallEnd::Timeout).0, "timeout");
    }
}
