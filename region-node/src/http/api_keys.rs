//! API keys and per-key rate limits of the public API. With a key file configured
//! (`LEDGER_API_KEYS_FILE`), every public route but health, readiness, metrics and the
//! OpenAPI document needs `Authorization: Bearer <key>`: no or an unknown key is 401,
//! a key without the route's scope (GET needs `read`, everything else `write`) is 403,
//! and a key over its rate is 429 with Retry-After. The file holds only hashes
//! (`ledger_wire::api_keys`); it is re-read when it changes, so a revocation reaches
//! every region as fast as the file does. Calls between regions (`/internal`) are
//! signed instead and never see this layer: a key is checked once, where the client
//! entered.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ledger_wire::api_keys::{KeyFile, Scope};
use ledger_wire::ProblemType;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::AppState;
use crate::error::NodeError;

/// Routes anyone may call: probes, scrapes and the contract itself.
pub(super) const OPEN_ROUTES: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];
/// How often the key file is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

pub struct ApiKeys {
    path: PathBuf,
    keys: RwLock<Arc<KeyFile>>,
    modified: Mutex<Option<SystemTime>>,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").field("path", &self.path).finish()
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyRefusal {
    Missing,
    Unknown,
    Scope(Scope),
    Rate(Duration),
}

impl ApiKeys {
    /// Reads the key file; each key may make `rate` requests per second with bursts
    /// of `burst`.
    pub fn load(path: PathBuf, rate: NonZeroU32, burst: NonZeroU32) -> Result<Self, NodeError> {
        let (keys, modified) = read(&path).map_err(NodeError::Config)?;
        Ok(ApiKeys {
            path,
            keys: RwLock::new(Arc::new(keys)),
            modified: Mutex::new(modified),
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        })
    }

    /// Re-reads the file if it changed; a file that no longer parses is reported and
    /// the keys read last stay in force (a typo must not lock every client out).
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut seen = self.modified.lock().unwrap_or_else(|p| p.into_inner());
        if modified == *seen {
            return Ok(false);
        }
        let (keys, modified) = read(&self.path)?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        *seen = modified;
        // Forget the buckets of keys that have been quiet: the limiter grows with keys.
        self.limiter.retain_recent();
        Ok(true)
    }

    /// The tenant of `authorization` (the header's value), if its key may use
    /// `needs` now.
    pub fn check(&self, authorization: Option<&str>, needs: Scope) -> Result<String, KeyRefusal> {
        let key = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(KeyRefusal::Missing)?;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let record = keys
            .find(key)
            .filter(|r| r.matches(key))
            .ok_or(KeyRefusal::Unknown)?;
        if !record.scopes.contains(&needs) {
            return Err(KeyRefusal::Scope(needs));
        }
        if let Err(not_until) = self.limiter.check_key(&record.id) {
            return Err(KeyRefusal::Rate(
                not_until.wait_time_from(DefaultClock::default().now()),
            ));
        }
        Ok(record.tenant.clone())
    }
}

fn read(path: &std::path::Path) -> Result<(KeyFile, Option<SystemTime>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("read the API key file {}: {e}", path.display()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let keys = KeyFile::parse(&text)
        .map_err(|e| format!("the API key file {} is invalid: {e}", path.display()))?;
    Ok((keys, modified))
}

/// Re-reads the key file when it changes, until `shutdown`.
pub async fn watch(keys: Arc<ApiKeys>, shutdown: CancellationToken) -> Result<(), NodeError> {
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match keys.reload_if_changed() {
            Ok(true) => tracing::info!(path = %keys.path.display(), "API keys reloaded"),
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, "API keys not reloaded; the previous keys stay in force")
            }
        }
    }
}

