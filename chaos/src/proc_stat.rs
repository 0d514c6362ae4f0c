//! What `/proc/<pid>/stat` says about the deployment's processes: their children (a
//! PostgreSQL server's backends) and the CPU time they used, so faults can reach every
//! backend and `ledger-local cpu` can say what an idle or loaded deployment costs per
//! process kind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::deployment::{Deployment, PROCESSES};

/// The processes whose parent is `pid` (from `/proc`; unreadable entries are skipped:
/// processes come and go while it reads).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| parent_in_stat(&stat))
                == Some(pid)
        })
        .collect()
}

/// The fields after the command name, which is in parentheses and may itself hold
/// spaces and parentheses. Field 3 of proc(5) (the state) is the first of them.
fn fields_after_name(stat: &str) -> Option<Vec<&str>> {
    let (_, after_name) = stat.rsplit_once(')')?;
    Some(after_name.split_whitespace().collect())
}

/// The parent pid in a `/proc/<pid>/stat` line (field 4).
pub fn parent_in_stat(stat: &str) -> Option<u32> {
    fields_after_name(stat)?.get(1)?.parse().ok()
}

/// User plus system CPU time in a `/proc/<pid>/stat` line (fields 14 and 15), in clock
/// ticks, every thread of the process included.
pub fn cpu_ticks_in_stat(stat: &str) -> Option<u64> {
    let fields = fields_after_name(stat)?;
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// How many processes `pid`'s tree holds (`pid` included), zombies included.
pub fn tree_size(pid: u32) -> usize {
    let mut count = 0;
    let mut pending = vec![pid];
    while let Some(next) = pending.pop() {
        count += 1;
        pending.extend(children_of(next));
    }
    count
}

/// As [`cpu_ticks_in_stat`], plus the time of the children this process has waited
/// for (fields 16 and 17): a living child is not counted there yet, a reaped one only
/// there.
pub fn cpu_ticks_with_reaped_in_stat(stat: &str) -> Option<u64> {
    let fields = fields_after_name(stat)?;
    let reaped_user: u64 = fields.get(13)?.parse().ok()?;
    let reaped_system: u64 = fields.get(14)?.parse().ok()?;
    Some(cpu_ticks_in_stat(stat)? + reaped_user + reaped_system)
}

/// CPU ticks used so far by `pid` and its children (0 for a process that is gone).
fn cpu_ticks_with_children(pid: u32) -> u64 {
    std::iter::once(pid)
        .chain(children_of(pid))
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            cpu_ticks_in_stat(&stat)
        })
        .sum()
}

/// CPU seconds used so far by `pid` and all its descendants, living or exited and
/// reaped (a PostgreSQL server started through a wrapper, with its backends, including
/// those of connections already closed; 0 for a process that is gone).
pub fn cpu_seconds_of_tree(pid: u32) -> f64 {
    let mut ticks = 0;
    let mut pending = vec![pid];
    while let Some(next) = pending.pop() {
        if let Some(used) = std::fs::read_to_string(format!("/proc/{next}/stat"))
            .ok()
            .and_then(|stat| cpu_ticks_with_reaped_in_stat(&stat))
        {
            ticks += used;
        }
        pending.extend(children_of(next));
    }
    ticks as f64 / TICKS_PER_SECOND
}

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ): 100 on every Linux ABI
/// this runs on, whatever the kernel's internal tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU used per process kind over a window, in cores (1.0 = one core busy all along).
#[derive(Debug, Clone, Default)]
pub struct CpuUsage {
    pub window: Duration,
    /// (region, process kind) -> cores.
    pub cores: BTreeMap<(String, String), f64>,
}

impl CpuUsage {
    /// Cores used by one process kind over every region.
    pub fn of_kind(&self, kind: &str) -> f64 {
        self.cores
            .iter()
            .filter(|((_, k), _)| k == kind)
            .map(|(_, cores)| cores)
            .sum()
    }

    pub fn total(&self) -> f64 {
        self.cores.values().sum()
    }

