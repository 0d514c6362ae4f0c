//! Write-path benchmark: withdrawals through the node's HTTP API against pgbench running
//! the very same SQL (`region_node::POST_ENTRY_SQL`) on the same PostgreSQL at the same
//! concurrency, in one run. Prints throughput, p50/p99 latency and the ratio.
//!
//!   cargo build --release --workspace --bins
//!   target/release/write-path-bench --clients 16 --seconds 20 --rounds 3
//!   target/release/write-path-bench --secure   # + the cost of TLS to PostgreSQL and of API keys

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use harness::node::{region_node_command, start_region_node};
use harness::{free_port, ChildGuard, PgCluster, PgOptions, WorkDir};
use ledger_bench::cpu::{CpuMeter, CpuSample};
use ledger_wire::AccountId;
use rand::Rng;
use tokio_postgres::NoTls;

/// Slots the benchmark's accounts are spread over (the node's default slot count).
const SLOTS: i64 = 4096;
/// What each benchmark request carries, so both sides send the same bytes to PostgreSQL.
const FINGERPRINT_HEX: &str = "abababababababababababababababababababababababababababababababab";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Debug, Parser)]
#[command(about = "Node write path vs pgbench on the same SQL")]
struct Args {
    /// Concurrent clients on both sides.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Measured seconds per side.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Accounts the withdrawals are spread over.
    #[arg(long, default_value_t = 1000)]
    accounts: i64,
    /// Alternating rounds (pgbench, node, pgbench, node, ...); figures aggregate them.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Run PostgreSQL with fsync off (measures CPU paths rather than the disk).
    #[arg(long)]
    no_fsync: bool,
    /// Also run a second node that exports every span over OTLP (to a counting sink in
    /// this process), in each round after the first node: the cost of trace export.
    #[arg(long)]
    trace_export: bool,
    /// Also run, in each round, a node that reaches PostgreSQL over verified TLS and one
    /// that also checks an API key on every request (PostgreSQL then offers TLS with a
    /// throwaway certificate; pgbench and the first node stay in plain text): the cost
    /// of each.
    #[arg(long)]
    secure: bool,
    /// Also run, in each round, this other build of region-node (e.g. of the commit
    /// before a change), so both builds are measured side by side in one run.
    #[arg(long)]
    compare_node: Option<std::path::PathBuf>,
}

/// A node run beside the plain one in each round: what it adds, and its figures.
struct Variant {
    label: &'static str,
    /// Stopped when the variant is dropped.
    _node: ChildGuard,
    /// Its CPU, with the database's.
    meter: CpuMeter,
    base: String,
    api_key: Option<String>,
    figures: Figures,
}

#[derive(Debug)]
struct Figures {
    label: &'static str,
    transactions: usize,
    errors: usize,
    seconds: f64,
    latencies_us: Vec<u64>,
    /// CPU each party spent over the rounds (measured for pgbench and the plain node).
    cpu: CpuSample,
}

impl Figures {
    fn empty(label: &'static str) -> Self {
        Figures {
            label,
            transactions: 0,
            errors: 0,
            seconds: 0.0,
            latencies_us: Vec::new(),
            cpu: CpuSample::default(),
        }
    }

    fn absorb(&mut self, round: Figures) {
        self.transactions += round.transactions;
        self.errors += round.errors;
        self.seconds += round.seconds;
        self.latencies_us.extend(round.latencies_us);
        self.cpu.add(&round.cpu);
    }

    /// CPU microseconds per transaction: (PostgreSQL, client, node).
    fn cpu_per_transaction_us(&self) -> (f64, f64, f64) {
        let per = |seconds: f64| seconds * 1e6 / self.transactions.max(1) as f64;
        (
            per(self.cpu.postgres),
            per(self.cpu.client),
            per(self.cpu.node),
        )
    }

