//! Throwaway PostgreSQL servers: a real server from Debian's packages, in a temporary
//! directory, for the tests of fedgw's PostgreSQL storage. No mocks.
//!
//! Owns [`Postgres`]: a fresh cluster (`initdb`) in a temporary directory it owns,
//! listening on a free loopback port with TLS (a server certificate for `localhost` and
//! `127.0.0.1` from a [`TestCa`] made at test time) and on a unix socket in that
//! directory; a login role `fedgw` with a password ([`PASSWORD`]); an empty database
//! per test ([`Postgres::create_database`]); SQL as the superuser over the socket
//! ([`Postgres::psql`]); and the failures a storage test needs: a fast shutdown, a
//! restart on the same data and port, a `kill -9` of the postmaster (crash recovery on
//! the next start). [`Postgres::shared`] is one server per test process for tests that
//! only need a database of their own.
//!
//! Does not own a client: tests connect the way fedgw does (its own PostgreSQL client,
//! over TCP with the password and TLS verified against [`Postgres::ca_file`]), and use
//! `psql` only to look at or tamper with rows.
//!
//! # Finding PostgreSQL
//! The binaries are looked for in `$PG_BIN_DIR` if set, else in the highest version of
//! `/usr/lib/postgresql/*/bin` (Debian's layout; `PATH` is not used). When they are
//! missing, [`Postgres::start`] fails, saying what to install: a test that needs
//! PostgreSQL fails, it never passes by skipping.
//!
//! # Root
//! `initdb` and `postgres` refuse to run as root. When the test process is root (this
//! machine and CI), they run as the `postgres` system user (Debian's package creates
//! it) through `setpriv`, and the temporary directory is handed to that user
//! (`chown -R postgres:`); it is made under a directory that user can reach
//! (`$TMPDIR`, else `/tmp`). Otherwise they run as the test's own user.
//!
//! # Lifetime
//! A server never outlives its test process, even when the process exits without
//! running destructors (a `static` server such as [`Postgres::shared`], `exit`, a
//! `kill -9` of the test): the postmaster is started by a small guard (`sh -c`, run as
//! the test's user) whose standard input is a pipe the test process holds. A line on
//! that pipe asks for a fast shutdown that keeps the directory (`stop`, `restart`);
//! the end of the pipe (the process is gone, or dropped the server) asks for an
//! immediate shutdown, and the guard removes the directory once the postmaster has
//! exited. While the server is stopped, a guard without a server keeps watching the
//! pipe to remove the directory. [`Drop`] stops the server the same way and removes
//! the directory.
//!
//! Everything here is synchronous (`std::process`) and blocks the calling thread (a
//! start takes about half a second): from an async test, call it before the work
//! under test or in `spawn_blocking`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a fixture the tests share returns errors; the test decides to fail"
)]

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rustls_pki_types::PrivateKeyDer;

use crate::ca::TestCa;

/// The login role tests (and fedgw) connect as over TCP; a superuser.
pub const USER: &str = "fedgw";

/// The password of [`USER`] (SCRAM-SHA-256 over TCP).
pub const PASSWORD: &str = "fedgw-test-password";

/// The cluster's bootstrap superuser, used over the unix socket (trust) by
/// [`Postgres::psql`].
const SUPERUSER: &str = "postgres";

/// The system user the server runs as when the test process is root.
const SYSTEM_USER: &str = "postgres";

/// How long a start (or a restart, a crash recovery, a shutdown) may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// How often a start is polled (a read of `postmaster.pid`).
const POLL: Duration = Duration::from_millis(20);

/// Attempts at a first start when the free port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// What [`PgError`] says when the binaries are missing.
const NOT_INSTALLED: &str = "PostgreSQL server binaries not found (looked in \
     /usr/lib/postgresql/*/bin and $PG_BIN_DIR): install the Debian package postgresql \
     (apt-get install postgresql)";

/// Where Debian installs each major version's binaries (`<version>/bin`).
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The guard of one server (see "Lifetime" in the module documentation).
///
/// `$1` is the server's directory, the rest the postmaster's command line (none: a
/// guard of the directory alone). It prints the postmaster's PID (or `none`) on its
/// standard output, then reads its standard input: a line asks for a fast shutdown
/// (SIGINT) and keeps the directory; the end of input asks for an immediate shutdown
/// (SIGQUIT), then removes the directory. The postmaster is its child, not reaped
/// until it waits for it, so its PID cannot be reused before the guard signals it.
/// The guard runs in a process group of its own, so a terminal's Ctrl-C reaches the
/// test process alone (whose exit then ends the pipe).
const GUARD_SCRIPT: &str = r#"trap '' HUP INT
dir=$1
shift
pg=
if [ "$#" -gt 0 ]; then
    "$@" </dev/null >&2 &
    pg=$!
fi
echo "${pg:-none}"
if read -r _; then
    if [ -n "$pg" ]; then
        kill -INT "$pg" 2>/dev/null
        wait "$pg"
    fi
    exit 0