/// The middleware: lets a public request through only with a key that may use it.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(keys) = state.settings.api_keys.as_ref() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path.starts_with("/internal/") || OPEN_ROUTES.contains(&path) {
        return next.run(request).await;
    }
    let needs = if matches!(*request.method(), Method::GET | Method::HEAD) {
        Scope::Read
    } else {
        Scope::Write
    };
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match keys.check(authorization, needs) {
        Ok(tenant) => {
            // The request's span (context::observe) names who asked, in logs and traces.
            tracing::Span::current().record("tenant", tenant.as_str());
            next.run(request).await
        }
        Err(refusal) => {
            state.metrics.count_key_refusal(match refusal {
                KeyRefusal::Missing => "missing",
                KeyRefusal::Unknown => "unknown",
                KeyRefusal::Scope(_) => "scope",
                KeyRefusal::Rate(_) => "rate",
            });
            refusal_response(refusal)
        }
    }
}

fn refusal_response(refusal: KeyRefusal) -> Response {
    match refusal {
        KeyRefusal::Missing => bearer_challenge(ApiError::new(
            ProblemType::Unauthorized,
            "this API needs a key: send Authorization: Bearer lk_...",
        )),
        KeyRefusal::Unknown => bearer_challenge(ApiError::new(
            ProblemType::Unauthorized,
            "the API key is unknown or revoked",
        )),
        KeyRefusal::Scope(scope) => ApiError::new(
            ProblemType::Forbidden,
            format!("this key lacks the {scope} scope this route needs"),
        )
        .into_response(),
        KeyRefusal::Rate(wait) => {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = ApiError::new(
                ProblemType::RateLimited,
                format!(
                    "this key is over its rate; retry in {} ms",
                    wait.as_millis()
                ),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert("retry-after", value);
            }
            response
        }
    }
}

fn bearer_challenge(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ledger\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_wire::api_keys::generate;

    fn write_keys(dir: &std::path::Path, keys: &KeyFile) -> PathBuf {
        let path = dir.join("keys.json");
        std::fs::write(&path, serde_json::to_string(keys).expect("json")).expect("write");
        path
    }

    fn limit(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[test]
    fn scopes_rates_and_revocation() {
        let dir = std::env::temp_dir().join(format!("api-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (reader, reader_record) = generate("acme", [Scope::Read].into(), "t".into());
        let (writer, writer_record) =
            generate("bank", [Scope::Read, Scope::Write].into(), "t".into());
        let mut file = KeyFile {
            keys: vec![reader_record, writer_record],
        };
        let path = write_keys(&dir, &file);
        let keys = ApiKeys::load(path.clone(), limit(1), limit(3)).expect("load");
        let bearer = |key: &str| format!("Bearer {key}");

        assert_eq!(keys.check(None, Scope::Read), Err(KeyRefusal::Missing));
        assert_eq!(
            keys.check(Some(&bearer("lk_0_0")), Scope::Read),
            Err(KeyRefusal::Unknown)
        );
        assert_eq!(
            keys.check(Some(&bearer(&reader)), Scope::Write),
            Err(KeyRefusal::Scope(Scope::Write))
        );
        assert_eq!(
            keys.check(Some(&bearer(&writer)), Scope::Write),
            Ok("bank".to_owned())
        );
        // A burst of 3, then the writer waits; the reader's bucket is its own.
        for _ in 0..2 {
            assert!(keys.check(Some(&bearer(&writer)), Scope::Read).is_ok());
        }
        assert!(matches!(
            keys.check(Some(&bearer(&writer)), Scope::Read),
            Err(KeyRefusal::Rate(wait)) if wait > Duration::ZERO && wait <= Duration::from_secs(1)
        ));
        assert!(keys.check(Some(&bearer(&reader)), Scope::Read).is_ok());

        // Revoked in the file: refused once the file is read again.
        file.keys[0].revoked_at = Some("now".into());
        std::thread::sleep(Duration::from_millis(20)); // a later mtime on coarse filesystems
        write_keys(&dir, &file);
        assert_eq!(keys.reload_if_changed(), Ok(true));
        assert_eq!(
            keys.check(Some(&bearer(&reader)), Scope::Read),
            Err(KeyRefusal::Unknown)
        );
        // A broken file keeps the keys in force.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "{ not json").expect("write");
        assert!(keys.reload_if_changed().is_err());
        assert!(keys
            .check(Some(&bearer(&writer)), Scope::Write)
            .is_err_and(|r| matches!(r, KeyRefusal::Rate(_))));
        std::fs::remove_dir_all(&dir).ok();
    }
}
