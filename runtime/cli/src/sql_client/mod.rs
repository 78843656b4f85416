//! `flink-rs sql`: the interactive SQL client (Flink's `sql-client.sh`).
//!
//! Statements end with `;` and run as they are typed, in one [`Session`]: `SET`, DDL,
//! `SHOW TABLES`, `DESCRIBE`, `EXPLAIN`; a `SELECT` runs in the embedded mini-cluster and
//! shows its rows as they come ([`result_view`]; Ctrl-C cancels it); an `INSERT` is
//! submitted (to the embedded mini-cluster, or with `--jobmanager` to a cluster) and runs
//! in the background unless `table.dml-sync` is true. On a terminal the line editor keeps
//! history in `~/.flink-sql-history`; `-f script.sql` (or a script on standard input) runs
//! the statements one after another and stops at the first error, exiting non-zero.

pub mod result_view;

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use flink_rs::cluster::client::RestClient;
use flink_rs::executor::{JobHandle, JobOutcome};
use flink_rs::graph::ExecutionConfig;
use flink_rs::sql::session::{Outcome, Session};
use flink_rs::sql::{Statement, split};

use result_view::{Mode, ResultView, print_table};

const PROMPT: &str = "Flink SQL> ";
const MORE: &str = "> ";

/// What `flink-rs sql` is given.
pub struct Options {
    /// `-f`: a script to run instead of reading statements interactively.
    pub file: Option<String>,
    /// `--set` and `--parallelism`, made before the first statement.
    pub settings: Vec<(String, String)>,
    /// `--jobmanager`: where INSERTs go (SELECTs always run in the embedded mini-cluster).
    pub jobmanager: Option<RestClient>,
}

/// The cancel function of the running query, for Ctrl-C.
type Cancel = Arc<Mutex<Option<Box<dyn Fn() + Send>>>>;

struct Client {
    session: Session,
    jobmanager: Option<RestClient>,
    /// INSERT jobs of this session in the embedded mini-cluster, with their statement.
    background: Vec<(JobHandle, String)>,
    cancel: Cancel,
}

/// Runs the client until `QUIT;`, the end of input or (with a script) the first error.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let cancel: Cancel = Arc::default();
    let mut client = Client {
        session: Session::new(ExecutionConfig::default(), opts.settings),
        jobmanager: opts.jobmanager,
        background: Vec::new(),
        cancel,
    };
    // Lives until the end: dropping it restores SIGINT's default action.
    let mut editor = None;
    let result = match opts.file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            watch_ctrl_c(client.cancel.clone())?;
            client.script(&text)
        }
        None if std::io::stdin().is_terminal() => {
            let editor =
                editor.insert(rustyline::DefaultEditor::new().context("starting the line editor")?);
            // After the editor: it sets its own SIGINT handler for its lifetime (replacing any
            // before it), and this one chains to it. At the prompt the terminal is raw and
            // Ctrl-C is a key; while a statement runs, or background jobs are awaited at the
            // end, it reaches this handler.
            watch_ctrl_c(client.cancel.clone())?;
            client.interactive(editor)
        }
        None => {
            let text =
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?;
            watch_ctrl_c(client.cancel.clone())?;
            client.script(&text)
        }
    };
    client.wait_for_background();
    result
}

/// Ctrl-C cancels the running query (or does nothing between statements: the line editor
/// reads it as a key). Call it after the line editor is made.
fn watch_ctrl_c(cancel: Cancel) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("signal handler")?;
    // Registered here, on the caller's thread, and kept for the whole session (a `ctrl_c()`
    // future made per signal in the thread would miss one that came before it).
    let mut interrupts = {
        let _runtime = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("installing the Ctrl-C handler")?
    };
    std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            rt.block_on(async {
                while interrupts.recv().await.is_some() {
                    if let Ok(c) = cancel.lock() {
                        if let Some(f) = c.as_ref() {
                            f();
                        }
                    }
                }
            })
        })
        .context("starting the Ctrl-C handler")?;
    Ok(())
}