fi
if [ -n "$pg" ]; then
    kill -QUIT "$pg" 2>/dev/null
    wait "$pg"
fi
rm -rf -- "$dir"
"#;

/// Unique names in this process: temporary directories and databases.
static SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// What went wrong with a throwaway PostgreSQL server: what failed and why (a
/// command's output, the end of the server's log), or what to install.
#[derive(Clone, PartialEq, Eq)]
pub struct PgError {
    message: String,
}

impl PgError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// What went wrong (the same text as [`fmt::Display`]).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The message itself, so that a test's `unwrap()` shows the log lines as lines.
impl fmt::Debug for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PgError {}

/// One throwaway PostgreSQL server in a temporary directory it owns; see the module
/// documentation.
///
/// Listens on `127.0.0.1:`[`port`](Self::port) (TLS, password: connect with
/// [`url`](Self::url), [`password`](Self::password) and [`ca_file`](Self::ca_file))
/// and on a unix socket in [`socket_dir`](Self::socket_dir) (trust, for
/// [`psql`](Self::psql)). Dropping it stops the server and removes the directory.
pub struct Postgres {
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    ca_file: PathBuf,
    ca_pem: String,
    bin: PathBuf,
    port: u16,
    /// The test process is root: the server's programs run as [`SYSTEM_USER`].
    as_system_user: bool,
    state: Mutex<State>,
}

