//! Throw-away certificates with `openssl`: a CA of its own and one server certificate it signed,
//! for the servers that speak TLS in the tests (Prosody's c2s, coturn's TURN over TLS). Clients
//! trust exactly that CA (its file), never the system roots.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::process::{find_tool, run_ok};

/// How long one `openssl` call may take.
const TOOL_LIMIT: Duration = Duration::from_secs(30);

/// Makes a throw-away CA (`dir/ca.crt`, its key `dir/ca.key`) and a certificate it signed for
/// `names` (`dir/certs/{stem}.crt`, its key `dir/certs/{stem}.key`, subject `CN={stem}`), valid
/// two days, P-256. `names` are subjectAltName entries as openssl writes them, such as
/// `DNS:localhost` or `IP:203.0.113.10`: what a client checks the server's name against.
pub(crate) fn make_certificates(
    dir: &Path,
    stem: &str,
    names: &[String],
    cancelled: &dyn Fn() -> bool,
) -> Result<(), Error> {
    let openssl = find_tool("openssl", "openssl")?;
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs)
        .map_err(|e| Error::io(format!("cannot create {}", certs.display()), e))?;
    let run = |args: &[&str]| {
        let mut cmd = Command::new(&openssl);
        cmd.args(args).current_dir(dir);
        run_ok(cmd, TOOL_LIMIT, &format!("openssl {}", args[0]), cancelled).map(|_| ())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=shieldcall test CA",
    ];
    run(&[&["req", "-x509"][..], &ec, &ca].concat())?;
    let (key, csr, crt, ext) = (
        format!("certs/{stem}.key"),
        format!("{stem}.csr"),
        format!("certs/{stem}.crt"),
        format!("{stem}.ext.cnf"),
    );
    let subject = format!("/CN={stem}");
    let request = ["-keyout", &key, "-out", &csr, "-subj", &subject];
    run(&[&["req"][..], &ec, &request].concat())?;
    let ext_path = dir.join(&ext);
    std::fs::write(
        &ext_path,
        format!(
            "subjectAltName={}\nbasicConstraints=CA:FALSE\n",
            names.join(",")
        ),
    )
    .map_err(|e| Error::io(format!("cannot write {}", ext_path.display()), e))?;
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        &crt,
        "-days",
        "2",
        "-extfile",
        &ext,
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::process::never;

    #[test]
    fn the_certificate_names_what_it_was_made_for_and_its_ca_verifies_it() {
        let dir = std::env::temp_dir().join(format!("localserver-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let names = ["DNS:localhost".to_owned(), "IP:203.0.113.10".to_owned()];
        make_certificates(&dir, "turn", &names, &never).unwrap();
        let openssl = find_tool("openssl", "openssl").unwrap();
        let mut verify = Command::new(&openssl);
        verify
            .args(["verify", "-CAfile", "ca.crt", "-verify_ip", "203.0.113.10"])
            .arg("certs/turn.crt")
            .current_dir(&dir);
        run_ok(verify, TOOL_LIMIT, "openssl verify", &never).unwrap();
        let mut text = Command::new(&openssl);
        text.args(["x509", "-noout", "-text", "-in", "certs/turn.crt"])
            .current_dir(&dir);
        let shown = run_ok(text, TOOL_LIMIT, "openssl x509", &never).unwrap();
        assert!(shown.stdout.contains("DNS:localhost"), "{}", shown.stdout);
        assert!(
            shown.stdout.contains("IP Address:203.0.113.10"),
            "{}",
            shown.stdout
        );
        assert!(
            shown.stdout.contains("Subject: CN = turn"),
            "{}",
            shown.stdout
        );
        assert!(dir.join("certs/turn.key").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