    fn throughput(&self) -> f64 {
        self.transactions as f64 / self.seconds
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        ledger_bench::percentile_ms(&self.latencies_us, p)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = ledger_bench::sibling_bin_dir(&["region-node"])?;
    let pgbench = harness::pg::bin_dir()
        .context("find PostgreSQL")?
        .join("pgbench");
    anyhow::ensure!(
        pgbench.exists(),
        "{} missing (apt-get install postgresql)",
        pgbench.display()
    );

    let dir = WorkDir::temp("bench-write-path").context("make bench dir")?;
    let certificates = if args.secure {
        Some(harness::tls::make_certificates(&dir.join("certs")).context("make certificates")?)
    } else {
        None
    };
    let options = PgOptions {
        durable: !args.no_fsync,
        max_connections: u32::try_from(args.clients * 4 + 20).context("clients")?,
        tls: certificates.as_ref().map(|c| harness::PgTls {
            cert_file: c.server_cert.clone(),
            key_file: c.server_key.clone(),
            required_for: None,
        }),
        ..PgOptions::default()
    };
    let (mut pg, database_url) = PgCluster::start_with_database(dir.path(), &options, "ledger")
        .await
        .context("start PostgreSQL")?;
    let (node, base) = start_node(
        &bin_dir.join("region-node"),
        &database_url,
        args.clients,
        dir.path(),
        &[],
    )
    .await?;
    let meter = CpuMeter {
        postgres_pid: pg.pid().context("the PostgreSQL server's pid")?,
        node_pid: node.pid(),
    };
    let exporting = if args.trace_export {
        let port = free_port()?;
        let sink = ledger_bench::otlp_sink::start(port).await?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let env = [("LEDGER_OTLP_ENDPOINT", endpoint.as_str())];
        let (node, base) = start_node(
            &bin_dir.join("region-node"),
            &database_url,
            args.clients,
            &dir.join("exporting"),
            &env,
        )
        .await?;
        Some((node, base, sink))
    } else {
        None
    };
    let mut variants = Vec::new();
    if let Some(certificates) = &certificates {
        variants = secure_variants(
            &bin_dir,
            &database_url,
            &args,
            dir.path(),
            certificates,
            meter.postgres_pid,
        )
        .await?;
    }
    if let Some(other) = &args.compare_node {
        let label = "node (--compare-node)";
        let (node, base) = start_node(
            other,
            &database_url,
            args.clients,
            &dir.join("compare-node"),
            &[],
        )
        .await
        .with_context(|| format!("start {}", other.display()))?;
        variants.push(Variant {
            label,
            meter: CpuMeter {
                postgres_pid: meter.postgres_pid,
                node_pid: node.pid(),
            },
            _node: node,
            base,
            api_key: None,
            figures: Figures::empty(label),
        });
    }
    seed_accounts(&database_url, args.accounts)
        .await
        .context("seed accounts")?;
    println!(
        "write path: withdrawal of 1.00 over {} accounts, {} clients, {} s per side, fsync {}",
        args.accounts,
        args.clients,
        args.seconds,
        if args.no_fsync { "off" } else { "on" }
    );

    let duration = Duration::from_secs(args.seconds);
    let mut sql = Figures::empty("pgbench (same SQL)");
    let mut http = Figures::empty("node (HTTP API)");
    let mut exported = Figures::empty("node exporting spans");
    for round in 1..=args.rounds {
        // Odd rounds run pgbench first, even rounds the node: neither side always meets
        // the tables the other has just grown.
        let (sql_round, http_round) = if round % 2 == 1 {
            let sql_round =
                measured_pgbench(&pgbench, &pg, &args, &dir, duration, round, meter).await?;
            let http_round =
                measured_http(&base, &args, duration, round, meter, &database_url).await?;
            (sql_round, http_round)
        } else {
            let http_round =
                measured_http(&base, &args, duration, round, meter, &database_url).await?;
            let sql_round =
                measured_pgbench(&pgbench, &pg, &args, &dir, duration, round, meter).await?;
            (sql_round, http_round)
        };
        println!(
            "round {round}: pgbench {:.1} tx/s, node {:.1} tx/s, ratio {:.3}; PostgreSQL CPU per tx {:.0} / {:.0} µs",
            sql_round.throughput(),
            http_round.throughput(),
            http_round.throughput() / sql_round.throughput(),
            sql_round.cpu_per_transaction_us().0,
            http_round.cpu_per_transaction_us().0,
        );
        sql.absorb(sql_round);
        http.absorb(http_round);
        if let Some((_, base, _)) = &exporting {
            prepare_round(&database_url).await?;
            // Distinct keys: the same key on the second node would be a replay.
            let export_round = run_http(base, &args, duration, round + 1_000, None).await?;
            println!(
                "round {round}: node exporting spans {:.1} tx/s",
                export_round.throughput()
            );
            exported.absorb(export_round);
        }
        for (n, variant) in variants.iter_mut().enumerate() {
            prepare_round(&database_url).await?;
            let keys = round + 2_000 + 1_000 * n;
            let before = variant.meter.sample();
            let mut variant_round = run_http(
                &variant.base,
                &args,
                duration,
                keys,
                variant.api_key.as_deref(),
            )
            .await?;
            variant_round.cpu = variant.meter.sample().since(&before);
            println!(
                "round {round}: {} {:.1} tx/s",
                variant.label,
                variant_round.throughput()
            );
            variant.figures.absorb(variant_round);
        }
    }
    drop(node);
    pg.stop();

    println!("\nall rounds:");
    println!(
        "{:<22} {:>10} {:>9} {:>9} {:>8}",
        "", "tx/s", "p50 ms", "p99 ms", "errors"
    );
    let mut rows = vec![&sql, &http];
    if exporting.is_some() {
        rows.push(&exported);
    }
    rows.extend(variants.iter().map(|v| &v.figures));
    for f in rows {
        println!(
            "{:<22} {:>10.1} {:>9.2} {:>9.2} {:>8}",
            f.label,
            f.throughput(),
            f.percentile_ms(50.0),
            f.percentile_ms(99.0),
            f.errors
        );
    }
    let ratio = http.throughput() / sql.throughput();
    println!("\nnode / pgbench throughput: {ratio:.3} (target >= 0.85)");
    println!("\nCPU per transaction (µs; PostgreSQL with its backends, the client: pgbench or this process's HTTP load, the node):");
    println!(
        "{:<22} {:>10} {:>9} {:>9} {:>9}",
        "", "PostgreSQL", "client", "node", "total"
    );
    for f in [&sql, &http]
        .into_iter()
        .chain(variants.iter().map(|v| &v.figures))
    {
        let (postgres, client, node) = f.cpu_per_transaction_us();
        println!(
            "{:<22} {:>10.0} {:>9.0} {:>9.0} {:>9.0}",
            f.label,
            postgres,
            client,
            node,
            postgres + client + node
        );
    }
    if let Some((node, _, sink)) = exporting {
        // Let the last batch go out before counting.
        tokio::time::sleep(Duration::from_secs(6)).await;
        drop(node);
        use std::sync::atomic::Ordering::Relaxed;
        println!(
            "trace export: throughput {:.3} of the node without it, p50 {:+.2} ms, p99 {:+.2} ms; \
             {} spans for {} requests in {} OTLP requests, {:.1} MB",
            exported.throughput() / http.throughput(),
            exported.percentile_ms(50.0) - http.percentile_ms(50.0),
            exported.percentile_ms(99.0) - http.percentile_ms(99.0),
            sink.spans.load(Relaxed),
            exported.transactions + exported.errors,
            sink.requests.load(Relaxed),
            sink.bytes.load(Relaxed) as f64 / 1e6
        );
    }
    for variant in &variants {
        println!(
            "{}: throughput {:.3} of the plain node, p50 {:+.2} ms, p99 {:+.2} ms",
            variant.label,
            variant.figures.throughput() / http.throughput(),
            variant.figures.percentile_ms(50.0) - http.percentile_ms(50.0),
            variant.figures.percentile_ms(99.0) - http.percentile_ms(99.0)
        );
    }
    let variant_errors: usize = variants.iter().map(|v| v.figures.errors).sum();
    drop(variants);
    println!("SQL of both sides: {}", region_node::POST_ENTRY_SQL);
    if http.errors > 0 || sql.errors > 0 || variant_errors > 0 {
        bail!("errors during the run; see {}", dir.path().display());
    }
    Ok(())
}

/// The node over verified TLS to PostgreSQL, and the node over TLS that also checks
/// an API key (with a rate far above the bench's, so the check runs and never refuses).
async fn secure_variants(
    bin_dir: &Path,
    database_url: &str,
    args: &Args,
    dir: &Path,
    certificates: &harness::tls::TestCertificates,
    postgres_pid: u32,
) -> anyhow::Result<Vec<Variant>> {
    use ledger_wire::api_keys::{generate, KeyFile, Scope};
    let ca = certificates.ca_cert.display().to_string();
    let tls = [
        ("LEDGER_DATABASE_TLS", "verify-full"),
        ("LEDGER_DATABASE_CA_FILE", ca.as_str()),
    ];
    let (key, record) = generate("bench", [Scope::Read, Scope::Write].into(), "bench".into());
    let key_file = dir.join("api-keys.json");
    std::fs::write(
        &key_file,
        serde_json::to_string(&KeyFile { keys: vec![record] })?,
    )
    .context("write the key file")?;
    let key_file = key_file.display().to_string();
    let mut with_keys = tls.to_vec();
    with_keys.extend([
        ("LEDGER_API_KEYS_FILE", key_file.as_str()),
        ("LEDGER_API_RATE_PER_KEY", "1000000"),
        ("LEDGER_API_BURST_PER_KEY", "1000000"),
    ]);
    let mut variants = Vec::new();
    for (label, env, api_key) in [
        ("node, TLS to PostgreSQL", tls.to_vec(), None),
        ("node, TLS + API key", with_keys, Some(key)),
    ] {
        let (node, base) = start_node(
            &bin_dir.join("region-node"),
            database_url,
            args.clients,
            &dir.join(label.replace([',', ' ', '+'], "-")),
            &env,
        )
        .await?;
        variants.push(Variant {
            label,
            meter: CpuMeter {
                postgres_pid,
                node_pid: node.pid(),
            },
            _node: node,
            base,
            api_key,
            figures: Figures::empty(label),
        });
    }
    Ok(variants)
}

async fn start_node(
    node_bin: &Path,
    database_url: &str,
    clients: usize,
    dir: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<(ChildGuard, String)> {
    let port = free_port()?;
    let mut command = region_node_command(node_bin, "bench", database_url, port);
    command
        .env("LEDGER_DB_POOL_SIZE", clients.to_string())
        .env("LEDGER_LOG", "warn")
        .envs(env.iter().copied());
    std::fs::create_dir_all(dir).context("make the node's dir")?;
    let node = start_region_node(
        "region-node",
        command,
        port,
        &dir.join("node.log"),
        Duration::from_secs(30),
    )
    .await
    .context("start region node")?;
    Ok((node, format!("http://127.0.0.1:{port}")))
}

/// The id of bench account `n`: spread over the slots, computable inside pgbench.
fn account_id(n: i64) -> i64 {
    (n % SLOTS) * (1 << 48) + n
}

async fn seed_accounts(database_url: &str, accounts: i64) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls).await?;
    tokio::spawn(connection);
    client
        .execute(
            "INSERT INTO ledger.accounts (id, currency, scale, balance, seq, epoch, home_region,
                                          created_at, updated_at)
             SELECT (n % $2) * 281474976710656 + n, 'EUR', 2, 1000000000.00, 0, 1, 'bench', now(), now()
             FROM generate_series(1, $1::bigint) AS n",
            &[&accounts, &SLOTS],
        )
        .await?;
    Ok(())
}