/// Whether the server runs; either way a guard watches the test process.
enum State {
    Running(Guard),
    Stopped(Guard),
    /// A guard could not be started (reported by the call that tried).
    Unguarded,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("bin", &self.bin)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Start a fresh server: `initdb` a cluster in a new temporary directory (trust on
    /// the unix socket, SCRAM-SHA-256 over TCP), configure it (`127.0.0.1` and a free
    /// port, the socket in the directory, TLS with a certificate from a test CA,
    /// `max_connections = 200`, `fsync = on`, `log_min_messages = warning`, the log in
    /// `postgres.log`), start it, wait until it accepts connections (up to 30 s), and
    /// create the login role [`USER`] (a superuser) with [`PASSWORD`].
    ///
    /// # Errors
    /// When the binaries are missing (saying what to install), or a step fails (saying
    /// which, with its output or the end of the server's log).
    pub fn start() -> Result<Self, PgError> {
        let bin = find_bin_dir(std::env::var_os("PG_BIN_DIR"), Path::new(DEBIAN_ROOT))?;
        let as_system_user = is_root()?;
        if as_system_user {
            check_system_user()?;
        }
        let dir = make_dir(&base_dir(as_system_user))?;
        let log = dir.join("postgres.log");
        let mut pg = Self {
            data: dir.join("data"),
            ca_file: dir.join("ca.crt"),
            log,
            dir,
            ca_pem: String::new(),
            bin,
            port: 0,
            as_system_user,
            state: Mutex::new(State::Unguarded),
        };
        // From here on the directory is guarded: an error (or the end of the test
        // process) removes it.
        fs::write(&pg.log, "").map_err(|err| io_error("create", &pg.log, &err))?;
        *pg.lock() = State::Stopped(Guard::spawn(&pg.dir, &pg.log, None)?);
        pg.write_tls_files()?;
        if as_system_user {
            run(Command::new("chown")
                .args(["-R", &format!("{SYSTEM_USER}:")])
                .arg(&pg.dir))?;
        }
        pg.initdb()?;
        let base_conf = fs::read_to_string(pg.data.join("postgresql.conf"))
            .map_err(|err| io_error("read", &pg.data.join("postgresql.conf"), &err))?;
        let mut attempt = 1;
        loop {
            pg.port = crate::net::free_port();
            pg.write_conf(&base_conf)?;
            match pg.launch(Instant::now() + DEADLINE) {
                Ok(()) => break,
                Err(Launch::Exited(log)) if attempt < PORT_ATTEMPTS && port_taken(&log) => {
                    attempt += 1;
                }
                Err(err) => return Err(pg.launch_error("start", err)),
            }
        }
        pg.psql(
            "postgres",
            &format!("CREATE ROLE {USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'"),
        )?;
        Ok(pg)
    }

    /// The server of this test process, started on first use and shared by every test
    /// that calls this (each test takes a database of its own with
    /// [`create_database`](Self::create_database)). It is never dropped: its guard
    /// stops it and removes its directory when the process exits.
    ///
    /// Do not stop it, restart it or kill it: other tests use it. A test of failures
    /// starts a server of its own.
    ///
    /// # Errors
    /// The error of the first start, to every caller.
    pub fn shared() -> Result<&'static Self, PgError> {
        static SHARED: OnceLock<Result<Postgres, PgError>> = OnceLock::new();
        SHARED
            .get_or_init(Self::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Create a new, empty database with a name unique in this process, owned by
    /// [`USER`], and return its name.
    ///
    /// # Errors
    /// When `CREATE DATABASE` fails (the server is stopped, say).
    pub fn create_database(&self) -> Result<String, PgError> {
        let name = format!(
            "fedgw_test_{}_{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER {USER}"))?;
        Ok(name)
    }

    /// The URL of `database` over TCP as [`USER`], without the password:
    /// `postgres://fedgw@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The password of [`USER`].
    pub fn password(&self) -> &str {
        PASSWORD
    }

    /// The TCP port, on `127.0.0.1`; the same for the server's whole life.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM of the CA that issued the server's certificate (for `localhost` and
    /// `127.0.0.1`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA's certificate as a PEM file (in the server's directory), e.g. for
    /// `sslrootcert`.
    pub fn ca_file(&self) -> PathBuf {
        self.ca_file.clone()
    }

    /// The directory of the unix socket (`.s.PGSQL.<port>`), also the server's own
    /// temporary directory.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server's log (every start appends to it).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The directory of the PostgreSQL binaries in use (`psql`, `pg_dump`, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Run `sql` (one statement or a script) in `database` with `psql` over the unix
    /// socket as the superuser (`-X -A -t -q -v ON_ERROR_STOP=1`, the script on
    /// standard input), and return what it printed: one row a line, columns separated
    /// by `|`, without command tags or the last newline.
    ///
    /// # Errors
    /// When psql fails (an SQL error stops the script), with what it printed.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, PgError> {
        let mut command = Command::new(self.bin.join("psql"));
        command
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
            ])
            .args(["-f", "-"]);
        let output = run_with_input(client_env(&mut command), sql.as_bytes())
            .map_err(|err| PgError::new(format!("cannot run psql: {err}")))?;
        if !output.status.success() {
            return Err(PgError::new(format!(
                "psql in database {database} ({}) failed ({}): {}{}\nthe SQL:\n{sql}",
                self.dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr).trim_end()
            )));
        }
        let mut stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if stdout.ends_with('\n') {
            stdout.pop();
        }
        Ok(stdout)
    }

    /// Stop the server with a fast shutdown (sessions are ended, a checkpoint is
    /// written) and wait until it has exited. Nothing when it is stopped.
    ///
    /// # Errors
    /// When the shutdown does not finish in time (the postmaster is then killed).
    pub fn stop(&self) -> Result<(), PgError> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, State::Unguarded) {
            State::Running(mut guard) => {
                let stopped = guard.finish(true);
                *state = State::Stopped(Guard::spawn(&self.dir, &self.log, None)?);
                stopped
            }
            other => {
                *state = other;
                Ok(())
            }
        }
    }

    /// Start the stopped server again on the same data and port, and wait until it
    /// accepts connections (after a [`kill9`](Self::kill9), once crash recovery has
    /// replayed the WAL).
    ///
    /// # Errors
    /// When it is running, or does not come up in time (with the end of its log).
    pub fn start_again(&self) -> Result<(), PgError> {
        let mut state = self.lock();
        if matches!(*state, State::Running(_)) {
            return Err(PgError::new(format!(
                "start_again: the PostgreSQL server on port {} is running",
                self.port
            )));
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            // The children of a killed postmaster may still hold its shared memory for
            // a moment: the new postmaster refuses to start until they have exited.
            match self.launch_locked(&mut state, deadline) {
                Ok(()) => return Ok(()),
                Err(Launch::Exited(log)) if Instant::now() < deadline && transient(&log) => {
                    pause(Duration::from_millis(200));
                }
                Err(err) => return Err(self.launch_error("start again", err)),
            }
        }
    }

    /// Kill the postmaster with SIGKILL (its PID is line 1 of `postmaster.pid`), like
    /// a crash, and wait until it is gone. [`start_again`](Self::start_again) then
    /// runs crash recovery: what was committed is still there.
    ///
    /// # Errors
    /// When the server is not running or the postmaster does not die.
    pub fn kill9(&self) -> Result<(), PgError> {
        let mut state = self.lock();
        if !matches!(*state, State::Running(_)) {
            return Err(PgError::new(format!(
                "kill9: the PostgreSQL server on port {} is not running",
                self.port
            )));
        }
        let pid_file = self.data.join("postmaster.pid");
        let pid = fs::read_to_string(&pid_file)
            .map_err(|err| io_error("read", &pid_file, &err))?
            .lines()
            .next()
            .and_then(|line| line.trim().parse::<u32>().ok())
            .ok_or_else(|| PgError::new(format!("no PID on line 1 of {}", pid_file.display())))?;
        run(Command::new("kill").args(["-KILL", &pid.to_string()]))?;
        let deadline = Instant::now() + DEADLINE;
        while is_alive(pid) {
            if Instant::now() > deadline {
                return Err(PgError::new(format!(
                    "the postmaster (PID {pid}) still runs after SIGKILL"
                )));
            }
            pause(Duration::from_millis(10));
        }
        // The guard reaps the dead postmaster and exits, keeping the directory.
        if let State::Running(mut guard) = std::mem::replace(&mut *state, State::Unguarded) {
            let _reaped = guard.finish(true);
        }
        *state = State::Stopped(Guard::spawn(&self.dir, &self.log, None)?);
        Ok(())
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    ///
    /// # Errors
    /// As theirs.
    pub fn restart(&self) -> Result<(), PgError> {
        self.stop()?;
        self.start_again()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write the CA's certificate, the server's certificate and key (mode 0600).
    fn write_tls_files(&mut self) -> Result<(), PgError> {
        let ca = TestCa::web("fedgw PostgreSQL");
        let (chain, key) = ca.localhost_server();
        let cert_pem: String = chain.iter().map(|der| pem("CERTIFICATE", der)).collect();
        let key_pem = match &key {
            PrivateKeyDer::Pkcs8(key) => pem("PRIVATE KEY", key.secret_pkcs8_der()),
            _ => return Err(PgError::new("the test CA issued a key that is not PKCS#8")),
        };
        let cert_file = self.dir.join("server.crt");
        let key_file = self.dir.join("server.key");
        fs::write(&self.ca_file, &ca.cert_pem)
            .map_err(|err| io_error("write", &self.ca_file, &err))?;
        fs::write(&cert_file, cert_pem).map_err(|err| io_error("write", &cert_file, &err))?;
        OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&key_file)
            .and_then(|mut file| file.write_all(key_pem.as_bytes()))
            .map_err(|err| io_error("write", &key_file, &err))?;
        self.ca_pem = ca.cert_pem;
        Ok(())
    }

    fn initdb(&self) -> Result<(), PgError> {
        let mut command = self.server_command("initdb");
        command
            .arg("-D")
            .arg(&self.data)
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                // initdb's own files are not flushed (the server's are: fsync = on).
                "--no-sync",
                "--no-instructions",
            ])
            .current_dir(&self.dir);
        run(client_env(&mut command)).map(drop)
    }

    /// `postgresql.conf`: initdb's, then this kit's settings.
    fn write_conf(&self, base: &str) -> Result<(), PgError> {
        let dir = quote(&self.dir);
        let cert = quote(&self.dir.join("server.crt"));
        let key = quote(&self.dir.join("server.key"));
        let port = self.port;
        let conf = format!(
            "{base}
# fedgw-testkit (testkit/src/postgres.rs)
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = {dir}
ssl = on
ssl_cert_file = {cert}
ssl_key_file = {key}
password_encryption = 'scram-sha-256'
max_connections = 200
fsync = on
log_min_messages = warning
log_destination = 'stderr'
logging_collector = off
"
        );
        let path = self.data.join("postgresql.conf");
        // The file exists (initdb's): rewriting it keeps its owner.
        fs::write(&path, conf).map_err(|err| io_error("write", &path, &err))
    }

    fn launch(&self, deadline: Instant) -> Result<(), Launch> {
        let mut state = self.lock();
        self.launch_locked(&mut state, deadline)
    }

    /// Start the postmaster under a new guard and wait until it accepts connections;
    /// then the new guard replaces the directory's guard.
    fn launch_locked(&self, state: &mut State, deadline: Instant) -> Result<(), Launch> {
        let log_start = fs::metadata(&self.log).map(|meta| meta.len()).unwrap_or(0);
        let mut server = vec![self.bin.join("postgres").into_os_string(), "-D".into()];
        server.push(self.data.clone().into_os_string());
        if self.as_system_user {
            let mut as_user = setpriv();
            as_user.append(&mut server);
            server = as_user;
        }
        let mut guard = Guard::spawn(&self.dir, &self.log, Some(&server)).map_err(Launch::Io)?;
        let Some(pid) = guard.postmaster else {
            return Err(Launch::Io(PgError::new("the guard started no postmaster")));
        };
        loop {
            if !is_alive(pid) {
                let _reaped = guard.finish(true);
                return Err(Launch::Exited(self.log_since(log_start)));
            }
            if self.is_ready(pid) {
                if let State::Stopped(mut old) = std::mem::replace(state, State::Running(guard)) {
                    let _dismissed = old.finish(true);
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _stopped = guard.finish(true);
                return Err(Launch::Timeout(self.log_since(log_start)));
            }
            pause(POLL);
        }
    }

    /// Whether postmaster `pid` accepts connections: its `postmaster.pid` (line 1 its
    /// PID, not a killed one's; line 8 its status, PostgreSQL 10 and later) says
    /// `ready`, as `pg_ctl -w` reads it, and `pg_isready` over the socket agrees. The
    /// file is read first: each refused connection would be a line in the log.
    fn is_ready(&self, pid: u32) -> bool {
        let status = fs::read_to_string(self.data.join("postmaster.pid")).unwrap_or_default();
        let mut lines = status.lines().map(str::trim);
        if lines.next() != Some(pid.to_string().as_str()) || lines.nth(6) != Some("ready") {
            return false;
        }
        let mut command = Command::new(self.bin.join("pg_isready"));
        command
            .arg("-q")
            .arg("-h")
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
            ])
            .args(["-t", "5"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        client_env(&mut command)
            .status()
            .is_ok_and(|status| status.success())
    }

    fn launch_error(&self, what: &str, err: Launch) -> PgError {
        let (how, log) = match err {
            Launch::Io(err) => return err,
            Launch::Exited(log) => ("exited", log),
            Launch::Timeout(log) => ("did not accept connections within 30 s", log),
        };
        PgError::new(format!(
            "{what}: the PostgreSQL server (port {}, {}) {how}; the end of its log ({}):\n{}",
            self.port,
            self.dir.display(),
            self.log.display(),
            tail(&log, 40)
        ))
    }

    /// What the log gained since `offset`.
    fn log_since(&self, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(file) = fs::File::open(&self.log) {
            let mut reader = BufReader::new(file);
            let _skipped = std::io::copy(&mut reader.by_ref().take(offset), &mut std::io::sink());
            let _read = reader.read_to_string(&mut text);
        }
        text
    }

    /// A program of the server (initdb), as the system user when the test is root.
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_system_user {
            let mut argv = setpriv();
            argv.push(program.into_os_string());
            let mut command = Command::new(&argv[0]);
            command.args(&argv[1..]);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let state = std::mem::replace(&mut *self.lock(), State::Unguarded);
        if let State::Running(mut guard) | State::Stopped(mut guard) = state {
            // The end of the guard's input: immediate shutdown, then it removes the
            // directory.
            guard.finish(false).ok();
        }
        if std::thread::panicking() {
            eprintln!(
                "\n----- the end of the PostgreSQL log ({}) -----\n{}\n----- end -----",
                self.log.display(),
                tail(&self.log_since(0), 40)
            );
        }
        // Also when the guard could not.
        let _removed = fs::remove_dir_all(&self.dir);
    }
}

