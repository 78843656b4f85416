//! The `security.ssl.*` keys, the generated certificates, and who a handshake lets in.

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use std::io::{Read, Write};

use super::*;

/// A cluster's certificates in a temporary directory.
pub(crate) struct TestPki {
    /// Holds the files for as long as the value lives.
    _dir: tempfile::TempDir,
    pub files: Generated,
}

pub(crate) fn pki() -> TestPki {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = generate(dir.path(), &["tm-0.example".to_string()], 2).expect("generate");
    TestPki { _dir: dir, files }
}

pub(crate) fn internal_config(p: &TestPki) -> ClusterConfig {
    let mut cfg = ClusterConfig::default();
    cfg.set(INTERNAL_ENABLED, "true");
    cfg.set(INTERNAL_KEYSTORE, &p.files.keystore.display().to_string());
    cfg.set(
        INTERNAL_TRUSTSTORE,
        &p.files.truststore.display().to_string(),
    );
    cfg
}

pub(crate) fn internal(p: &TestPki) -> InternalTls {
    TlsSettings::from_config(&internal_config(p))
        .expect("settings")
        .internal
        .expect("internal TLS on")
}

fn message(cfg: &ClusterConfig) -> String {
    match TlsSettings::from_config(cfg) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn keys_are_read_as_flink_names_them_and_mistakes_are_named() {
    let p = pki();
    let off = TlsSettings::from_config(&ClusterConfig::default()).expect("defaults");
    assert!(
        off.internal.is_none() && off.rest.is_none(),
        "off by default"
    );
    assert!(TlsSettings::from_config(&internal_config(&p)).is_ok());

    let mut cfg = ClusterConfig::default();
    cfg.set(INTERNAL_ENABLED, "true");
    let m = message(&cfg);
    assert!(
        m.contains(INTERNAL_KEYSTORE) && m.contains("required"),
        "{m}"
    );

    let mut cfg = internal_config(&p);
    cfg.set(INTERNAL_ENABLED, "yes");
    assert!(message(&cfg).contains("expected true or false"));

    let mut cfg = internal_config(&p);
    cfg.set("security.ssl.internal.keystore-password", "secret");
    let m = message(&cfg);
    assert!(m.contains("keystore-password") && m.contains("PEM"), "{m}");

    let mut cfg = ClusterConfig::default();
    cfg.set("security.ssl.enabled", "true");
    assert!(message(&cfg).contains(INTERNAL_ENABLED));

    let mut cfg = ClusterConfig::default();
    cfg.set("security.ssl.rest.keystre", "x");
    let m = message(&cfg);
    assert!(m.contains("keystre") && m.contains(REST_KEYSTORE), "{m}");

    // A truststore given as keystore: certificates but no key.
    let mut cfg = internal_config(&p);
    cfg.set(INTERNAL_KEYSTORE, &p.files.truststore.display().to_string());
    let m = message(&cfg);
    assert!(
        m.contains(INTERNAL_KEYSTORE) && m.contains("private key"),
        "{m}"
    );

    let mut cfg = internal_config(&p);
    cfg.set(INTERNAL_TRUSTSTORE, "/nonexistent/ca.pem");
    let m = message(&cfg);
    assert!(
        m.contains("/nonexistent/ca.pem") && m.contains(INTERNAL_TRUSTSTORE),
        "{m}"
    );

    // REST: client authentication needs a truststore of the clients' issuers.
    let mut cfg = ClusterConfig::default();
    cfg.set(REST_ENABLED, "true");
    cfg.set(REST_KEYSTORE, &p.files.keystore.display().to_string());
    assert!(TlsSettings::from_config(&cfg).expect("rest").rest.is_some());
    cfg.set(REST_AUTHENTICATION, "true");
    assert!(message(&cfg).contains(REST_TRUSTSTORE));
}

/// Connects `client` to a server using `server`; returns what the server read (or its
/// error) and the client's error, if any.
fn exchange(
    server: InternalTls,
    client: &InternalTls,
    addr_name: &str,
) -> (Result<Vec<u8>>, Result<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = std::thread::spawn(move || -> Result<Vec<u8>> {
        let (tcp, _) = listener.accept().map_err(|e| Error::io("accept", "", e))?;
        let mut s = DataStream::accept(tcp, Some(&server), Duration::from_secs(10))?;
        let mut got = vec![0u8; 5];
        s.read_exact(&mut got)
            .map_err(|e| Error::io("read", "", e))?;
        s.write_all(b"ok").map_err(|e| Error::io("write", "", e))?;
        s.flush().map_err(|e| Error::io("flush", "", e))?;
        Ok(got)
    });
    let sent = (|| -> Result<()> {
        let tcp =
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| Error::io("connect", "", e))?;
        let mut s = DataStream::connect(
            tcp,
            &format!("{addr_name}:{port}"),
            Some(client),
            Duration::from_secs(10),
        )?;
        s.write_all(b"hello")
            .map_err(|e| Error::io("write", "", e))?;
        s.flush().map_err(|e| Error::io("flush", "", e))?;
        let mut ok = [0u8; 2];
        s.read_exact(&mut ok)
            .map_err(|e| Error::io("read", "", e))?;
        Ok(())
    })();
    (accepted.join().expect("server thread"), sent)
}

#[test]
fn both_ends_must_hold_a_certificate_of_the_cluster() {
    let ours = pki();
    let theirs = pki();
    // Same cluster: data flows both ways.
    let (got, sent) = exchange(internal(&ours), &internal(&ours), "127.0.0.1");
    assert_eq!(got.expect("server read"), b"hello");
    sent.expect("client");

    // A client whose certificate another CA signed: the server refuses it, and the client
    // learns it on its first read.
    let (got, sent) = exchange(internal(&ours), &internal(&theirs), "127.0.0.1");
    let e = got
        .expect_err("server must refuse an unknown client")
        .to_string();
    assert!(e.contains("TLS handshake"), "{e}");
    assert!(sent.is_err(), "the client was let in");

    // A server whose certificate another CA signed: the client refuses it.
    let (got, sent) = exchange(internal(&theirs), &internal(&ours), "127.0.0.1");
    let e = sent
        .expect_err("client must refuse an unknown server")
        .to_string();
    assert!(e.contains("TLS handshake with 127.0.0.1"), "{e}");
    assert!(got.is_err());
}

#[test]
fn host_names_are_checked_unless_verify_hostname_is_false() {
    let p = pki();
    // The certificate names localhost, 127.0.0.1 and tm-0.example, not tm-9.example.
    let (_, sent) = exchange(internal(&p), &internal(&p), "tm-0.example");
    sent.expect("a name in the certificate");
    let (_, sent) = exchange(internal(&p), &internal(&p), "tm-9.example");
    let e = sent.expect_err("a name not in the certificate").to_string();
    assert!(
        e.contains("tm-9.example") || e.contains("not valid for"),
        "{e}"
    );

    let mut cfg = internal_config(&p);
    cfg.set(VERIFY_HOSTNAME, "false");
    let lax = TlsSettings::from_config(&cfg)
        .expect("settings")
        .internal
        .expect("on");
    let (got, sent) = exchange(internal(&p), &lax, "tm-9.example");
    sent.expect("the name is not checked, the chain still is");
    assert_eq!(got.expect("read"), b"hello");
    let other = pki();
    let (_, sent) = exchange(internal(&other), &lax, "tm-9.example");
    assert!(
        sent.is_err(),
        "verify-hostname=false must still check the chain"
    );
}