/// A level start for each side: dead rows vacuumed, dirty pages flushed.
/// One pgbench side of a round, after [`prepare_round`], with the CPU it took.
async fn measured_pgbench(
    pgbench: &Path,
    pg: &PgCluster,
    args: &Args,
    dir: &WorkDir,
    duration: Duration,
    round: usize,
    meter: CpuMeter,
) -> anyhow::Result<Figures> {
    prepare_round(&pg.url("ledger")).await?;
    let processes = meter.postgres_processes();
    let before = meter.sample();
    let mut figures = run_pgbench(pgbench, pg, args, dir.path(), duration, round)?;
    // pgbench's backends exit after it does; their time counts once they are reaped.
    if !meter
        .await_postgres_processes(processes, Duration::from_secs(10))
        .await
    {
        println!("(pgbench's backends still running 10 s after it: its CPU figure is low)");
    }
    figures.cpu = meter.sample().since(&before);
    Ok(figures)
}

/// One node side of a round, after [`prepare_round`], with the CPU it took.
async fn measured_http(
    base: &str,
    args: &Args,
    duration: Duration,
    round: usize,
    meter: CpuMeter,
    database_url: &str,
) -> anyhow::Result<Figures> {
    prepare_round(database_url).await?;
    let before = meter.sample();
    let mut figures = run_http(base, args, duration, round, None).await?;
    figures.cpu = meter.sample().since(&before);
    Ok(figures)
}

