//! TLS for the cluster's connections, with Flink's `security.ssl.*` keys.
//!
//! Two independent settings, as in Flink:
//! - **internal** (`security.ssl.internal.*`): the taskmanagers' gRPC sessions with the
//!   jobmanager and the data plane between taskmanagers. Both ends authenticate: a server
//!   accepts only clients whose certificate chains to the truststore, and a client accepts
//!   only servers whose certificate does. Every process of a cluster usually holds the same
//!   key pair, signed by a CA of the cluster (or self-signed, then trusted as itself).
//! - **REST** (`security.ssl.rest.*`): the jobmanager's REST API and dashboard over HTTPS,
//!   with client certificates required when `security.ssl.rest.authentication-enabled`.
//!
//! Flink's keystores and truststores are Java files with passwords; here a keystore is one PEM
//! file holding the private key and its certificate chain (leaf first) and a truststore a PEM
//! file of trusted certificates, so the password and store-type keys have no meaning and are
//! refused rather than ignored. Connections use TLS 1.3 (rustls, with the `ring` provider).

mod blocking;
mod connector;
mod incoming;
mod verifier;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use flink_rs_core::error::{Error, Result};

use crate::config::ClusterConfig;

pub(crate) use blocking::DataStream;
pub(crate) use connector::GrpcConnector;
pub use flink_rs_certificates::{Generated, Issued, generate, issue};
pub(crate) use incoming::{TlsListener, accept_tls};

pub const INTERNAL_ENABLED: &str = "security.ssl.internal.enabled";
pub const INTERNAL_KEYSTORE: &str = "security.ssl.internal.keystore";
pub const INTERNAL_TRUSTSTORE: &str = "security.ssl.internal.truststore";
pub const REST_ENABLED: &str = "security.ssl.rest.enabled";
pub const REST_KEYSTORE: &str = "security.ssl.rest.keystore";
pub const REST_TRUSTSTORE: &str = "security.ssl.rest.truststore";
pub const REST_AUTHENTICATION: &str = "security.ssl.rest.authentication-enabled";
pub const VERIFY_HOSTNAME: &str = "security.ssl.verify-hostname";

/// The `security.ssl.*` keys this implementation reads; any other is an error.
const KEYS: [&str; 8] = [
    INTERNAL_ENABLED,
    INTERNAL_KEYSTORE,
    INTERNAL_TRUSTSTORE,
    REST_ENABLED,
    REST_KEYSTORE,
    REST_TRUSTSTORE,
    REST_AUTHENTICATION,
    VERIFY_HOSTNAME,
];

/// The TLS a jobmanager or taskmanager runs with, from its configuration.
#[derive(Clone, Default)]
pub struct TlsSettings {
    /// Internal connections (gRPC, data plane); `None`: plain TCP.
    pub internal: Option<InternalTls>,
    /// The REST server's TLS; `None`: plain HTTP.
    pub rest: Option<Arc<ServerConfig>>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("internal", &self.internal.is_some())
            .field("rest", &self.rest.is_some())
            .finish()
    }
}

/// Both ends of an internal connection: the server side requires and checks the client's
/// certificate, the client side checks the server's.
#[derive(Clone)]
pub struct InternalTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl TlsSettings {
    /// Reads the `security.ssl.*` keys of `cfg`, loading the key and certificate files they
    /// name. A key this implementation does not have, a missing file or one without the
    /// expected PEM blocks is an error naming the key.
    pub fn from_config(cfg: &ClusterConfig) -> Result<Self> {
        for (k, _) in cfg.pairs() {
            if k.starts_with("security.ssl.") && !KEYS.contains(&k.as_str()) {
                return Err(unsupported(&k));
            }
        }
        let verify_hostname = flag(cfg, VERIFY_HOSTNAME, true)?;
        let internal = if flag(cfg, INTERNAL_ENABLED, false)? {
            let identity = Identity::load(cfg, INTERNAL_KEYSTORE, INTERNAL_ENABLED)?;
            let roots = truststore(cfg, INTERNAL_TRUSTSTORE, INTERNAL_ENABLED)?;
            Some(InternalTls::new(identity, roots, verify_hostname)?)
        } else {
            None
        };
        let rest = if flag(cfg, REST_ENABLED, false)? {
            let identity = Identity::load(cfg, REST_KEYSTORE, REST_ENABLED)?;
            let clients = if flag(cfg, REST_AUTHENTICATION, false)? {
                Some(truststore(cfg, REST_TRUSTSTORE, REST_AUTHENTICATION)?)
            } else {
                None
            };
            Some(Arc::new(server_config(identity, clients, REST_KEYSTORE)?))
        } else {
            None
        };
        Ok(TlsSettings { internal, rest })
    }
}

