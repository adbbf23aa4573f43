//! Child processes of a test: the `fedgw` binary (`fedgw serve`, `fedgw agent`) or a
//! peer (SPIRE, Envoy, the go-spiffe program), and the tools a test needs.
//!
//! Owns [`Process`]: start a command with its standard output and error appended to a
//! log file (or its standard output piped to the test, for a peer that announces its
//! address there), see whether it runs, kill it (SIGKILL, reaped), kill it on drop,
//! and print its log when the test fails (a panicking thread drops it). And
//! [`require_tool`]: a test that needs a tool fails, saying what to install, when the
//! tool is missing; it never passes by skipping.
//!
//! Does not own what the process is started with (the command line, its
//! configuration, its environment: the harness of each program) nor when it is ready
//! (the harness waits for its own signal: a listener, a socket, a log line).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, PoisonError};

/// A running (or ended) child process whose output goes to a log file.
pub struct Process {
    name: String,
    log: PathBuf,
    child: Mutex<Child>,
    print_log_on_failure: bool,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl Process {
    /// Start `command` as `name`, standard input empty, standard output and error
    /// appended to `log` (created if missing, so restarts share one file).
    ///
    /// # Panics
    /// If the log cannot be opened or the command cannot be started, naming it.
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> Self {
        let out = open_log(log);
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        Self::start(name, command, log)
    }

    /// Start `command` as `name` with its standard output piped to the test (returned)
    /// and its standard error appended to `log`: for a peer that prints its address on
    /// standard output. Keep the pipe open while the process runs.
    ///
    /// # Panics
    /// If the log cannot be opened or the command cannot be started, naming it.
    pub fn spawn_piped_stdout(
        name: &str,
        command: &mut Command,
        log: &Path,
    ) -> (Self, ChildStdout) {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(open_log(log));
        let process = Self::start(name, command, log);
        let stdout = process.lock().stdout.take().unwrap();
        (process, stdout)
    }

    fn start(name: &str, command: &mut Command, log: &Path) -> Self {
        let child = command.spawn().unwrap_or_else(|err| {
            panic!(
                "cannot start {name} ({}): {err}",
                command.get_program().to_string_lossy()
            )
        });
        Self {
            name: name.to_owned(),
            log: log.to_owned(),
            child: Mutex::new(child),
            print_log_on_failure: true,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Do not print the log when the test fails (for a harness that puts the relevant
    /// part of it in its own failure messages).
    #[must_use]
    pub fn quiet(mut self) -> Self {
        self.print_log_on_failure = false;
        self
    }

    /// Rename it (in the printed log's header), e.g. once its address is known.
    pub fn rename(&mut self, name: &str) {
        name.clone_into(&mut self.name);
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.lock().id()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it (and every earlier process on the same log) wrote, without ANSI
    /// colour sequences.
    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// How it exited, if it has.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.lock().try_wait().unwrap()
    }

    /// Whether it still runs.
    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// Panic, with its log, if it has exited.
    ///
    /// # Panics
    /// If it has exited.
    pub fn assert_running(&self) {
        if let Some(status) = self.exit_status() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_text());
        }
    }

    /// Wait for it to exit (blocks the thread).
    pub fn wait(&self) -> ExitStatus {
        self.lock().wait().unwrap()
    }

    /// SIGKILL it (like `kill -9`) and reap it; nothing if it has already exited.
    pub fn kill(&self) {
        let mut child = self.lock();
        // An error means it has already exited; wait() reaps it either way.
        let _already_exited = child.kill();
        let _status = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if self.print_log_on_failure && std::thread::panicking() {
            eprintln!(
                "\n----- log of {} ({}) -----\n{}\n----- end of log of {} -----",
                self.name,
                self.log.display(),
                self.log_text(),
                self.name
            );
        }
    }
}

fn open_log(log: &Path) -> std::fs::File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|err| panic!("cannot open the log {}: {err}", log.display()))
}

/// Remove ANSI colour sequences (`ESC [ ... m`), in case a logger colours anyway.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Run `program args` to check that the tool is there, and return what it printed.
///
/// # Panics
/// When it cannot be run or fails: the test fails, saying `install` (what to
/// install, and how); it never passes by skipping.
pub fn require_tool(program: &str, args: &[&str], install: &str) -> Output {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("{program} is not installed ({err}): {install}"));
    assert!(
        output.status.success(),
        "`{program} {}` failed ({}): {}{}; {install}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_logs_to_its_file_and_is_killed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleeper.log");
        let process = Process::spawn(
            "sleeper",
            Command::new("sh").args(["-c", "echo started; exec sleep 60"]),
            &log,
        );
        let pid = process.pid();
        crate::wait::wait_until(crate::wait::DEADLINE, "the sleeper's output", || async {
            process.log_text().contains("started")
        })
        .await;
        assert!(process.is_running());
        drop(process);
        // Reaped: no such process any more.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn exit_is_seen_and_restarts_append_to_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("twice.log");
        for n in 1..=2 {
            let process = Process::spawn(
                "echo",
                Command::new("sh").args(["-c", &format!("echo run {n}; exit 3")]),
                &log,
            );
            assert_eq!(process.wait().code(), Some(3));
            assert!(!process.is_running());
        }
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "run 1\nrun 2\n");
    }

    #[test]
    #[should_panic(expected = "no-such-tool-for-the-kit is not installed")]
    fn a_missing_tool_fails_naming_what_to_install() {
        require_tool("no-such-tool-for-the-kit", &["--version"], "install it");
    }

    #[test]
    fn strip_ansi_removes_colour() {
        assert_eq!(strip_ansi("\u{1b}[32mINFO\u{1b}[0m ok"), "INFO ok");
    }
}
