//! A first program against a running deployment: learn its regions from any one of
//! them, open an account, deposit, read it back no older than the deposit (from
//! whichever region is nearest), and see which region served each step.
//!
//!   target/debug/ledger-local up                      # three local regions
//!   cargo run -p ledger-client --example quickstart -- http://127.0.0.1:7101
//!
//! An application keeps one `Client` for its lifetime: it measures every region's
//! latency as it goes (and with `run_probes` in the background), opens a breaker on a
//! failing region, and retries elsewhere under the same Idempotency-Key.

use ledger_client::{Client, HttpTransport, Request, RetryConfig, RoutingConfig};
use ledger_wire::api::{AmountRequest, CreateAccountRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let any_region = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:7101".to_owned());
    let api_key = std::env::var("LEDGER_API_KEY").ok();
    let client = Client::discover(
        HttpTransport::new(api_key)?,
        &any_region,
        RoutingConfig::default(),
        RetryConfig::default(),
    )
    .await?
    .home_aware();
    client.probe_all().await;
    for region in client.regions() {
        let latency = region
            .ewma_ms
            .map_or("unmeasured".to_owned(), |ms| format!("{ms:.1} ms"));
        println!("region {} at {} ({latency})", region.name, region.url);
    }

    let opened = client
        .send(Request::open_account(&CreateAccountRequest {
            currency: "EUR".into(),
            home_region: None,
        }))
        .await?;
    let account = opened.body["id"]
        .as_str()
        .ok_or("no account id")?
        .to_owned();
    println!(
        "opened {account}: {} from {} (home {:?})",
        opened.status, opened.region, opened.home
    );

    let deposit = AmountRequest {
        amount: "25.00".into(),
        reference: Some("quickstart".into()),
    };
    let booked = client.send(Request::deposit(&account, &deposit)).await?;
    println!(
        "deposit: {} from {} after {} attempt(s), key {:?}",
        booked.status, booked.region, booked.attempts, booked.idempotency_key
    );

    // Carries min_seq = the deposit's seq: any region answers only once it has it.
    let read = client.read_account(&account).await?;
    println!(
        "balance {} (seq {}) read at {}",
        read.body["balance"], read.body["seq"], read.region
    );
    Ok(())
}
