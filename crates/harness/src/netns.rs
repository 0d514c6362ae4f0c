//! Running a process inside a Linux network namespace (`ip netns exec`), so a test can
//! give each region its own address and cut the links between regions with packet
//! filters. `ip netns exec` joins the namespace and then execs the program, so the pid
//! a caller holds is the program's own: stopping by pid keeps working.

use std::process::Command;

/// `command`, rebuilt to run inside the network namespace `namespace` (program,
/// arguments, environment and working directory are carried over; set a process group
/// or other spawn options on the returned command).
pub fn in_namespace(command: &Command, namespace: &str) -> Command {
    wrap(
        command,
        "ip",
        ["netns", "exec", namespace].map(String::from),
    )
}

/// `command` run as `uid:gid` by `setpriv` (for a server that refuses root, such as
/// PostgreSQL, started inside a namespace: joining one needs root, so the switch to the
/// unprivileged user happens after the join).
pub fn as_user(command: &Command, uid: u32, gid: u32) -> Command {
    wrap(
        command,
        "setpriv",
        [
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".to_owned(),
        ],
    )
}

/// `launcher prefix.. program args..`, with `command`'s environment and directory.
fn wrap<const N: usize>(command: &Command, launcher: &str, prefix: [String; N]) -> Command {
    let mut wrapped = Command::new(launcher);
    wrapped
        .args(prefix)
        .arg(command.get_program())
        .args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_program_arguments_and_environment() {
        let mut command = Command::new("postgres");
        command
            .args(["-D", "/data"])
            .env("A", "1")
            .current_dir("/tmp");
        let wrapped = in_namespace(&as_user(&command, 101, 102), "lg71r0");
        let args: Vec<_> = wrapped
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(wrapped.get_program(), "ip");
        assert_eq!(
            args,
            [
                "netns",
                "exec",
                "lg71r0",
                "setpriv",
                "--reuid=101",
                "--regid=102",
                "--clear-groups",
                "postgres",
                "-D",
                "/data"
            ]
        );
        assert!(wrapped
            .get_envs()
            .any(|(k, v)| k == "A" && v == Some("1".as_ref())));
        assert_eq!(
            wrapped.get_current_dir(),
            Some(std::path::Path::new("/tmp"))
        );
    }
}
