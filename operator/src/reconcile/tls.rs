//! The job's internal-TLS Secret (`{name}-tls`): a CA of the job's own and a key pair it
//! signs, issued at the job's first deployment, replaced a month before it expires. Only
//! this job's jobmanager and taskmanagers mount it, so no other pod, not even another
//! flink-rs job's, can register with the jobmanager or open a data channel. Replacing it
//! changes the pods' `flinkrs.io/tls-version` annotation, so they roll onto the new
//! certificates together, and the job resumes from its latest checkpoint.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::{Context, Error, event, ssa};
use crate::crd::FlinkJob;
use crate::resources::{TLS_NOT_AFTER, service_name, tls_secret, tls_secret_name};

/// How long issued certificates are valid.
pub const VALID_DAYS: u32 = 365;
/// Certificates are replaced this long before they expire.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// The Secret's version (its expiry, in seconds since the epoch) when it holds both files
/// and stays valid beyond `now` + [`RENEW_BEFORE`]; `None`: it must be issued again.
pub fn current(secret: &Secret, now: SystemTime) -> Option<String> {
    let not_after: u64 = secret.annotations().get(TLS_NOT_AFTER)?.parse().ok()?;
    let data = secret.data.as_ref()?;
    let filled = |k: &str| data.get(k).is_some_and(|ByteString(b)| !b.is_empty());
    if !filled("ca.pem") || !filled("cluster.pem") {
        return None;
    }
    let until = UNIX_EPOCH + Duration::from_secs(not_after);
    (until > now + RENEW_BEFORE).then(|| not_after.to_string())
}

/// Makes sure the job's TLS Secret is there and current; returns its version.
pub(super) async fn ensure(fj: &FlinkJob, ctx: &Context, ns: &str) -> Result<String, Error> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let name = tls_secret_name(fj);
    let existing = api.get_opt(&name).await?;
    if let Some(v) = existing
        .as_ref()
        .and_then(|s| current(s, SystemTime::now()))
    {
        return Ok(v);
    }
    let svc = service_name(fj);
    let hosts = [svc.clone(), format!("{svc}.{ns}.svc")];
    let issued = flink_rs_certificates::issue(&hosts, VALID_DAYS)?;
    let secret = tls_secret(fj, &issued);
    ssa(&api, &name, &secret).await?;
    let version = secret
        .annotations()
        .get(TLS_NOT_AFTER)
        .cloned()
        .unwrap_or_default();
    let (reason, message) = match existing {
        None => (
            "CertificatesIssued",
            format!("internal TLS: a CA and key pair of this job in Secret {name}"),
        ),
        Some(_) => (
            "CertificatesRenewed",
            format!("internal TLS: Secret {name} renewed before expiry; the pods roll onto it"),
        ),
    };
    event(ctx, fj, false, reason, message).await;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secret(not_after: u64, files: &[&str]) -> Secret {
        let mut s = Secret::default();
        s.metadata.annotations = Some(BTreeMap::from([(
            TLS_NOT_AFTER.to_string(),
            not_after.to_string(),
        )]));
        s.data = Some(
            files
                .iter()
                .map(|f| (f.to_string(), ByteString(b"pem".to_vec())))
                .collect(),
        );
        s
    }

    #[test]
    fn a_secret_is_renewed_a_month_before_it_expires_or_when_incomplete() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let day = 86_400;
        let both = ["ca.pem", "cluster.pem"];
        let fresh = 1_000_000_000 + 300 * day;
        assert_eq!(current(&secret(fresh, &both), now), Some(fresh.to_string()));
        assert_eq!(current(&secret(1_000_000_000 + 29 * day, &both), now), None);
        assert_eq!(current(&secret(fresh, &["ca.pem"]), now), None);
        assert_eq!(current(&Secret::default(), now), None);
    }
}