/// How a start failed.
enum Launch {
    /// Before the postmaster ran.
    Io(PgError),
    /// The postmaster exited; its log since the start.
    Exited(String),
    /// It did not accept connections in time (it was stopped); its log since the start.
    Timeout(String),
}

/// A running guard (see [`GUARD_SCRIPT`]): the write end of its input, held by this
/// process. Dropped without [`finish`](Guard::finish), it stops its server and keeps
/// the directory.
struct Guard {
    child: Child,
    input: Option<ChildStdin>,
    postmaster: Option<u32>,
}

impl Guard {
    /// Start a guard of `dir`, running `server` (a command line) if given; its output
    /// goes to `log`.
    fn spawn(dir: &Path, log: &Path, server: Option<&[OsString]>) -> Result<Self, PgError> {
        let log_file = OpenOptions::new()
            .append(true)
            .open(log)
            .map_err(|err| io_error("open", log, &err))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("fedgw-testkit-postgres-guard")
            .arg(dir)
            .args(server.unwrap_or_default())
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .map_err(|err| PgError::new(format!("cannot start sh (the server's guard): {err}")))?;
        let input = child.stdin.take();
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _read = BufReader::new(stdout).read_line(&mut line);
        }
        let mut guard = Self {
            child,
            input,
            postmaster: None,
        };
        match line.trim() {
            "none" if server.is_none() => Ok(guard),
            pid => match pid.parse::<u32>() {
                Ok(pid) if server.is_some() => {
                    guard.postmaster = Some(pid);
                    Ok(guard)
                }
                _ => {
                    let _ended = guard.finish(true);
                    Err(PgError::new(format!(
                        "the server's guard (sh) said {line:?} instead of the postmaster's PID"
                    )))
                }
            },
        }
    }

    /// Ask the guard to stop its server (`keep`: fast shutdown, the directory kept;
    /// otherwise immediate shutdown, the directory removed) and wait until it has
    /// exited (after its server). Nothing the second time.
    fn finish(&mut self, keep: bool) -> Result<(), PgError> {
        let Some(mut input) = self.input.take() else {
            return Ok(());
        };
        if keep {
            // An error means the guard has exited already.
            let _written = input.write_all(b"stop\n");
        }
        drop(input);
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return Ok(()),
                Ok(None) if Instant::now() > deadline => break,
                Ok(None) => pause(Duration::from_millis(10)),
            }
        }
        if let Some(pid) = self.postmaster {
            let _killed = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
        Err(PgError::new(format!(
            "the PostgreSQL server (postmaster PID {:?}) did not shut down within 30 s; killed",
            self.postmaster
        )))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _stopped = self.finish(true);
    }
}