    /// A table: one row per process kind, one column per region, and the totals.
    pub fn table(&self) -> String {
        let regions: Vec<&String> = {
            let mut names: Vec<&String> = self.cores.keys().map(|(r, _)| r).collect();
            names.dedup();
            names
        };
        let mut out = format!("{:<12}", "process");
        for region in &regions {
            out.push_str(&format!(" {region:>10}"));
        }
        out.push_str(&format!(" {:>10}\n", "all"));
        for kind in PROCESSES {
            out.push_str(&format!("{kind:<12}"));
            for region in &regions {
                let cores = self
                    .cores
                    .get(&((*region).clone(), kind.to_string()))
                    .copied()
                    .unwrap_or(0.0);
                out.push_str(&format!(" {cores:>10.3}"));
            }
            out.push_str(&format!(" {:>10.3}\n", self.of_kind(kind)));
        }
        out.push_str(&format!(
            "{:<12}{}{:>11.3} cores over {:.1} s\n",
            "total",
            " ".repeat(11 * regions.len()),
            self.total(),
            self.window.as_secs_f64()
        ));
        out
    }
}

/// Measures the CPU every process of `deployment` (PostgreSQL backends included) uses
/// over `window`. Processes that start or stop meanwhile count from when they are seen.
pub async fn measure(deployment: &Deployment, window: Duration) -> CpuUsage {
    let sample = || -> BTreeMap<(String, String), u64> {
        let mut ticks = BTreeMap::new();
        for region in &deployment.regions {
            for kind in PROCESSES {
                if let Some(pid) = region.pid(kind) {
                    ticks.insert(
                        (region.name.clone(), kind.to_string()),
                        cpu_ticks_with_children(pid),
                    );
                }
            }
        }
        ticks
    };
    let before = sample();
    let started = Instant::now();
    // The measurement window itself, not synchronisation.
    tokio::time::sleep(window).await;
    let after = sample();
    let elapsed = started.elapsed();
    let cores = after
        .into_iter()
        .map(|(key, end)| {
            let start = before.get(&key).copied().unwrap_or(end);
            let used = end.saturating_sub(start) as f64 / TICKS_PER_SECOND;
            (key, used / elapsed.as_secs_f64())
        })
        .collect();
    CpuUsage {
        window: elapsed,
        cores,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_command_name_with_spaces_and_parentheses() {
        assert_eq!(
            parent_in_stat("4242 (postgres) S 4200 4200 4200 0"),
            Some(4200)
        );
        assert_eq!(parent_in_stat("7 (a (b) c) R 1 7 7 0"), Some(1));
        assert_eq!(parent_in_stat("garbage"), None);
        let me = std::process::id();
        let parent = std::fs::read_to_string(format!("/proc/{me}/stat"))
            .ok()
            .and_then(|stat| parent_in_stat(&stat));
        assert!(parent.is_some_and(|p| children_of(p).contains(&me)));
    }

    #[test]
    fn cpu_time_is_user_plus_system_and_grows_while_this_process_works() {
        let line = "7 (a (b) c) R 1 7 7 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0";
        assert_eq!(cpu_ticks_in_stat(line), Some(281));
        assert_eq!(cpu_ticks_in_stat("7 (x) R 1"), None);
        let me = std::process::id();
        let before = cpu_ticks_with_children(me);
        let started = Instant::now();
        let mut spin = 0_u64;
        while started.elapsed() < Duration::from_millis(200) {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);
        assert!(
            cpu_ticks_with_children(me) > before,
            "200 ms of spinning used no CPU"
        );
    }

    #[test]
    fn a_reaped_child_s_time_counts_in_its_parent_s_tree() {
        let line = "7 (a (b) c) R 1 7 7 0 -1 4194560 100 0 0 0 250 31 12 3 20 0 1 0";
        assert_eq!(cpu_ticks_with_reaped_in_stat(line), Some(296));
        let me = std::process::id();
        let reaped = || {
            let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).expect("own stat");
            cpu_ticks_with_reaped_in_stat(&stat).expect("parse")
                - cpu_ticks_in_stat(&stat).expect("parse")
        };
        let before = reaped();
        // A child that spins for a while, then exits and is waited for.
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .expect("run sh");
        assert!(status.success());
        assert!(reaped() > before, "the exited child's CPU was not counted");
    }
}
