//! Certificates for a cluster's internal TLS: a CA of its own and one key pair it signs,
//! valid as both server and client (every flink-rs process both accepts and opens
//! connections). `flink-rs tls-certificates` writes them to files for a standalone cluster
//! and compose; the operator keeps them in a Secret per FlinkJob; tests use them too.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating certificates: {0}")]
    Generate(String),
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn failed(e: impl std::fmt::Display) -> CertError {
    CertError::Generate(e.to_string())
}

/// A bearer token for a jobmanager's REST API (`rest.authentication.token-file`): 32 bytes
/// from the system's secure random source, as 64 hex digits.
pub fn random_token() -> Result<String, CertError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CertError::Generate("the system's random source failed".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A CA and a key pair it signed, as PEM text.
#[derive(Clone)]
pub struct Issued {
    /// The CA certificate: the truststore (`security.ssl.internal.truststore`).
    pub truststore: String,
    /// The private key, its certificate and the CA's, in that order: the keystore
    /// (`security.ssl.internal.keystore`).
    pub keystore: String,
    /// When both certificates stop being valid.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("Issued")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A new CA, and a key pair it signs for `hosts` (DNS names or IP addresses; `localhost` and
/// `127.0.0.1` are always included), valid from a day ago for `days` days.
pub fn issue(hosts: &[String], days: u32) -> Result<Issued, CertError> {
    let now = time::OffsetDateTime::now_utc();
    let from = now - time::Duration::days(1);
    let until = now + time::Duration::days(i64::from(days.max(1)));

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "flink-rs cluster CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca.not_before, ca.not_after) = (from, until);
    let ca =
        CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(failed)?).map_err(failed)?;

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    for h in hosts {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
        }
    }
    let mut leaf = CertificateParams::new(names).map_err(failed)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "flink-rs cluster");
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    (leaf.not_before, leaf.not_after) = (from, until);
    let key = KeyPair::generate().map_err(failed)?;
    let cert = leaf.signed_by(&key, &ca).map_err(failed)?;
    let seconds = u64::try_from(until.unix_timestamp()).map_err(failed)?;
    Ok(Issued {
        truststore: ca.pem(),
        keystore: format!("{}{}{}", key.serialize_pem(), cert.pem(), ca.pem()),
        not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
    })
}

/// The files [`generate`] writes.
#[derive(Debug, Clone)]
pub struct Generated {
    /// `ca.pem`: the truststore.
    pub truststore: PathBuf,
    /// `cluster.pem`: the keystore, readable by its owner only.
    pub keystore: PathBuf,
}

impl Generated {
    /// Where [`generate`] writes into `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Generated {
            truststore: dir.join("ca.pem"),
            keystore: dir.join("cluster.pem"),
        }
    }
}

/// Writes [`issue`]'s certificates into `dir` as `ca.pem` and `cluster.pem` (mode 0600).
pub fn generate(dir: &Path, hosts: &[String], days: u32) -> Result<Generated, CertError> {
    let issued = issue(hosts, days)?;
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        op: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let files = Generated::in_dir(dir);
    write(&files.truststore, &issued.truststore, 0o644)?;
    write(&files.keystore, &issued.keystore, 0o600)?;
    Ok(files)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |op, source| CertError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    // Created with its final mode: the private key is never readable by others, not even
    // for a moment.
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io("create", e))?;
    f.write_all(text.as_bytes()).map_err(|e| io("write", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let a = random_token().expect("token");
        let b = random_token().expect("token");
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn the_keystore_holds_key_leaf_and_ca_and_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let files = generate(dir.path(), &["jm.example".into()], 30).expect("generate");
        let mode = |f: &Path| std::fs::metadata(f).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&files.keystore), 0o600);
        assert_eq!(mode(&files.truststore), 0o644);
        let ks = std::fs::read_to_string(&files.keystore).expect("keystore");
        let ca = std::fs::read_to_string(&files.truststore).expect("truststore");
        assert!(ks.starts_with("-----BEGIN PRIVATE KEY-----"), "{ks}");
        assert_eq!(ks.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(ks.ends_with(&ca), "the chain ends with the CA");

        let issued = issue(&[], 30).expect("issue");
        let days = issued
            .not_after
            .duration_since(SystemTime::now())
            .expect("in the future")
            .as_secs()
            / 86_400;
        assert!((29..=30).contains(&days), "{days}");
        assert!(!format!("{issued:?}").contains("PRIVATE"));
    }
}
