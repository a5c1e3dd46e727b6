//! The same client against ejabberd 23.01 (Debian), which differs from Prosody where clients often
//! stumble: PEP errors for strangers, publish-options handling, no push of last items to a
//! stranger. Started by the test like Prosody; fails (never skips) when ejabberd is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Ejabberd, User, json_lines};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn ejabberd_publish_fetch_and_exchange_both_ways() {
    let e = Ejabberd::start(&["alice", "bob", "carol"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&e, "alice", tmp.path().join("alice"));
    let a2 = User::new(&e, "alice", tmp.path().join("alice-2"));
    let bob = User::new(&e, "bob", tmp.path().join("bob"));
    let carol = User::new(&e, "carol", tmp.path().join("carol"));
    let fa = alice.fingerprint();
    let fb = bob.fingerprint();

    // bob has never published: "no device list" is a clear error, not a crash.
    let out = alice.run(&["send", "bob@localhost", "too early"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        json_lines(&out)[0]["message"]
            .as_str()
            .unwrap()
            .contains("no OMEMO devices")
    );

    let mut bob_listen = bob.listen();
    let out = alice.run(&["send", "bob@localhost", "hello over ejabberd"]);
    assert!(out.status.success(), "{out:?}");
    let m = bob_listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(m["body"], "hello over ejabberd");
    assert_eq!(m["device"], fa["device_id"]);

    let mut a2_listen = a2.listen();
    let out = bob.run(&["send", "alice@localhost", "reply over ejabberd"]);
    assert!(out.status.success(), "{out:?}");
    let r = a2_listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(r["body"], "reply over ejabberd");
    assert_eq!(r["device"], fb["device_id"]);

    // A stranger fetches both accounts' nodes (access model open).
    for (who, f) in [("alice@localhost", &fa), ("bob@localhost", &fb)] {
        let out = carol.run(&["devices", who]);
        assert!(out.status.success(), "{out:?}");
        let devs = json_lines(&out);
        let d = devs
            .iter()
            .find(|d| d["device"] == f["device_id"])
            .unwrap_or_else(|| panic!("{devs:?}"));
        assert_eq!(d["fingerprint"], f["fingerprint"]);
    }

    // Offline storage (ejabberd skips `no-store` messages; ours carry the store hint) and the
    // sent carbon to alice's other device.
    bob_listen.stop();
    let out = alice.run(&["send", "bob@localhost", "stored by ejabberd"]);
    assert!(out.status.success(), "{out:?}");
    let c = a2_listen.wait_for(
        |v| v["event"] == "message" && v["to"] == "bob@localhost",
        WAIT,
    );
    assert_eq!(c["body"], "stored by ejabberd");
    assert_eq!(c["device"], fa["device_id"]);
    let mut bob_listen = bob.listen();
    let m = bob_listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(m["body"], "stored by ejabberd");
    bob_listen.stop();
    a2_listen.stop();
}
