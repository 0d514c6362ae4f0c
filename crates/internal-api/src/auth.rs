//! Authentication of the internal API between regions: every request is signed with
//! the deployment's shared secret (HMAC-SHA256 over the caller, the time of signing,
//! the method, the path with query, and the SHA-256 of the body). A receiver refuses
//! unsigned requests, wrong signatures, and signatures older or newer than
//! [`MAX_SKEW`] (a captured request cannot be replayed later; within the window, the
//! Idempotency-Key makes a replayed write harmless).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Largest accepted difference between the signer's and the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the request is not signed (internal API calls need the deployment's credentials)")]
    Missing,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the signature's time is {0} ms away from this region's clock")]
    Skew(i64),
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
}

#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// The headers that authenticate one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub caller: String,
    pub signed_at_ms: i64,
    pub signature: String,
}

impl Credentials {
    /// `request` carrying these credentials in its headers (the receiving side reads
    /// them back with [`Credentials::from_headers`]).
    pub fn attach(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        use ledger_wire::{HEADER_CALLER_REGION, HEADER_SIGNATURE, HEADER_SIGNED_AT};
        request
            .header(HEADER_CALLER_REGION, &self.caller)
            .header(HEADER_SIGNED_AT, self.signed_at_ms.to_string())
            .header(HEADER_SIGNATURE, &self.signature)
    }

    /// The credentials a signed request carries in its headers.
    pub fn from_headers(headers: &reqwest::header::HeaderMap) -> Result<Credentials, String> {
        use ledger_wire::{HEADER_CALLER_REGION, HEADER_SIGNATURE, HEADER_SIGNED_AT};
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (Some(caller), Some(signed_at), Some(signature)) = (
            header(HEADER_CALLER_REGION),
            header(HEADER_SIGNED_AT),
            header(HEADER_SIGNATURE),
        ) else {
            return Err(AuthError::Missing.to_string());
        };
        let signed_at_ms = signed_at
            .parse()
            .map_err(|_| format!("{HEADER_SIGNED_AT} must be Unix milliseconds"))?;
        Ok(Credentials {
            caller,
            signed_at_ms,
            signature,
        })
    }
}

impl Signer {
    pub fn new(secret: &str) -> Self {
        Signer {
            secret: secret.as_bytes().to_vec(),
        }
    }

    fn mac(
        &self,
        caller: &str,
        signed_at_ms: i64,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        let body_hash = hex::encode(Sha256::digest(body));
        mac.update(format!("{caller}\n{signed_at_ms}\n{method}\n{path}\n{body_hash}").as_bytes());
        mac
    }

    pub fn sign(&self, caller: &str, method: &str, path: &str, body: &[u8]) -> Credentials {
        let signed_at_ms = now_ms();
        let signature = hex::encode(
            self.mac(caller, signed_at_ms, method, path, body)
                .finalize()
                .into_bytes(),
        );
        Credentials {
            caller: caller.to_owned(),
            signed_at_ms,
            signature,
        }
    }

    pub fn verify(
        &self,
        credentials: &Credentials,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(), AuthError> {
        let skew = now_ms() - credentials.signed_at_ms;
        if skew.unsigned_abs() > MAX_SKEW.as_millis() as u64 {
            return Err(AuthError::Skew(skew));
        }
        let expected = hex::decode(&credentials.signature)
            .map_err(|_| AuthError::Malformed("signature is not hex"))?;
        self.mac(
            &credentials.caller,
            credentials.signed_at_ms,
            method,
            path,
            body,
        )
        .verify_slice(&expected)
        .map_err(|_| AuthError::BadSignature)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_caller_path_and_body() {
        let signer = Signer::new("0123456789abcdef");
        let creds = signer.sign("eu-west", "POST", "/internal/v1/accounts", b"{}");
        assert_eq!(
            signer.verify(&creds, "POST", "/internal/v1/accounts", b"{}"),
            Ok(())
        );
        assert_eq!(
            signer.verify(&creds, "POST", "/internal/v1/accounts", b"{\"x\":1}"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            signer.verify(&creds, "GET", "/internal/v1/accounts", b"{}"),
            Err(AuthError::BadSignature)
        );
        let mut other_caller = creds.clone();
        other_caller.caller = "us-east".into();
        assert_eq!(
            signer.verify(&other_caller, "POST", "/internal/v1/accounts", b"{}"),
            Err(AuthError::BadSignature)
        );
        let wrong_secret = Signer::new("fedcba9876543210");
        assert_eq!(
            wrong_secret.verify(&creds, "POST", "/internal/v1/accounts", b"{}"),
            Err(AuthError::BadSignature)
        );
        let mut old = creds;
        old.signed_at_ms -= 60_000;
        assert!(matches!(
            signer.verify(&old, "POST", "/internal/v1/accounts", b"{}"),
            Err(AuthError::Skew(_))
        ));
    }
}