/// Wait a little between polls: this harness is synchronous by design (std::process).
#[expect(
    clippy::disallowed_methods,
    reason = "a synchronous harness polling a server process; no async runtime here"
)]
fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

/// The directory of the binaries: `override_dir` (`$PG_BIN_DIR`) if set, else the
/// highest version under `debian_root` with `bin/initdb`.
fn find_bin_dir(override_dir: Option<OsString>, debian_root: &Path) -> Result<PathBuf, PgError> {
    let has_all = |bin: &Path| {
        ["initdb", "postgres", "pg_isready", "psql"]
            .iter()
            .all(|program| bin.join(program).is_file())
    };
    if let Some(dir) = override_dir.filter(|dir| !dir.is_empty()) {
        let dir = PathBuf::from(dir);
        if has_all(&dir) {
            return Ok(dir);
        }
        return Err(PgError::new(format!(
            "{NOT_INSTALLED}; PG_BIN_DIR={} lacks initdb, postgres, pg_isready or psql",
            dir.display()
        )));
    }
    let mut versions: Vec<(Vec<u64>, PathBuf)> = fs::read_dir(debian_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse::<u64>().ok())
                .collect::<Option<Vec<_>>>()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    let Some((_, bin)) = versions.pop() else {
        return Err(PgError::new(NOT_INSTALLED));
    };
    if has_all(&bin) {
        Ok(bin)
    } else {
        Err(PgError::new(format!(
            "{} has initdb but not postgres, pg_isready or psql: install the Debian \
             packages postgresql and postgresql-client (apt-get install postgresql)",
            bin.display()
        )))
    }
}