async fn prepare_round(database_url: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls).await?;
    tokio::spawn(connection);
    // Separate statements: VACUUM refuses to run inside the implicit multi-statement block.
    client.batch_execute("VACUUM ANALYZE").await?;
    client.batch_execute("CHECKPOINT").await?;
    Ok(())
}

fn run_pgbench(
    pgbench: &Path,
    pg: &PgCluster,
    args: &Args,
    dir: &Path,
    duration: Duration,
    round: usize,
) -> anyhow::Result<Figures> {
    // The node's statement with its parameters spelled as pgbench variables and literals.
    let sql = region_node::POST_ENTRY_SQL
        .replace("$1", "'pgb-' || :client_id || '-' || :r")
        .replace("$2", &format!("'\\x{FINGERPRINT_HEX}'::bytea"))
        .replace("$3", "'withdrawal'")
        .replace("$4", ":id")
        .replace("$5", "1.00")
        .replace("$6", "NULL")
        .replace("$7", "1")
        .replace("$8", "'bench'")
        .replace("$9", &format!("'{TRACEPARENT}'"));
    let script = format!(
        "\\set n random(1, {accounts})\n\\set id (:n % {SLOTS}) * 281474976710656 + :n\n\\set r random(1, 4611686018427387903)\n{sql};\n",
        accounts = args.accounts
    );
    let script_path = dir.join("withdraw.sql");
    std::fs::write(&script_path, script).context("write pgbench script")?;
    let log_prefix = dir.join(format!("pgbench_log_{round}"));
    let output = Command::new(pgbench)
        .current_dir(dir)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            harness::pg::SUPERUSER,
        ])
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &args.clients.to_string(),
            "-j",
            "2",
        ])
        .args(["-T", &duration.as_secs().to_string(), "-l", "--log-prefix"])
        .arg(&log_prefix)
        .arg("-f")
        .arg(&script_path)
        .arg("ledger")
        .output()
        .context("run pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut latencies_us = Vec::new();
    for entry in std::fs::read_dir(dir).context("read pgbench logs")? {
        let path = entry?.path();
        let is_log = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("pgbench_log_{round}.")));
        if is_log {
            for line in std::fs::read_to_string(&path)?.lines() {
                // client_id transaction_no latency_us script_no epoch_s epoch_us
                if let Some(latency) = line.split_whitespace().nth(2).and_then(|v| v.parse().ok()) {
                    latencies_us.push(latency);
                }
            }
        }
    }
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Figures {
        label: "pgbench (same SQL)",
        transactions: latencies_us.len(),
        errors: failed,
        seconds: duration.as_secs_f64(),
        latencies_us,
        cpu: CpuSample::default(),
    })
}

