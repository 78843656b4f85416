//! Leader election with a `coordination.k8s.io/v1` Lease: one replica of the operator
//! reconciles; the others wait. The holder renews every `ttl / 3`; a Lease not renewed for
//! `ttl` may be taken over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};

pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    ttl: Duration,
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaseLock {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        ttl: Duration,
    ) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            ttl,
        }
    }

    /// Takes or renews the lease; true while this process holds it.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = now_micro();
        let ttl_s = self.ttl.as_secs() as i32;
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease: Lease = serde_json::from_value(serde_json::json!({
                    "metadata": { "name": self.name },
                    "spec": {
                        "holderIdentity": self.identity,
                        "leaseDurationSeconds": ttl_s,
                        "acquireTime": now,
                        "renewTime": now,
                    }
                }))
                .map_err(kube::Error::SerdeError)?;
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                let expired = spec.renew_time.as_ref().is_none_or(|t| {
                    let age = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
                    age.as_secs() > i64::from(spec.lease_duration_seconds.unwrap_or(ttl_s))
                });
                if !mine && !expired {
                    return Ok(false);
                }
                if !mine {
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.holder_identity = Some(self.identity.clone());
                spec.lease_duration_seconds = Some(ttl_s);
                spec.renew_time = Some(now);
                // The resourceVersion in `lease` makes this a compare-and-swap.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }
}
