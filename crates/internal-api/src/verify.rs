//! The receiving side of a signed call, shared by every server that takes them (region
//! nodes' `/internal` routes, the replicators' dead-letter routes, the ownership
//! voters' commands, reads and Raft RPCs): read the credentials, buffer the body up to
//! a limit, check the signature over method, path with query and body, and hand the
//! request back whole. Each server turns a [`Refusal`] into its own error format.

use axum::body::Body;
use axum::extract::{OriginalUri, Request};

use crate::{Credentials, Signer};

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No, malformed or wrong credentials (401): the detail says which.
    Unauthorized(String),
    /// The body is larger than the route accepts (413).
    TooLarge,
}

/// A request whose signature checked out, with the name the caller signed as.
#[derive(Debug)]
pub struct Verified {
    pub request: Request,
    pub caller: String,
}

/// Checks `request`'s signature with `signer`, reading at most `body_limit` bytes of
/// body. The path signed is the one the client sent (`OriginalUri` when the router
/// nested it), query included.
pub async fn verify_request(
    signer: &Signer,
    request: Request,
    body_limit: usize,
) -> Result<Verified, Refusal> {
    let credentials =
        Credentials::from_headers(request.headers()).map_err(Refusal::Unauthorized)?;
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, body_limit)
        .await
        .map_err(|_| Refusal::TooLarge)?;
    let path = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |original| &original.0)
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    signer
        .verify(&credentials, parts.method.as_str(), &path, &bytes)
        .map_err(|error| Refusal::Unauthorized(error.to_string()))?;
    Ok(Verified {
        request: Request::from_parts(parts, Body::from(bytes)),
        caller: credentials.caller,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_wire::{HEADER_CALLER_REGION, HEADER_SIGNATURE, HEADER_SIGNED_AT};

    fn signed(signer: &Signer, path: &str, body: &'static [u8]) -> Request {
        let credentials = signer.sign("voter-1", "POST", path, body);
        Request::builder()
            .method("POST")
            .uri(path)
            .header(HEADER_CALLER_REGION, &credentials.caller)
            .header(HEADER_SIGNED_AT, credentials.signed_at_ms.to_string())
            .header(HEADER_SIGNATURE, &credentials.signature)
            .body(Body::from(body))
            .expect("request")
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_signed_request_passes_whole_and_names_its_caller() {
        let signer = Signer::new("0123456789abcdef");
        let verified = runtime()
            .block_on(verify_request(
                &signer,
                signed(&signer, "/raft/vote?x=1", b"{\"a\":1}"),
                1024,
            ))
            .expect("verified");
        assert_eq!(verified.caller, "voter-1");
        let body = runtime()
            .block_on(axum::body::to_bytes(verified.request.into_body(), 1024))
            .expect("body");
        assert_eq!(&body[..], b"{\"a\":1}");
    }

    #[test]
    fn unsigned_tampered_foreign_and_oversized_requests_are_refused() {
        let signer = Signer::new("0123456789abcdef");
        let unsigned = Request::builder()
            .method("POST")
            .uri("/v1/commands")
            .body(Body::from("{}"))
            .expect("request");
        let refusal = runtime()
            .block_on(verify_request(&signer, unsigned, 1024))
            .expect_err("unsigned");
        assert!(matches!(refusal, Refusal::Unauthorized(d) if d.contains("not signed")));

        let mut tampered = signed(&signer, "/v1/commands", b"{}");
        *tampered.uri_mut() = "/v1/commands?force=true".parse().expect("uri");
        assert!(matches!(
            runtime().block_on(verify_request(&signer, tampered, 1024)),
            Err(Refusal::Unauthorized(_))
        ));

        let foreign = Signer::new("another deployment's secret");
        assert!(matches!(
            runtime().block_on(verify_request(
                &signer,
                signed(&foreign, "/v1/map", b""),
                1024
            )),
            Err(Refusal::Unauthorized(_))
        ));

        assert_eq!(
            runtime()
                .block_on(verify_request(
                    &signer,
                    signed(&signer, "/v1/map", b"0123456789"),
                    4
                ))
                .map(|v| v.caller),
            Err(Refusal::TooLarge)
        );
    }
}