/// Whether the test process runs as root (`id -u`).
fn is_root() -> Result<bool, PgError> {
    let output = run(Command::new("id").arg("-u"))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn check_system_user() -> Result<(), PgError> {
    run(Command::new("id").args(["-u", SYSTEM_USER])).map_err(|err| {
        PgError::new(format!(
            "running as root, the server must run as the system user {SYSTEM_USER}, which \
             does not exist ({err}): install the Debian package postgresql (apt-get install \
             postgresql), which creates it"
        ))
    })?;
    Ok(())
}

/// `setpriv`'s command line that runs what follows as [`SYSTEM_USER`].
fn setpriv() -> Vec<OsString> {
    [
        "setpriv",
        "--reuid",
        SYSTEM_USER,
        "--regid",
        SYSTEM_USER,
        "--init-groups",
        "--",
    ]
    .map(OsString::from)
    .to_vec()
}

/// Where the temporary directory goes: `$TMPDIR` if the socket path fits there and
/// (when root) the system user can reach it, else `/tmp`.
fn base_dir(as_system_user: bool) -> PathBuf {
    let tmp = std::env::temp_dir();
    // A unix socket path has at most 107 bytes: <tmp>/fedgw-pg-<pid>-<n>/.s.PGSQL.<port>.
    let fits = tmp.as_os_str().len() + 50 < 107;
    let reachable = || {
        !as_system_user
            || tmp == Path::new("/tmp")
            || Command::new(&setpriv()[0])
                .args(&setpriv()[1..])
                .arg("test")
                .arg("-d")
                .arg(&tmp)
                .args(["-a", "-x"])
                .arg(&tmp)
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
    };
    if fits && reachable() {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}

/// A new directory (mode 0700) under `base`.
fn make_dir(base: &Path) -> Result<PathBuf, PgError> {
    loop {
        let dir = base.join(format!(
            "fedgw-pg-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(io_error("create the directory", &dir, &err)),
        }
    }
}

/// A client's environment: English messages, UTF-8, no `PG*` settings of the caller's.
fn client_env(command: &mut Command) -> &mut Command {
    for name in [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGOPTIONS",
        "PGSSLMODE",
        "PGDATA",
        "PSQLRC",
    ] {
        command.env_remove(name);
    }
    command
        .env("LC_ALL", "C")
        .env("PGCLIENTENCODING", "UTF8")
        .env("PGCONNECT_TIMEOUT", "10")
}

/// Run `command` to completion (standard input empty); its output when it succeeds.
fn run(command: &mut Command) -> Result<Output, PgError> {
    let shown = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|err| PgError::new(format!("cannot run {shown}: {err}")))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(PgError::new(format!(
            "{shown} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr).trim_end()
        )))
    }
}

/// Run `command` with `input` on its standard input (written by another thread, so a
/// large output cannot block it).
fn run_with_input(command: &mut Command, input: &[u8]) -> std::io::Result<Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdin = child.stdin.take();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Some(mut stdin) = stdin {
                // An error means psql stopped reading: its status says why.
                let _written = stdin.write_all(input);
            }
        });
        child.wait_with_output()
    })
}

/// Whether process `pid` runs (exists and is not a zombie).
fn is_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // "pid (comm) S ...": the state follows the last parenthesis.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// The server could not listen on its port (someone took the free port meanwhile).
fn port_taken(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("could not create any TCP/IP sockets")
}

/// A start that failed because a killed postmaster's children are still exiting.
fn transient(log: &str) -> bool {
    log.contains("pre-existing shared memory block")
        || (log.contains("lock file") && log.contains("already exists"))
        || port_taken(log)
}

/// A path as a `postgresql.conf` string.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "''"))
}

