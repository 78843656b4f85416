//! `flink-rs sql`, the interactive SQL client, driven as a user drives it: through a real
//! pseudo-terminal (the line editor, its history and Ctrl-C), and with `-f script.sql`.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn flink_rs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flink-rs"))
}

/// The client on a pseudo-terminal: what it printed so far, and its keyboard.
struct Terminal {
    child: Child,
    keyboard: std::fs::File,
    screen: Arc<Mutex<String>>,
    /// How much of `screen` earlier expectations consumed.
    seen: usize,
}

impl Terminal {
    #[allow(unsafe_code)] // openpty, and making it the child's controlling terminal; see the SAFETY notes
    fn start(home: &std::path::Path, args: &[&str]) -> Terminal {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize {
            ws_row: 40,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two new descriptors into the out-parameters; the name
        // and termios pointers may be null.
        let r = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened by openpty and are owned here only.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup"));
        let mut cmd = flink_rs();
        cmd.arg("sql")
            .args(args)
            .env("HOME", home)
            .env("TERM", "xterm")
            .env_remove("RUST_BACKTRACE")
            .stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // The terminal becomes the child's controlling terminal, as a shell's would, so
        // that Ctrl-C typed on it reaches the client as SIGINT.
        let slave_fd = slave.as_raw_fd();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("flink-rs sql");
        drop(slave);
        let keyboard = std::fs::File::from(master.try_clone().expect("dup"));
        let mut reader = std::fs::File::from(master);
        let screen = Arc::new(Mutex::new(String::new()));
        let shown = screen.clone();
        let mut answers = keyboard.try_clone().expect("dup");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                // A cursor-position query gets an answer, as from a terminal emulator.
                if text.contains("\x1b[6n") {
                    let _ = answers.write_all(b"\x1b[1;1R");
                }
                if let Ok(mut s) = shown.lock() {
                    s.push_str(&text);
                }
            }
        });
        Terminal {
            child,
            keyboard,
            screen,
            seen: 0,
        }
    }

    fn screen(&self) -> String {
        self.screen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until `text` appears after what earlier expectations saw; returns what came
    /// before it.
    fn expect(&mut self, text: &str) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if let Some(i) = screen[self.seen..].find(text) {
                let before = screen[self.seen..self.seen + i].to_string();
                self.seen += i + text.len();
                return before;
            }
            assert!(
                Instant::now() < until,
                "`{text}` did not appear; the terminal shows:\n{}",
                &screen[self.seen..]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `keys` once the next prompt is shown (keys typed before the line editor
    /// takes the terminal would be dropped, as on a real terminal).
    fn at_prompt(&mut self, keys: &str) {
        self.expect("Flink SQL> ");
        self.type_keys(keys);
    }

    fn type_keys(&mut self, keys: &str) {
        self.keyboard.write_all(keys.as_bytes()).expect("type");
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < until,
                "the client did not exit:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BIDS: &str = "CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3), \
    WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'datagen', \
    'number-of-rows' = '40', 'fields.auction.kind' = 'sequence', 'fields.auction.start' = '1', \
    'fields.auction.end' = '40', 'fields.price.kind' = 'sequence', 'fields.price.start' = '101', \
    'fields.price.end' = '140', 'fields.ts.kind' = 'sequence', 'fields.ts.start' = '0', \
    'fields.ts.end' = '39000')";

#[test]
fn an_interactive_session_on_a_terminal() {
    let home = tempfile::tempdir().expect("home");
    let out = home.path().join("out");
    let mut t = Terminal::start(home.path(), &["--parallelism", "1"]);
    t.at_prompt(&format!("{BIDS};\r"));
    t.expect("[INFO] Execute statement succeeded.");
    // A statement over two lines: the second line gets the continuation prompt.
    t.at_prompt("SHOW\r");
    t.expect("\x1b[K> ");
    t.type_keys("TABLES;\r");
    let shown = t.expect("1 row in set");
    assert!(
        shown.contains("table name") && shown.contains("bids"),
        "{shown}"
    );
    // Up arrow: the history has the last statement (as one entry), Enter runs it again.
    t.at_prompt("\x1b[A\r");
    let again = t.expect("1 row in set");
    assert!(again.contains("SHOW") && again.contains("bids"), "{again}");
    t.at_prompt("DESCRIBE bids;\r");
    let described = t.expect("rows in set");
    assert!(
        described.contains("TIMESTAMP(3) *ROWTIME*")
            && described.contains("`ts` - INTERVAL '1' SECOND"),
        "{described}"
    );
    // A query: its rows as a table, as they come.
    t.at_prompt("SELECT auction, price * 2 AS doubled FROM bids WHERE auction <= 3;\r");
    let rows = t.expect("Received a total of 3 rows");
    assert!(
        rows.contains("| op |") && rows.contains("doubled"),
        "{rows}"
    );
    assert!(
        rows.contains("| +I |                    1 |                  202 |"),
        "{rows}"
    );
    assert!(
        rows.contains("| +I |                    3 |                  206 |"),
        "{rows}"
    );
    // An error names what is wrong and the session goes on.
    t.at_prompt("SELECT nope FROM bids;\r");
    t.expect("[ERROR] Could not execute SQL statement");
    let reason = t.expect("Flink SQL> ");
    assert!(reason.contains("nope"), "{reason}");
    // An INSERT runs as a job; with table.dml-sync the client waits for it.
    t.type_keys("SET 'table.dml-sync' = 'true';\r");
    t.expect("[INFO] Session property has been set.");
    t.at_prompt(&format!(
        "CREATE TABLE out (auction BIGINT, price BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');\r",
        out.display()
    ));
    t.expect("[INFO] Execute statement succeeded.");
    t.at_prompt("INSERT INTO out SELECT auction, price FROM bids;\r");
    t.expect("[INFO] Complete execution of the SQL update statement.");
    assert_eq!(common::committed(&out).len(), 40);
    // Ctrl-C while typing drops the line; QUIT leaves.
    t.at_prompt("SELECT half a statement");
    std::thread::sleep(Duration::from_millis(300));
    t.type_keys("\x03");
    std::thread::sleep(Duration::from_millis(300));
    t.type_keys("QUIT;\r");
    let before = t.expect("Shutting down the session...");
    assert!(!before.contains("[ERROR]"), "{before}");
    assert!(t.wait_exit().success());
    let history =
        std::fs::read_to_string(home.path().join(".flink-sql-history")).unwrap_or_default();
    assert!(
        history.contains("DESCRIBE bids;"),
        "history kept: {history}"
    );
}

#[test]
fn ctrl_c_cancels_a_running_query_and_the_session_goes_on() {
    let home = tempfile::tempdir().expect("home");
    let mut t = Terminal::start(home.path(), &[]);
    t.at_prompt(
        "CREATE TABLE endless (n BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '5');\r",
    );
    t.expect("[INFO] Execute statement succeeded.");
    t.at_prompt("SELECT n FROM endless;\r");
    t.expect("| +I |");
    t.type_keys("\x03");
    t.expect("Query cancelled.");
    t.at_prompt("SHOW TABLES;\r");
    t.expect("1 row in set");
    t.at_prompt("QUIT;\r");
    assert!(t.wait_exit().success());
}

/// `SHOW JOBS` lists the session's INSERT jobs; `STOP JOB '<id>' WITH SAVEPOINT` stops one
/// with a savepoint into `state.savepoints.dir` and shows its path.
#[test]
fn show_jobs_and_stop_job_with_savepoint() {
    let home = tempfile::tempdir().expect("home");
    let savepoints = home.path().join("savepoints");
    let mut t = Terminal::start(home.path(), &[]);
    t.at_prompt(&format!(
        "SET 'state.savepoints.dir' = '{}';\r",
        savepoints.display()
    ));
    t.expect("[INFO] Session property has been set.");
    t.at_prompt(
        "CREATE TABLE endless (n BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '20');\r",
    );
    t.expect("[INFO] Execute statement succeeded.");
    t.at_prompt("CREATE TABLE sink (n BIGINT) WITH ('connector' = 'blackhole');\r");
    t.expect("[INFO] Execute statement succeeded.");
    t.at_prompt("INSERT INTO sink SELECT n FROM endless;\r");
    t.expect("Job ID: ");
    let id = t.expect("\r").trim().to_string();
    assert_eq!(id.len(), 32, "a job id: {id}");
    t.at_prompt("SHOW JOBS;\r");
    let jobs = t.expect("1 row in set");
    assert!(jobs.contains(&id) && jobs.contains("RUNNING"), "{jobs}");
    t.at_prompt(&format!("STOP JOB '{id}' WITH SAVEPOINT;\r"));
    let stopped = t.expect("1 row in set");
    assert!(
        stopped.contains("savepoint path") && stopped.contains(&savepoints.display().to_string()),
        "{stopped}"
    );
    t.at_prompt("SHOW JOBS;\r");
    let jobs = t.expect("1 row in set");
    assert!(jobs.contains("FINISHED"), "{jobs}");
    t.at_prompt("STOP JOB 'nope';\r");
    t.expect("this session has no job nope");
    t.at_prompt("QUIT;\r");
    assert!(t.wait_exit().success());
}

#[test]
fn a_script_runs_statement_by_statement_and_stops_at_the_first_error() {
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("s.sql");
    std::fs::write(
        &script,
        format!(
            "{BIDS};\nSET 'sql-client.execution.result-mode' = 'changelog';\n\
             SELECT auction FROM bids WHERE auction = 7;\nSELECT x FROM nowhere;\nSHOW TABLES;\n"
        ),
    )
    .expect("script");
    let run = flink_rs()
        .arg("sql")
        .arg("-f")
        .arg(&script)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("flink-rs sql -f");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("+I[7]\nReceived a total of 1 row"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[ERROR] Could not execute SQL statement") && stdout.contains("nowhere"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("table name"),
        "stopped at the error: {stdout}"
    );
    assert!(stderr.contains("statement 4 (line 4) failed"), "{stderr}");
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
}
