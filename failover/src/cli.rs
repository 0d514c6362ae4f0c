//! The `failover` command line: every subcommand and flag (clap), kept apart from
//! what each does (`main.rs`).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use ledger_wire::dlq::LetterId;
use ledger_wire::AccountId;
use service_kit::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "failover",
    about = "Switchover, promote, reconcile, failback, rehome and drills for a ledger deployment"
)]
pub struct Cli {
    /// A local deployment's data dir (`ledger-local --data-dir`): voters, nodes and secret from its state file.
    #[arg(long, env = "LEDGER_DEPLOYMENT", global = true)]
    pub deployment: Option<PathBuf>,
    /// Ownership voters (host:port), comma-separated, when not using --deployment.
    #[arg(
        long,
        env = "LEDGER_OWNERSHIP_VOTERS",
        value_delimiter = ',',
        global = true
    )]
    pub voters: Vec<String>,
    /// A region node: region=http://host:port (repeat for each region).
    #[arg(
        long = "node",
        env = "LEDGER_NODES",
        value_delimiter = ',',
        global = true
    )]
    pub nodes: Vec<String>,
    /// A region's replicator: region=http://host:port (repeat; the `dlq` commands).
    #[arg(
        long = "replicator",
        env = "LEDGER_REPLICATORS",
        value_delimiter = ',',
        global = true
    )]
    pub replicators: Vec<String>,
    /// The deployment's internal secret (signs calls to the nodes' /internal API).
    #[arg(
        long,
        env = "LEDGER_INTERNAL_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub secret: Option<String>,
    /// A public API key for the drill's clients, when the deployment uses API keys
    /// (with --deployment, the deployment's own).
    #[arg(long, env = "LEDGER_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// CA (PEM) that signed the nodes' certificates, for `https://` nodes; default: the
    /// system's roots.
    #[arg(long, env = "LEDGER_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Regions, leases, slots, epochs, replication lag, late events.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Planned move with RPO 0: a region's slots, chosen slots, or one account.
    Switchover {
        #[arg(long, conflicts_with_all = ["slots", "account"])]
        region: Option<String>,
        #[arg(long, value_delimiter = ',')]
        slots: Vec<u32>,
        #[arg(long)]
        account: Option<AccountId>,
        #[arg(long)]
        to: String,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Move one account's home (a planned per-account switchover).
    Rehome {
        #[arg(long)]
        account: AccountId,
        #[arg(long)]
        to: String,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Move a dead region's slots to the survivors (or, with --auto, watch and do it).
    Promote {
        #[arg(long, required_unless_present = "auto")]
        region: Option<String>,
        /// Promote even though the region's lease is live.
        #[arg(long)]
        force: bool,
        /// Watch leases and promote a region expired for --detect-after-ms.
        #[arg(long)]
        auto: bool,
        #[arg(long, default_value_t = 5_000)]
        detect_after_ms: u64,
        /// Bound on applying what survivors can still read of the dead region's topic.
        #[arg(long, default_value_t = 3_000)]
        apply_timeout_ms: u64,
        /// Keep retrying for this long while the region's lease is still live.
        #[arg(long, default_value_t = 0)]
        wait_s: u64,
    },
    /// List late events and their reconciliation; acknowledge flagged ones; push
    /// pending ones to their account's owner.
    Reconcile {
        /// Only this status (pending, replayed, flagged, duplicate, acknowledged, replayed_elsewhere).
        #[arg(long)]
        status: Option<String>,
        /// Acknowledge this flagged event (with --region and --by).
        #[arg(long, requires_all = ["region", "by"])]
        ack: Option<uuid::Uuid>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        by: Option<String>,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long)]
        json: bool,
        /// First make every region (or --region) hand its pending late events of
        /// accounts it does not own to their owner now (the nodes also do this on their
        /// own after a few seconds).
        #[arg(long)]
        push: bool,
    },
    /// Switch back to a region what its last promote moved away, once it is healthy and reconciled.
    Failback {
        #[arg(long)]
        region: String,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Keep retrying for this long while the region is not yet healthy and reconciled.
        #[arg(long, default_value_t = 0)]
        wait_s: u64,
    },
    /// Thaw frozen slots: after a switchover whose rollback could not reach the
    /// ownership service (its error names the slots), or every frozen slot with --all.
    Thaw {
        /// Slots and ranges, e.g. `4-7,9`.
        #[arg(long, value_delimiter = ',', value_parser = parse_slot_range, conflicts_with = "all")]
        slots: Vec<Vec<u32>>,
        /// Every frozen slot of the deployment.
        #[arg(long)]
        all: bool,
    },
    /// Check the invariants on every region now.
    Audit,
    /// Dead letters: events a region's appliers could not apply, and their replay.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Run a scenario under load and write a report.
    Drill(DrillArgs),
    /// API keys of the public API: make, list, revoke (the key file every region reads).
    Keys {
        /// The key file; default: the deployment's (`--deployment`), `api-keys.json`.
        #[arg(long, env = "LEDGER_API_KEYS_FILE")]
        file: Option<PathBuf>,
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Make a key for a tenant: the key is printed once (only its hash is stored).
    New {
        #[arg(long)]
        tenant: String,
        /// read, write or both (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "read,write")]
        scopes: Vec<ledger_wire::api_keys::Scope>,
    },
    /// Every key: id, tenant, scopes, created, revoked.
    List,
    /// Revoke a key by id: every region refuses it once it reads the file again.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Per region: how many letters, how many wait, the oldest waiting; each letter's
    /// id, age, error and event.
    List {
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One letter whole: its headers (the error, where it was read) and payload.
    Show {
        #[arg(long)]
        region: String,
        /// partition:offset, as `list` prints it.
        letter: LetterId,
    },
    /// Put letters through the normal apply rules again, after a fix: the ones named,
    /// or every one still waiting. A settled letter is never replayed twice; each
    /// replay is recorded with --by. Exits non-zero if a letter stays waiting.
    Replay {
        #[arg(long)]
        region: String,
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        letters: Vec<LetterId>,
        #[arg(long)]
        all: bool,
        /// Who replays (recorded with the replay).
        #[arg(long)]
        by: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScenarioName {
    Switchover,
    KillPromoteReturn,
    Rehome,
    /// Kill, promote, restart and failback, `--cycles` times, regions in turn.
    KillCycles,
    /// The faults of `--schedule-file`, each at its time (`chaos run` writes it).
    Schedule,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WorkloadName {
    /// Deposits and withdrawals.
    Deposits,
    /// Only transfers between random pairs of accounts (the bank workload).
    Transfers,
    /// Transfers, deposits, withdrawals, account opens, and reads with `min_seq` or
    /// `consistency=strong` that the checker holds to their promise.
    Mixed,
}

#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    #[arg(long, value_enum)]
    pub scenario: ScenarioName,
    /// The region the scenario acts on (kill-cycles: a comma-separated list, taken in
    /// turn; not for schedule).
    #[arg(long)]
    pub region: Option<String>,
    /// The schedule scenario's faults: a JSON `FaultSchedule` (what `chaos run` writes).
    #[arg(long)]
    pub schedule_file: Option<PathBuf>,
    /// How many kill cycles (kill-cycles).
    #[arg(long, default_value_t = 2)]
    pub cycles: u32,
    #[arg(long, value_enum, default_value = "deposits")]
    pub workload: WorkloadName,
    /// Where switchover and rehome move to.
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    #[arg(long, default_value_t = 4)]
    pub accounts_per_region: usize,
    /// Ask for ack=replicated on every write.
    #[arg(long)]
    pub ack_replicated: bool,
    #[arg(long, default_value_t = 3)]
    pub warmup_s: u64,
    #[arg(long, default_value_t = 5)]
    pub observe_s: u64,
    #[arg(long, default_value_t = 5)]
    pub down_for_s: u64,
    #[arg(long, default_value_t = 120)]
    pub heal_timeout_s: u64,
    /// Shell command killing a region ({region} is replaced); default with --deployment: ledger-local kill.
    #[arg(long)]
    pub kill_cmd: Option<String>,
    /// Shell command restarting a region; default with --deployment: ledger-local restart.
    #[arg(long)]
    pub restart_cmd: Option<String>,
    /// Shell command run just before the final audit (fault injection for tests).
    #[arg(long)]
    pub before_audit_cmd: Option<String>,
    /// Kill cycles: shell command run on the region just failed back ({region}), e.g.
    /// `ledger-local pause {region} --ms 3000` (its node paused past its lease).
    #[arg(long)]
    pub pause_cmd: Option<String>,
    /// What each workload account is opened with.
    #[arg(long, default_value = failover::drill::workload::DEFAULT_FUNDING)]
    pub funding: String,
    #[arg(long, default_value = "drill-report")]
    pub report_dir: PathBuf,
}

/// `7` or `1-4` (as `failover thaw --slots 1-4,9` takes them).
fn parse_slot_range(text: &str) -> Result<Vec<u32>, String> {
    let number = |t: &str| {
        t.trim()
            .parse::<u32>()
            .map_err(|e| format!("{t:?} is not a slot number: {e}"))
    };
    match text.split_once('-') {
        Some((first, last)) => {
            let (first, last) = (number(first)?, number(last)?);
            if first > last {
                return Err(format!("{text}: the range runs backwards"));
            }
            Ok((first..=last).collect())
        }
        None => Ok(vec![number(text)?]),
    }
}
