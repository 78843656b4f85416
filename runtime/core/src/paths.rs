//! `flink-rs.filesystem.allowed-paths`: the places a job may read and write files (its
//! filesystem sources and sinks, its checkpoint and savepoint directories), a cluster setting
//! that a submitted job cannot change. Off by default: everything the process can reach.
//!
//! A path is allowed when it lies inside one of the prefixes, compared segment by segment
//! (`/data/out` allows `/data/out/x`, not `/data/outside`). Local paths (plain or `file://`)
//! are made absolute and resolved, `..` and symbolic links included, as far as they exist, so
//! neither leads outside. Object-store URIs (`s3://bucket/prefix`) compare scheme, bucket and
//! segments, and a `..` segment is refused.

use std::path::{Component, Path, PathBuf};

/// The configuration key.
pub const KEY: &str = "flink-rs.filesystem.allowed-paths";

/// The prefixes a job's files must lie in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedPaths {
    prefixes: Vec<Location>,
    /// As configured, for messages.
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Local(PathBuf),
    /// Scheme and the segments after `scheme://` (bucket first).
    Remote(String, Vec<String>),
}

impl AllowedPaths {
    /// Parses a comma-separated list of prefixes; an empty list is an error (it would
    /// forbid every path, which no one means).
    pub fn parse(value: &str) -> Result<Self, String> {
        let prefixes = value
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| location(p).map_err(|e| format!("`{p}`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if prefixes.is_empty() {
            return Err("expected a comma-separated list of directories or URIs".into());
        }
        Ok(AllowedPaths {
            prefixes,
            text: value.trim().to_string(),
        })
    }

    /// Whether `path` lies inside one of the prefixes.
    pub fn permits(&self, path: &str) -> bool {
        let Ok(p) = location(path) else {
            return false;
        };
        self.prefixes.iter().any(|allowed| match (allowed, &p) {
            (Location::Local(a), Location::Local(p)) => p.starts_with(a),
            (Location::Remote(sa, a), Location::Remote(sp, p)) => {
                sa == sp && p.len() >= a.len() && p[..a.len()] == a[..]
            }
            _ => false,
        })
    }

    /// `Ok` when `path` is permitted; else the message naming it, what it is, and the
    /// prefixes.
    pub fn check(&self, what: &str, path: &str) -> Result<(), String> {
        if self.permits(path) {
            Ok(())
        } else {
            Err(format!(
                "{what} `{path}` is outside the paths this cluster allows ({KEY}: {})",
                self.text
            ))
        }
    }
}

fn location(p: &str) -> Result<Location, String> {
    let p = p.trim();
    if let Some(local) = p.strip_prefix("file://") {
        return Ok(Location::Local(resolve(Path::new(local))?));
    }
    if let Some((scheme, rest)) = p.split_once("://") {
        let segments: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .map(str::to_string)
            .collect();
        if segments.iter().any(|s| s == "..") {
            return Err("`..` is not allowed in a URI".into());
        }
        if segments.is_empty() {
            return Err("a URI names at least its bucket".into());
        }
        return Ok(Location::Remote(scheme.to_ascii_lowercase(), segments));
    }
    Ok(Location::Local(resolve(Path::new(p))?))
}

/// `p` absolute, `.` and `..` applied, and symbolic links resolved in the part that exists.
fn resolve(p: &Path) -> Result<PathBuf, String> {
    let absolute = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("no working directory to resolve it against: {e}"))?
            .join(p)
    };
    let mut lexical = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other.as_os_str()),
        }
    }
    // The longest existing ancestor, with its links resolved, then the rest as written.
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return Ok(out);
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return Ok(lexical),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_a_prefix_are_allowed_and_nothing_leads_outside() {
        let tmp = tempfile::tempdir().expect("tmp");
        let base = tmp.path().canonicalize().expect("canonical");
        let data = base.join("data");
        std::fs::create_dir_all(data.join("out")).expect("mkdir");
        let allowed = AllowedPaths::parse(&format!("{}, s3://bucket/results", data.display()))
            .expect("parse");
        let ok = |p: &str| allowed.permits(p);
        assert!(ok(&data.join("out/part-0").display().to_string()));
        assert!(
            ok(&format!("file://{}/new/dir", data.display())),
            "not existing yet"
        );
        assert!(ok(&data.display().to_string()));
        assert!(
            !ok(&format!("{}side", data.display())),
            "a sibling sharing the prefix"
        );
        assert!(!ok(&format!("{}/out/../../etc", data.display())));
        assert!(!ok("/etc/passwd"));
        // A link inside the prefix that points outside it.
        std::os::unix::fs::symlink("/etc", data.join("escape")).expect("symlink");
        assert!(!ok(&data.join("escape/passwd").display().to_string()));
        assert!(ok("s3://bucket/results/job-1/part-0"));
        assert!(ok("S3://bucket/results"), "schemes are case-insensitive");
        assert!(!ok("s3://bucket/resultsX"));
        assert!(!ok("s3://bucket/results/../private"));
        assert!(!ok("s3://other/results"));
        assert!(!ok("gs://bucket/results"));
        let e = allowed.check("sink path", "/etc/x").expect_err("outside");
        assert!(
            e.contains("/etc/x") && e.contains(KEY) && e.contains("s3://bucket/results"),
            "{e}"
        );
        assert!(AllowedPaths::parse(" , ").is_err());
        assert!(AllowedPaths::parse("s3://").is_err());
    }
}
