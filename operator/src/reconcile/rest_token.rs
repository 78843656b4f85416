//! The job's REST token Secret (`{name}-rest-token`, key `token`): 32 random bytes issued at
//! the job's first deployment. The jobmanager requires it on every REST request
//! (`rest.authentication.token-file`), so no other pod can submit, stop or read a job even
//! where NetworkPolicies are not enforced; the operator reads it here for its own calls. A
//! Secret deleted or emptied is issued again, and the jobmanager pod rolls onto it (its
//! `flinkrs.io/rest-token-version` annotation changes); the job resumes from its latest
//! checkpoint.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::{Context, Error, event, ssa};
use crate::crd::FlinkJob;
use crate::resources::{rest_token_secret, rest_token_secret_name};

/// The token a Secret holds, when it holds one (one word, as the jobmanager requires).
pub fn token_of(secret: &Secret) -> Option<String> {
    let ByteString(bytes) = secret.data.as_ref()?.get("token")?;
    let token = std::str::from_utf8(bytes).ok()?.trim();
    (!token.is_empty() && !token.contains(char::is_whitespace)).then(|| token.to_string())
}

/// The job's token, or `None` when its Secret is not there (yet).
pub(super) async fn read(fj: &FlinkJob, ctx: &Context, ns: &str) -> Result<Option<String>, Error> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    Ok(api
        .get_opt(&rest_token_secret_name(fj))
        .await?
        .as_ref()
        .and_then(token_of))
}

/// Makes sure the job's token Secret is there; returns the token.
pub(super) async fn ensure(fj: &FlinkJob, ctx: &Context, ns: &str) -> Result<String, Error> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let name = rest_token_secret_name(fj);
    let existing = api.get_opt(&name).await?;
    if let Some(t) = existing.as_ref().and_then(token_of) {
        return Ok(t);
    }
    let token = flink_rs_certificates::random_token()?;
    ssa(&api, &name, &rest_token_secret(fj, &token)).await?;
    let message = match existing {
        None => format!("the jobmanager's REST API requires the token in Secret {name}"),
        Some(_) => {
            format!("Secret {name} held no token: a new one issued; the jobmanager rolls onto it")
        }
    };
    event(ctx, fj, false, "RestTokenIssued", message).await;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secret(token: &[u8]) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                "token".to_string(),
                ByteString(token.to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn a_secret_holds_a_token_only_when_it_is_one_word() {
        assert_eq!(token_of(&secret(b"abc\n")).as_deref(), Some("abc"));
        assert_eq!(token_of(&secret(b"")), None);
        assert_eq!(token_of(&secret(b"a b")), None);
        assert_eq!(token_of(&secret(&[0xff, 0xfe])), None);
        assert_eq!(token_of(&Secret::default()), None);
    }
}
