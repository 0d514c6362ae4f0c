//! Throwaway certificates for tests of TLS paths (Debian's `openssl` command): a CA,
//! and a server certificate it signed for `localhost` and 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::HarnessError;

/// PEM files of a test CA and of a server certificate it signed.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Makes a CA and a server certificate (valid two days) in `dir`.
pub fn make_certificates(dir: &Path) -> Result<TestCertificates, HarnessError> {
    std::fs::create_dir_all(dir).map_err(crate::io_context(format!("create {}", dir.display())))?;
    let path = |name: &str| dir.join(name);
    let extensions = path("server.ext");
    std::fs::write(&extensions, "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        .map_err(crate::io_context(format!("write {}", extensions.display())))?;
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=ledger test CA",
        "-keyout",
        &arg(&path("ca.key")),
        "-out",
        &arg(&path("ca.crt")),
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &arg(&path("server.key")),
        "-out",
        &arg(&path("server.csr")),
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        &arg(&path("server.csr")),
        "-CA",
        &arg(&path("ca.crt")),
        "-CAkey",
        &arg(&path("ca.key")),
        "-CAcreateserial",
        "-extfile",
        &arg(&extensions),
        "-out",
        &arg(&path("server.crt")),
    ])?;
    Ok(TestCertificates {
        ca_cert: path("ca.crt"),
        server_cert: path("server.crt"),
        server_key: path("server.key"),
    })
}

fn arg(path: &Path) -> String {
    path.display().to_string()
}

fn openssl(args: &[&str]) -> Result<(), HarnessError> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .map_err(crate::io_context("run openssl (Debian package openssl)"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Command {
            what: format!("openssl {}", args.first().copied().unwrap_or_default()),
            detail: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