impl Client {
    /// Runs a script's statements, echoing each as the prompt would; the first error ends it.
    fn script(&mut self, text: &str) -> anyhow::Result<()> {
        for st in split(text) {
            println!("{PROMPT}{};", st.text.trim());
            match self.statement(&st) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    print_error(&e);
                    anyhow::bail!("statement {} (line {}) failed", st.number, st.line);
                }
            }
            println!();
        }
        Ok(())
    }

    /// Reads statements from the terminal with a line editor and history.
    fn interactive(&mut self, editor: &mut rustyline::DefaultEditor) -> anyhow::Result<()> {
        use rustyline::error::ReadlineError;
        let history = std::env::var_os("HOME")
            .map(|h| std::path::PathBuf::from(h).join(".flink-sql-history"));
        if let Some(h) = &history {
            // No history yet is the usual first start.
            let _ = editor.load_history(h);
        }
        println!(
            "flink-rs SQL client. Statements end with ';'. QUIT; leaves, HELP; lists what runs.\n"
        );
        let mut buffer = String::new();
        let mut number = 0;
        loop {
            let prompt = if buffer.is_empty() { PROMPT } else { MORE };
            match editor.readline(prompt) {
                Ok(line) => {
                    if !buffer.is_empty() {
                        buffer.push('\n');
                    }
                    buffer.push_str(&line);
                    if !complete(&buffer) {
                        continue;
                    }
                    let text = std::mem::take(&mut buffer);
                    let _ = editor.add_history_entry(text.as_str());
                    if let Some(h) = &history {
                        let _ = editor.save_history(h);
                    }
                    for mut st in split(&text) {
                        number += 1;
                        st.number = number;
                        match self.statement(&st) {
                            Ok(true) => {}
                            Ok(false) => return Ok(()),
                            Err(e) => print_error(&e),
                        }
                        println!();
                    }
                }
                // Ctrl-C drops the statement being typed, as a shell does.
                Err(ReadlineError::Interrupted) => buffer.clear(),
                Err(ReadlineError::Eof) => return Ok(()),
                Err(e) => return Err(e).context("reading the terminal"),
            }
        }
    }

    /// Runs one statement; `false` when it was QUIT.
    fn statement(&mut self, st: &Statement) -> anyhow::Result<bool> {
        let upper = st.text.trim().to_ascii_uppercase();
        if upper == "HELP" {
            print!("{HELP}");
            return Ok(true);
        }
        if upper == "CLEAR" {
            print!("\x1b[2J\x1b[H");
            return Ok(true);
        }
        if upper == "SHOW JOBS" {
            return self.show_jobs().map(|()| true);
        }
        if upper.starts_with("STOP JOB") {
            return self.stop_job(st).map(|()| true);
        }
        let mode = match self
            .session
            .setting("sql-client.execution.result-mode")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("changelog") => Mode::Changelog,
            _ => Mode::Tableau,
        };
        let batch = self
            .session
            .setting("execution.runtime-mode")
            .is_some_and(|m| m.eq_ignore_ascii_case("batch"));
        let max_width = self
            .session
            .setting("sql-client.display.max-column-width")
            .and_then(|w| w.parse().ok())
            .unwrap_or(30);
        let view = ResultView::new(mode, !batch, max_width);
        let sink = view.clone();
        let outcome = self
            .session
            .execute(st, move || Arc::new(sink))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut out = std::io::stdout().lock();
        match outcome {
            Outcome::Done(message) => writeln!(out, "[INFO] {message}")?,
            Outcome::Settings(settings) => {
                let rows: Vec<Vec<String>> =
                    settings.into_iter().map(|(k, v)| vec![k, v]).collect();
                print_table(&mut out, &["key".into(), "value".into()], &rows)?
            }
            Outcome::Table { header, rows } => print_table(&mut out, &header, &rows)?,
            Outcome::Explain(plan) => write!(out, "{plan}")?,
            Outcome::Quit => {
                writeln!(out, "Shutting down the session...")?;
                return Ok(false);
            }
            Outcome::Query(job) => {
                drop(out);
                let handle = job.env.execute_async().context("starting the query")?;
                let cancel = handle.cancel_handle();
                if let Ok(mut c) = self.cancel.lock() {
                    *c = Some(Box::new(cancel));
                }
                let outcome = handle.wait();
                if let Ok(mut c) = self.cancel.lock() {
                    *c = None;
                }
                let mut out = std::io::stdout().lock();
                view.finish(&mut out)?;
                match outcome.context("the query failed")? {
                    JobOutcome::Cancelled => writeln!(out, "Query cancelled.")?,
                    JobOutcome::Finished | JobOutcome::Stopped { .. } => {}
                }
            }
            Outcome::Insert {
                job,
                script,
                settings,
            } => {
                writeln!(
                    out,
                    "[INFO] Submitting SQL update statement to the cluster..."
                )?;
                drop(out);
                let sync = self
                    .session
                    .setting("table.dml-sync")
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
                let id = match &self.jobmanager {
                    Some(c) => c.submit(&script, &settings).context("submitting the job")?,
                    None => {
                        let handle = job.env.execute_async().context("starting the job")?;
                        let id = handle.job_id().to_string();
                        if sync {
                            handle.wait().context("the job failed")?;
                        } else {
                            let name = st.text.split_whitespace().collect::<Vec<_>>().join(" ");
                            self.background.push((handle, name));
                        }
                        id
                    }
                };
                let mut out = std::io::stdout().lock();
                if sync && self.jobmanager.is_none() {
                    writeln!(
                        out,
                        "[INFO] Complete execution of the SQL update statement."
                    )?;
                } else {
                    writeln!(
                        out,
                        "[INFO] SQL update statement has been successfully submitted to the cluster:"
                    )?;
                    writeln!(out, "Job ID: {id}")?;
                }
            }
        }
        Ok(true)
    }

    /// `SHOW JOBS`: the cluster's jobs (with `--jobmanager`), else this session's.
    fn show_jobs(&self) -> anyhow::Result<()> {
        let header = ["job id", "job name", "status"].map(String::from);
        let rows: Vec<Vec<String>> = match &self.jobmanager {
            Some(c) => c
                .jobs()
                .context("listing the cluster's jobs")?
                .jobs
                .into_iter()
                .map(|j| vec![j.jid, j.name, j.state])
                .collect(),
            None => self
                .background
                .iter()
                .map(|(h, name)| {
                    vec![
                        h.job_id().to_string(),
                        name.chars().take(60).collect(),
                        h.status().0.as_str().to_string(),
                    ]
                })
                .collect(),
        };
        print_table(&mut std::io::stdout().lock(), &header, &rows)?;
        Ok(())
    }

    /// `STOP JOB '<id>' [WITH SAVEPOINT]`: as Flink's client, a stop with a savepoint
    /// (into `state.savepoints.dir`), else a cancel.
    fn stop_job(&mut self, st: &Statement) -> anyhow::Result<()> {
        let text = st.text.trim();
        let id = text
            .split('\'')
            .nth(1)
            .filter(|id| !id.is_empty())
            .with_context(|| {
                format!("expected STOP JOB '<job id>' [WITH SAVEPOINT], not `{text}`")
            })?
            .to_string();
        let rest = text
            .rsplit('\'')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let words: Vec<&str> = rest.split_whitespace().collect();
        let with_savepoint = match words.as_slice() {
            [] => false,
            ["WITH", "SAVEPOINT"] => true,
            _ if rest.contains("DRAIN") => anyhow::bail!(
                "STOP JOB … WITH DRAIN is not supported: it would fire every window as if the input had ended"
            ),
            _ => anyhow::bail!("expected STOP JOB '<job id>' [WITH SAVEPOINT], not `{text}`"),
        };
        let savepoint = match &self.jobmanager {
            Some(c) if with_savepoint => Some(
                c.savepoint(&id, None, true, std::time::Duration::from_secs(600))
                    .with_context(|| format!("stopping job {id} with a savepoint"))?,
            ),
            Some(c) => {
                c.cancel(&id)
                    .with_context(|| format!("cancelling job {id}"))?;
                None
            }
            None => {
                let (handle, _) = self
                    .background
                    .iter()
                    .find(|(h, _)| h.job_id() == id)
                    .with_context(|| {
                        format!("this session has no job {id} (SHOW JOBS lists them)")
                    })?;
                if with_savepoint {
                    Some(
                        handle
                            .stop_with_savepoint(None)
                            .with_context(|| format!("stopping job {id} with a savepoint"))?,
                    )
                } else {
                    handle.cancel();
                    None
                }
            }
        };
        match savepoint {
            Some(path) => print_table(
                &mut std::io::stdout().lock(),
                &["savepoint path".into()],
                &[vec![path]],
            )?,
            None => println!("[INFO] Execute statement succeeded."),
        }
        Ok(())
    }

    /// Background jobs run in this process: leaving waits for them (Ctrl-C cancels them).
    fn wait_for_background(&mut self) {
        let running: Vec<JobHandle> = std::mem::take(&mut self.background)
            .into_iter()
            .map(|(h, _)| h)
            .filter(|h| !h.is_finished())
            .collect();
        if !running.is_empty() {
            eprintln!(
                "waiting for {} running job{} of this session (Ctrl-C cancels them)",
                running.len(),
                if running.len() == 1 { "" } else { "s" }
            );
            if let Ok(mut c) = self.cancel.lock() {
                let cancels: Vec<_> = running.iter().map(|h| h.cancel_handle()).collect();
                *c = Some(Box::new(move || cancels.iter().for_each(|f| f())));
            }
        }
        for h in running {
            let id = h.job_id().to_string();
            if let Err(e) = h.wait() {
                eprintln!("job {id} failed: {e}");
            }
        }
    }
}