fn io_error(what: &str, path: &Path, err: &std::io::Error) -> PgError {
    PgError::new(format!("cannot {what} {}: {err}", path.display()))
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    if all.is_empty() {
        return "(nothing)".to_owned();
    }
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `der` as PEM with `label`.
fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut base64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let bytes = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                base64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                base64.push(b'=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in base64.chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        reason = "tests fail loudly"
    )]

    use super::*;

    /// `psql` over TCP as [`USER`] with `password`, TLS verified against `root_cert`
    /// (`sslmode=verify-full`).
    fn tcp_psql(pg: &Postgres, database: &str, password: &str, root_cert: &Path) -> Output {
        let mut command = Command::new(pg.bin_dir().join("psql"));
        command
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-c",
                "select ssl, current_user from pg_stat_ssl where pid = pg_backend_pid()",
            ])
            .arg(format!(
                "host=127.0.0.1 port={} user={USER} dbname={database} sslmode=verify-full \
                 sslrootcert={}",
                pg.port(),
                root_cert.display()
            ));
        client_env(&mut command)
            .env("PGPASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn postmaster_pid(pg: &Postgres) -> u32 {
        let text = fs::read_to_string(pg.data_dir().join("postmaster.pid")).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            pause(POLL);
        }
    }

    #[test]
    fn postgres_serves_separate_databases_over_the_socket() {
        let pg = Postgres::start().unwrap();
        let first = pg.create_database().unwrap();
        let second = pg.create_database().unwrap();
        assert_ne!(first, second);
        assert_eq!(
            pg.url(&first),
            format!("postgres://fedgw@127.0.0.1:{}/{first}", pg.port())
        );
        assert_eq!(pg.password(), "fedgw-test-password");
        pg.psql(
            &first,
            "create table t (k text primary key, v int); insert into t values ('a', 1), ('b', 2);",
        )
        .unwrap();
        assert_eq!(
            pg.psql(&first, "select k, v from t order by k").unwrap(),
            "a|1\nb|2"
        );
        // The second database is empty: no table t there.
        let err = pg.psql(&second, "select * from t").unwrap_err();
        assert!(
            err.message().contains("relation \"t\" does not exist"),
            "{err}"
        );
        // ON_ERROR_STOP: the script stops at the error, and the error says so.
        let err = pg
            .psql(&second, "select 1/0; create table after_error (x int);")
            .unwrap_err();
        assert!(err.message().contains("division by zero"), "{err}");
        assert_eq!(
            pg.psql(
                &second,
                "select count(*) from pg_tables where tablename = 'after_error'"
            )
            .unwrap(),
            "0"
        );
        // Owned by fedgw; the settings the kit promises.
        assert_eq!(
            pg.psql(
                "postgres",
                &format!(
                    "select pg_get_userbyid(datdba) from pg_database where datname = '{first}'"
                )
            )
            .unwrap(),
            "fedgw"
        );
        assert_eq!(
            pg.psql(
                "postgres",
                "select current_setting('fsync'), current_setting('max_connections'), \
                 current_setting('ssl'), current_setting('listen_addresses')"
            )
            .unwrap(),
            "on|200|on|127.0.0.1"
        );
        assert!(
            pg.socket_dir()
                .join(format!(".s.PGSQL.{}", pg.port()))
                .exists()
        );
        assert!(pg.ca_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(fs::read_to_string(pg.ca_file()).unwrap(), pg.ca_pem());
    }

    #[test]
    fn postgres_over_tcp_takes_the_password_and_verified_tls_only() {
        let pg = Postgres::start().unwrap();
        let db = pg.create_database().unwrap();
        let ok = tcp_psql(&pg, &db, PASSWORD, &pg.ca_file());
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "t|fedgw");

        let wrong = tcp_psql(&pg, &db, "not-the-password", &pg.ca_file());
        assert!(!wrong.status.success());
        let stderr = String::from_utf8_lossy(&wrong.stderr);
        assert!(
            stderr.contains("password authentication failed for user \"fedgw\""),
            "{stderr}"
        );

        // Another CA does not vouch for the server's certificate.
        let other_ca = pg.socket_dir().join("other-ca.crt");
        TestCa::web("another").write_cert(&other_ca);
        let untrusted = tcp_psql(&pg, &db, PASSWORD, &other_ca);
        assert!(!untrusted.status.success());
        let stderr = String::from_utf8_lossy(&untrusted.stderr);
        assert!(stderr.contains("certificate verify failed"), "{stderr}");
    }

    #[test]
    fn postgres_keeps_committed_rows_through_kill9_and_restart() {
        let pg = Postgres::start().unwrap();
        let port = pg.port();
        let db = pg.create_database().unwrap();
        pg.psql(
            &db,
            "create table t (v text); insert into t values ('committed');",
        )
        .unwrap();
        let pid = postmaster_pid(&pg);

        pg.kill9().unwrap();
        assert!(!is_alive(pid));
        assert!(
            pg.data_dir().join("postmaster.pid").exists(),
            "a killed postmaster leaves its pid file"
        );
        let err = pg.psql(&db, "select 1").unwrap_err();
        assert!(err.message().contains("connection to server"), "{err}");
        assert!(pg.kill9().is_err(), "kill9 of a stopped server");

        pg.start_again().unwrap();
        assert_eq!(pg.port(), port);
        assert_ne!(postmaster_pid(&pg), pid);
        assert_eq!(pg.psql(&db, "select v from t").unwrap(), "committed");
        assert!(pg.start_again().is_err(), "start_again of a running server");

        pg.psql(&db, "insert into t values ('before restart')")
            .unwrap();
        pg.stop().unwrap();
        assert!(!pg.data_dir().join("postmaster.pid").exists());
        pg.stop().unwrap();
        pg.restart().unwrap();
        assert_eq!(
            pg.psql(&db, "select v from t order by v").unwrap(),
            "before restart\ncommitted"
        );
        // Still TLS with the password over TCP on the same port.
        let ok = tcp_psql(&pg, &db, PASSWORD, &pg.ca_file());
        assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "t|fedgw");
    }

    #[test]
    fn postgres_shared_is_one_server_per_process() {
        let first = Postgres::shared().unwrap();
        let second = Postgres::shared().unwrap();
        assert!(std::ptr::eq(first, second));
        assert_eq!(first.port(), second.port());
        let a = first.create_database().unwrap();
        let b = second.create_database().unwrap();
        assert_ne!(a, b);
        assert_eq!(first.psql(&b, "select current_database()").unwrap(), b);
    }

    #[test]
    fn postgres_drop_stops_the_server_and_removes_its_directory() {
        let pg = Postgres::start().unwrap();
        let pid = postmaster_pid(&pg);
        let dir = pg.socket_dir().to_owned();
        drop(pg);
        assert!(!is_alive(pid));
        assert!(!dir.exists());
    }

    const CHILD_REPORT: &str = "FEDGW_TESTKIT_POSTGRES_CHILD_REPORT";

    #[test]
    #[ignore = "the child process of postgres_does_not_outlive_a_killed_test_process"]
    fn postgres_child_process_starts_a_server_and_waits() {
        // Run other than by its parent (`cargo test -- --include-ignored`), it has
        // nothing to do.
        let Some(report) = std::env::var_os(CHILD_REPORT) else {
            return;
        };
        let pg = Postgres::shared().unwrap();
        let pid = postmaster_pid(pg);
        let tmp = PathBuf::from(&report).with_extension("tmp");
        fs::write(&tmp, format!("{pid}\n{}\n", pg.socket_dir().display())).unwrap();
        fs::rename(&tmp, &report).unwrap();
        pause(Duration::from_secs(120));
    }

    #[test]
    fn postgres_does_not_outlive_a_killed_test_process() {
        let scratch = tempfile::tempdir().unwrap();
        let report = scratch.path().join("report");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "postgres::tests::postgres_child_process_starts_a_server_and_waits",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_REPORT, &report)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the child's report", || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the child test process exited ({status}) before its report");
            }
            report.exists()
        });
        let text = fs::read_to_string(&report).unwrap();
        let (pid, dir) = text.trim().split_once('\n').unwrap();
        let (pid, dir): (u32, PathBuf) = (pid.parse().unwrap(), dir.into());
        assert!(is_alive(pid));
        assert!(dir.exists());
        // SIGKILL: no destructor runs in the child.
        child.kill().unwrap();
        child.wait().unwrap();
        wait_until("the server of the killed process to exit", || {
            !is_alive(pid)
        });
        wait_until("its directory to be removed", || !dir.exists());
    }

    #[test]
    fn postgres_missing_binaries_say_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_bin_dir(None, empty.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and \
             $PG_BIN_DIR): install the Debian package postgresql (apt-get install postgresql)"
        );
        let err = find_bin_dir(Some(empty.path().into()), Path::new(DEBIAN_ROOT)).unwrap_err();
        assert!(
            err.message()
                .contains("install the Debian package postgresql"),
            "{err}"
        );
    }

    #[test]
    fn postgres_picks_the_highest_version() {
        let root = tempfile::tempdir().unwrap();
        for version in ["9.6", "13", "15", "not-a-version"] {
            let bin = root.path().join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            for program in ["initdb", "postgres", "pg_isready", "psql"] {
                fs::write(bin.join(program), "").unwrap();
            }
        }
        assert_eq!(
            find_bin_dir(None, root.path()).unwrap(),
            root.path().join("15").join("bin")
        );
    }

    #[test]
    fn postgres_pem_is_base64_in_lines() {
        assert_eq!(
            pem("X", b"ab"),
            "-----BEGIN X-----\nYWI=\n-----END X-----\n"
        );
        assert_eq!(
            pem("X", b"abc"),
            "-----BEGIN X-----\nYWJj\n-----END X-----\n"
        );
        assert_eq!(pem("X", b"a"), "-----BEGIN X-----\nYQ==\n-----END X-----\n");
        let long = pem("X", &[0; 60]);
        assert_eq!(long.lines().nth(1).unwrap().len(), 64);
    }
}
