//! Readiness: polling a condition until it holds or a deadline passes.

use std::time::Duration;

use anyhow::bail;

const POLL: Duration = Duration::from_millis(50);

/// Until a TCP connection to `addr` succeeds.
pub async fn tcp(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("{addr} did not accept connections within {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Until `url` answers 2xx.
pub async fn http_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ok = http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{url} did not answer 2xx within {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The sum of every sample of `metric` (any labels) at a Prometheus endpoint.
pub async fn metric(url: &str, metric: &str) -> anyhow::Result<f64> {
    let text = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await?
        .text()
        .await?;
    Ok(sum_metric(&text, metric))
}

pub fn sum_metric(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Until `metric` at `url` is above `floor`.
pub async fn metric_above(
    url: &str,
    name: &str,
    floor: f64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if metric(url, name).await.is_ok_and(|v| v > floor) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{name} at {url} did not rise above {floor} within {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}