fn print_error(e: &anyhow::Error) {
    println!("[ERROR] Could not execute SQL statement. Reason:\n{e:#}");
}

/// Whether the text typed so far ends a statement: a `;` outside quotes and comments, or
/// a client command that needs none.
fn complete(text: &str) -> bool {
    let t = text.trim();
    if ["QUIT", "EXIT", "HELP", "CLEAR"]
        .iter()
        .any(|c| t.eq_ignore_ascii_case(c))
    {
        return true;
    }
    let mut quote = false;
    let mut last = ' ';
    let mut chars = t.chars().peekable();
    let mut in_line_comment = false;
    while let Some(c) = chars.next() {
        if in_line_comment {
            if c == '\n' {
                in_line_comment = false;
            }
            continue;
        }
        match c {
            '\'' => quote = !quote,
            '-' if !quote && chars.peek() == Some(&'-') => in_line_comment = true,
            _ => {}
        }
        if !c.is_whitespace() && !in_line_comment {
            last = c;
        }
    }
    !quote && !in_line_comment && last == ';'
}

const HELP: &str = "Statements (end each with ';'):
  SET 'key' = 'value';      a session setting (SET; lists them, RESET 'key'; drops one)
  CREATE TABLE / CREATE VIEW / DROP TABLE / DROP VIEW
  SHOW TABLES; SHOW VIEWS; DESCRIBE t;
  EXPLAIN <SELECT or INSERT>;
  SELECT …;                 runs here and shows rows as they come (Ctrl-C cancels)
  INSERT INTO … SELECT …;   submits a job (waits for it with SET 'table.dml-sync' = 'true')
  BEGIN STATEMENT SET; INSERT …; INSERT …; END;
  SHOW JOBS; STOP JOB '<id>' [WITH SAVEPOINT];
  QUIT;
Client settings: sql-client.execution.result-mode = tableau | changelog,
  sql-client.display.max-column-width, table.dml-sync.
";

#[cfg(test)]
mod tests {
    use super::complete;

    #[test]
    fn a_statement_is_complete_at_a_semicolon_outside_quotes_and_comments() {
        assert!(complete("SELECT 1;"));
        assert!(complete("SELECT 1\n  FROM t ;  "));
        assert!(!complete("SELECT ';"));
        assert!(!complete("SELECT 1 -- ;"));
        assert!(complete("SELECT 1 -- x\n;"));
        assert!(complete("quit"));
        assert!(!complete("CREATE TABLE t ("));
    }
}
