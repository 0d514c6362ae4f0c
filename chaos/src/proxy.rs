//! Per-pair TCP proxies between regions: each link listens on its own port and copies
//! bytes to one target, so a link can be cut or slowed without touching either end.
//!
//! Why not noxious (the Rust port of Toxiproxy): its last release (1.0.4) is from 2021
//! and pins tokio-util 0.6 and rand 0.8; it would add a second server to build and run
//! for the two toxics we need now (cut, latency). This module is those two toxics on
//! `tokio::io::copy_bidirectional`, with a small admin API:
//! `GET /links` and `POST /links/{name}` with `{"down": bool, "delay_ms": n}`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// One link: `listen` -> `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    pub name: String,
    pub listen: SocketAddr,
    pub target: String,
}

impl std::str::FromStr for LinkSpec {
    type Err = String;

    /// `name=listen->target`, e.g. `eu-west>us-east:api=127.0.0.1:7113->127.0.0.1:7141`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("link {text:?} must look like name=listen->target"))?;
        let (listen, target) = rest
            .split_once("->")
            .ok_or_else(|| format!("link {text:?} must look like name=listen->target"))?;
        Ok(LinkSpec {
            name: name.to_owned(),
            listen: listen.parse().map_err(|e| format!("link {name}: {e}"))?,
            target: target.to_owned(),
        })
    }
}

/// What the admin API shows and takes for one link.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LinkState {
    #[serde(default)]
    pub down: bool,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub connections: u64,
}

#[derive(Debug, Default)]
struct Toxics {
    down: AtomicBool,
    delay_ms: AtomicU64,
    connections: AtomicU64,
    /// Cancelled (and replaced) when the link goes down, to cut open connections.
    cut: std::sync::Mutex<CancellationToken>,
}

type Links = Arc<BTreeMap<String, Arc<Toxics>>>;

/// Runs every link and the admin API until `shutdown`.
pub async fn run(
    links: Vec<LinkSpec>,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut table = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for spec in links {
        let toxics = Arc::new(Toxics::default());
        table.insert(spec.name.clone(), toxics.clone());
        let listener = TcpListener::bind(spec.listen).await?;
        tasks.spawn(serve_link(listener, spec.target, toxics, shutdown.clone()));
    }
    let table: Links = Arc::new(table);
    let app = Router::new()
        .route("/links", get(list))
        .route("/links/{name}", post(set))
        .with_state(table);
    let stop = shutdown.clone();
    axum::serve(admin, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await?;
    tasks.shutdown().await;
    Ok(())
}

async fn serve_link(
    listener: TcpListener,
    target: String,
    toxics: Arc<Toxics>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((inbound, _)) = accepted else {
            continue;
        };
        if toxics.down.load(Ordering::Relaxed) {
            drop(inbound);
            continue;
        }
        toxics.connections.fetch_add(1, Ordering::Relaxed);
        let cut = toxics.cut.lock().map(|c| c.clone()).unwrap_or_default();
        let delay = Duration::from_millis(toxics.delay_ms.load(Ordering::Relaxed));
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            tokio::select! {
                () = cut.cancelled() => {}
                _ = pipe(inbound, outbound, delay) => {}
            }
        });
    }
}

/// Copies both ways; with a delay, each chunk waits `delay` before it is written.
async fn pipe(mut a: TcpStream, mut b: TcpStream, delay: Duration) -> std::io::Result<()> {
    if delay.is_zero() {
        tokio::io::copy_bidirectional(&mut a, &mut b).await?;
        return Ok(());
    }
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    tokio::try_join!(delayed_copy(ar, bw, delay), delayed_copy(br, aw, delay))?;
    Ok(())
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        tokio::time::sleep(delay).await;
        to.write_all(&buffer[..n]).await?;
    }
}

async fn list(State(links): State<Links>) -> Json<BTreeMap<String, LinkState>> {
    Json(
        links
            .iter()
            .map(|(name, t)| (name.clone(), state_of(t)))
            .collect(),
    )
}

async fn set(
    State(links): State<Links>,
    Path(name): Path<String>,
    Json(wanted): Json<LinkState>,
) -> Result<Json<LinkState>, (StatusCode, String)> {
    let toxics = links
        .get(&name)
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no link {name:?}")))?;
    let was_down = toxics.down.swap(wanted.down, Ordering::Relaxed);
    toxics.delay_ms.store(wanted.delay_ms, Ordering::Relaxed);
    if wanted.down && !was_down {
        if let Ok(mut cut) = toxics.cut.lock() {
            cut.cancel();
            *cut = CancellationToken::new();
        }
    }
    tracing::info!(link = %name, down = wanted.down, delay_ms = wanted.delay_ms, "link changed");
    Ok(Json(state_of(toxics)))
}

fn state_of(t: &Toxics) -> LinkState {
    LinkState {
        down: t.down.load(Ordering::Relaxed),
        delay_ms: t.delay_ms.load(Ordering::Relaxed),
        connections: t.connections.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_specs() {
        let spec: LinkSpec = "a>b:api=127.0.0.1:7113->127.0.0.1:7141"
            .parse()
            .expect("spec");
        assert_eq!(spec.name, "a>b:api");
        assert_eq!(spec.listen.port(), 7113);
        assert_eq!(spec.target, "127.0.0.1:7141");
        assert!("nonsense".parse::<LinkSpec>().is_err());
        assert!("x=1.2.3.4->y".parse::<LinkSpec>().is_err());
    }
}