/// The node side: one keep-alive HTTP/1.1 connection per client on raw hyper, so the
/// load generator costs about what pgbench's C client costs (both share the 2 cores
/// with the system under test).
async fn run_http(
    base: &str,
    args: &Args,
    duration: Duration,
    round: usize,
    api_key: Option<&str>,
) -> anyhow::Result<Figures> {
    let authorization = api_key.map(|key| format!("Bearer {key}"));
    let authority = base.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.clients {
        let authority = authority.clone();
        let authorization = authorization.clone();
        let accounts = args.accounts;
        workers.spawn(async move {
            let stream = tokio::net::TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let n = rand::rng().random_range(1..=accounts);
                let id = AccountId::from_i64(account_id(n)).map_err(|e| anyhow::anyhow!("{e}"))?;
                sent += 1;
                let mut request = hyper::Request::post(format!("/v1/accounts/{id}/withdrawals"))
                    .header("host", &authority);
                if let Some(authorization) = &authorization {
                    request = request.header("authorization", authorization);
                }
                let request = request
                    .header("idempotency-key", format!("http-{round}-{worker}-{sent}"))
                    .header("traceparent", TRACEPARENT)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(
                        br#"{"amount":"1.00"}"#,
                    )))?;
                let begun = Instant::now();
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let created = response.status().as_u16() == 201;
                http_body_util::BodyExt::collect(response.into_body()).await?;
                if created {
                    latencies.push(u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX));
                } else {
                    errors += 1;
                }
            }
            anyhow::Ok((latencies, errors))
        });
    }
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    while let Some(joined) = workers.join_next().await {
        let (latencies, worker_errors) = joined.context("join worker")??;
        latencies_us.extend(latencies);
        errors += worker_errors;
    }
    Ok(Figures {
        label: "node (HTTP API)",
        transactions: latencies_us.len(),
        errors,
        seconds: started.elapsed().as_secs_f64(),
        latencies_us,
        cpu: CpuSample::default(),
    })
}
