//! The go-spiffe peer (`tests/peers/go`, binary `fedgw-peer`), run as a real process.
//!
//! Include with `#[path = "support/go_peer.rs"] mod go_peer;`. The binary is built by
//! `scripts/peers.sh go` (once per test process; the script caches builds outside the
//! repository), whose `go=BINDIR` line says where it is. Without Go the script fails
//! and so does the test, saying to install Go 1.26: never a skip.
//!
//! [`run`] runs one short subcommand (`fetch`, `jwt-fetch`, …) and returns its output;
//! [`ServePeer`] is a long-running `fedgw-peer serve`, started once it printed
//! `listening ADDR`: a `fedgw_testkit::Process` (killed on drop, its stderr printed if
//! the test is failing).

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test crate uses a different subset"
)]

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Stdio};
use std::time::Duration;

use fedgw_testkit::Process;
use tokio::process::Command;
use tokio::sync::OnceCell;

/// How long one short subcommand may run, and how long `serve` may take to listen.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// How long building the peer may take (a first build downloads go-spiffe and its
/// dependencies from the Go module proxy).
const BUILD_DEADLINE: Duration = Duration::from_secs(900);

static BINARY: OnceCell<PathBuf> = OnceCell::const_new();

/// The `fedgw-peer` binary, built by `scripts/peers.sh go` on first use.
///
/// # Panics
/// If the script fails (Go missing: install Go 1.26 or later) or prints no `go=` line.
pub async fn binary() -> PathBuf {
    BINARY.get_or_init(build).await.clone()
}

async fn build() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/peers.sh");
    let mut command = Command::new(&script);
    command
        .arg("go")
        .current_dir(root)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(BUILD_DEADLINE, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => panic!("cannot run {}: {err}", script.display()),
        Err(_) => panic!(
            "{} go did not finish within {BUILD_DEADLINE:?}",
            script.display()
        ),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the go-spiffe peer could not be built: `scripts/peers.sh go` {}.\n\
         The go-spiffe interop tests need Go 1.26 or later: install Go 1.26 (https://go.dev/dl/) \
         with access to the Go module proxy, then run the tests again.\n{stderr}",
        output.status
    );
    let dir = stdout
        .lines()
        .find_map(|line| line.strip_prefix("go="))
        .unwrap_or_else(|| {
            panic!("`scripts/peers.sh go` printed no go=BINDIR line:\n{stdout}\n{stderr}")
        });
    let binary = Path::new(dir).join("fedgw-peer");
    assert!(
        binary.is_file(),
        "`scripts/peers.sh go` named {dir}, which holds no fedgw-peer"
    );
    binary
}

/// What one subcommand did.
#[derive(Debug)]
pub struct Outcome {
    /// Its exit code (`None` if a signal ended it).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Outcome {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Run `fedgw-peer <args>` to completion (at most [`RUN_DEADLINE`]).
///
/// # Panics
/// If it cannot be started or runs past the deadline.
pub async fn run<I, S>(args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let binary = binary().await;
    let args: Vec<_> = args
        .into_iter()
        .map(|arg| arg.as_ref().to_os_string())
        .collect();
    let mut command = Command::new(&binary);
    command.args(&args).stdin(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(RUN_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("fedgw-peer {args:?} ran past {RUN_DEADLINE:?}"))
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", binary.display()));
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A running `fedgw-peer serve` (or any subcommand that prints `listening ADDR`).
pub struct ServePeer {
    addr: SocketAddr,
    process: Process,
    // Held so that the peer's stdout stays open while it runs.
    _stdout: BufReader<ChildStdout>,
}

impl ServePeer {
    /// Start `fedgw-peer <args>`, its stderr going to `log`; returns once it printed
    /// `listening ADDR`.
    ///
    /// # Panics
    /// If it exits or prints anything else first, with its stderr.
    pub async fn start<I, S>(args: I, log: &Path) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let binary = binary().await;
        let args: Vec<_> = args
            .into_iter()
            .map(|arg| arg.as_ref().to_os_string())
            .collect();
        let mut command = std::process::Command::new(&binary);
        command.args(&args);
        let (mut process, stdout) = Process::spawn_piped_stdout("fedgw-peer", &mut command, log);
        // The first line, read off the runtime; a peer that never writes one is killed
        // (on drop, when the test fails), which ends the read.
        let read = tokio::time::timeout(
            RUN_DEADLINE,
            tokio::task::spawn_blocking(move || {
                let mut stdout = BufReader::new(stdout);
                let mut line = String::new();
                let read = stdout.read_line(&mut line);
                (stdout, line, read.map_err(|err| err.to_string()))
            }),
        )
        .await;
        let (stdout, line, read) = match read {
            Ok(joined) => joined.unwrap(),
            Err(_elapsed) => panic!(
                "fedgw-peer {args:?} printed no line within {RUN_DEADLINE:?}; stderr:\n{}",
                process.log_text()
            ),
        };
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|addr| addr.parse().ok());
        let Some(addr) = addr else {
            panic!(
                "fedgw-peer {args:?} did not print `listening ADDR` (read {read:?}, line {line:?}, exit {:?}); stderr:\n{}",
                process.exit_status(),
                process.log_text()
            );
        };
        process.rename(&format!("fedgw-peer at {addr}"));
        Self {
            addr,
            process,
            _stdout: stdout,
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// What it wrote on stderr so far.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}