impl InternalTls {
    fn new(identity: Identity, roots: RootCertStore, verify_hostname: bool) -> Result<Self> {
        let roots = Arc::new(roots);
        let server = server_config(identity.clone(), Some((*roots).clone()), INTERNAL_KEYSTORE)?;
        let client = client_config(roots, Some(identity), verify_hostname, INTERNAL_KEYSTORE)?;
        Ok(InternalTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    pub(crate) fn server(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    pub(crate) fn client(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }
}

/// A REST client's TLS: servers are checked against `truststore` (a PEM file of trusted
/// certificates, in place of the system's) and their host name, and `keystore` (a PEM private
/// key and chain) is presented when the server asks for a client certificate
/// (`security.ssl.rest.authentication-enabled`).
pub fn rest_client_config(truststore: &str, keystore: Option<&str>) -> Result<ClientConfig> {
    let roots = read_truststore("--truststore", truststore)?;
    let identity = keystore
        .map(|k| Identity::read("--keystore", k))
        .transpose()?;
    client_config(Arc::new(roots), identity, true, "--keystore")
}

/// The name a client expects in the certificate of the server at `host` (a DNS name or an
/// IP address, with or without brackets).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| Error::Network(format!("`{host}` is not a valid TLS server name: {e}")))
}

/// The host part of `host:port` (`[v6]:port` too).
pub(crate) fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn unsupported(key: &str) -> Error {
    let message = if key.ends_with("password") || key.ends_with("-type") {
        "is not supported: keystores and truststores are PEM files here (a keystore holds \
         the private key, unencrypted, and its certificate chain), so they have no password \
         or type"
            .to_string()
    } else if key == "security.ssl.enabled" {
        format!("was replaced in Flink by `{INTERNAL_ENABLED}` and `{REST_ENABLED}`: set those")
    } else {
        format!(
            "is not supported; the supported keys are {}",
            KEYS.join(", ")
        )
    };
    Error::Config {
        key: key.to_string(),
        message,
    }
}

fn flag(cfg: &ClusterConfig, key: &str, default: bool) -> Result<bool> {
    match cfg.get(key).map(str::trim) {
        None => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(Error::Config {
            key: key.to_string(),
            message: format!("expected true or false, got `{v}`"),
        }),
    }
}

fn required<'a>(cfg: &'a ClusterConfig, key: &str, because: &str) -> Result<&'a str> {
    cfg.get(key).ok_or_else(|| Error::Config {
        key: key.to_string(),
        message: format!("is required when `{because}` is true"),
    })
}

/// A private key and its certificate chain, leaf first.
#[derive(Clone)]
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    fn load(cfg: &ClusterConfig, key: &str, because: &str) -> Result<Self> {
        Identity::read(key, required(cfg, key, because)?)
    }

    fn read(key: &str, path: &str) -> Result<Self> {
        let pem = read_file(key, path)?;
        let chain = certificates(key, path, &pem)?;
        let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| Error::Config {
            key: key.to_string(),
            message: format!("{path} holds no usable private key in PEM ({e})"),
        })?;
        Ok(Identity {
            chain,
            key: Arc::new(private),
        })
    }
}

fn read_file(key: &str, path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config {
        key: key.to_string(),
        message: format!("cannot read {path}: {e}"),
    })
}

fn certificates(key: &str, path: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config {
            key: key.to_string(),
            message: format!("{path}: {e}"),
        })?;
    if certs.is_empty() {
        return Err(Error::Config {
            key: key.to_string(),
            message: format!("{path} holds no PEM certificate"),
        });
    }
    Ok(certs)
}

fn truststore(cfg: &ClusterConfig, key: &str, because: &str) -> Result<RootCertStore> {
    read_truststore(key, required(cfg, key, because)?)
}

fn read_truststore(key: &str, path: &str) -> Result<RootCertStore> {
    let pem = read_file(key, path)?;
    let mut roots = RootCertStore::empty();
    for cert in certificates(key, path, &pem)? {
        roots.add(cert).map_err(|e| Error::Config {
            key: key.to_string(),
            message: format!("{path}: a certificate cannot be trusted: {e}"),
        })?;
    }
    Ok(roots)
}

fn tls_error(key: &str, e: impl std::fmt::Display) -> Error {
    Error::Config {
        key: key.to_string(),
        message: e.to_string(),
    }
}

/// A server presenting `identity`; with `clients`, one that requires a client certificate
/// chaining to them.
fn server_config(
    identity: Identity,
    clients: Option<RootCertStore>,
    key: &str,
) -> Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(key, e))?;
    let builder = match clients {
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .build()
            .map_err(|e| tls_error(key, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(identity.chain, identity.key.clone_key())
        .map_err(|e| tls_error(key, format!("the key does not fit its certificate: {e}")))
}

/// A client trusting `roots`, presenting `identity` when the server asks.
fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<Identity>,
    verify_hostname: bool,
    key: &str,
) -> Result<ClientConfig> {
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| tls_error(key, e))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(key, e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier::ServerVerifier::new(
            inner,
            verify_hostname,
        )));
    match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key.clone_key())
            .map_err(|e| tls_error(key, format!("the key does not fit its certificate: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
pub(crate) mod tests;
