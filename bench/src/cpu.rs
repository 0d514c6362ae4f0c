//! CPU time per side of a benchmark, per transaction: what the database, the client and
//! the node each spent. Throughput on a shared 2-core machine drifts from run to run;
//! CPU microseconds per transaction do much less, and say where a gap comes from.

use nix::sys::resource::{getrusage, UsageWho};

/// CPU seconds used so far by each party.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    /// The PostgreSQL server with every backend.
    pub postgres: f64,
    /// This process (the HTTP load generator) plus the child processes it has reaped
    /// (pgbench, run to completion).
    pub client: f64,
    /// The node under test (0 when there is none).
    pub node: f64,
}

impl CpuSample {
    /// What was spent between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuSample) -> CpuSample {
        CpuSample {
            postgres: self.postgres - earlier.postgres,
            client: self.client - earlier.client,
            node: self.node - earlier.node,
        }
    }

    pub fn add(&mut self, other: &CpuSample) {
        self.postgres += other.postgres;
        self.client += other.client;
        self.node += other.node;
    }
}

/// Reads the parties' CPU time from `/proc` and `getrusage`.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pub postgres_pid: u32,
    pub node_pid: Option<u32>,
}

impl CpuMeter {
    pub fn sample(&self) -> CpuSample {
        CpuSample {
            postgres: chaos::proc_stat::cpu_seconds_of_tree(self.postgres_pid),
            client: own_and_reaped_children(),
            node: self
                .node_pid
                .map_or(0.0, chaos::proc_stat::cpu_seconds_of_tree),
        }
    }

    /// The database server's processes (its backends included).
    pub fn postgres_processes(&self) -> usize {
        chaos::proc_stat::tree_size(self.postgres_pid)
    }

    /// Waits until the database server holds no more processes than `count`: the
    /// backends of a client that just disconnected have exited and been reaped, so
    /// their CPU time shows in the server's own (within `timeout`; false if not).
    pub async fn await_postgres_processes(
        &self,
        count: usize,
        timeout: std::time::Duration,
    ) -> bool {
        harness::wait_until(timeout, std::time::Duration::from_millis(20), || async {
            (self.postgres_processes() <= count).then_some(())
        })
        .await
        .is_some()
    }
}

/// This process's CPU seconds plus those of its children it has waited for.
fn own_and_reaped_children() -> f64 {
    [UsageWho::RUSAGE_SELF, UsageWho::RUSAGE_CHILDREN]
        .into_iter()
        .filter_map(|who| getrusage(who).ok())
        .map(|usage| {
            let (user, system) = (usage.user_time(), usage.system_time());
            let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            seconds(user) + seconds(system)
        })
        .sum()
}
