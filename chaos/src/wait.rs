//! Readiness: polling a condition until it holds or a deadline passes.

use std::time::Duration;

use anyhow::Context;

const POLL: Duration = Duration::from_millis(50);

/// Until a TCP connection to `addr` succeeds.
pub async fn tcp(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    let connected = harness::wait_until(timeout, POLL, || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
    connected.with_context(|| format!("{addr} did not accept connections within {timeout:?}"))
}

/// Until `url` answers 2xx.
pub async fn http_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let answered = harness::wait_until(timeout, POLL, || async {
        http.get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
            .then_some(())
    })
    .await;
    answered.with_context(|| format!("{url} did not answer 2xx within {timeout:?}"))
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
    let risen = harness::wait_until(timeout, POLL, || async {
        metric(url, name)
            .await
            .is_ok_and(|v| v > floor)
            .then_some(())
    })
    .await;
    risen.with_context(|| format!("{name} at {url} did not rise above {floor} within {timeout:?}"))
}
