//! The workspace's crate graph is the documented one (README, `docs/architecture.md`):
//! each crate depends only on the crates below it, the engine links no SQL, RPC, HTTP-server
//! or Kubernetes library, and one `cargo build --release` at the root serves `cargo run -p
//! flink-rs` and `bench/run` without compiling a dependency again.
//!
//! Read from `cargo metadata --no-deps` and `cargo tree` of the checked-in `Cargo.lock`
//! (offline).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let out = Command::new(cargo)
        .args(args)
        .args(["--locked", "--offline"])
        .current_dir(root)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo prints UTF-8")
}

/// For every workspace crate: its direct workspace dependencies and every package it links
/// (normal and build dependencies, transitively; dev-dependencies excluded), for this
/// machine's platform (what `cargo tree` resolves; `cargo metadata` with its resolve would
/// need the crates of every platform downloaded).
struct Graph {
    workspace: BTreeSet<String>,
    direct: BTreeMap<String, BTreeSet<String>>,
    closure: BTreeMap<String, BTreeSet<String>>,
}

fn graph() -> Graph {
    let meta: Value =
        serde_json::from_str(&cargo(&["metadata", "--no-deps", "--format-version", "1"]))
            .expect("metadata");
    let workspace: BTreeSet<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect();
    let mut direct = BTreeMap::new();
    let mut closure = BTreeMap::new();
    for c in &workspace {
        // `--prefix depth`: each line is the depth, then `name vX.Y.Z (…)`.
        let tree = cargo(&[
            "tree",
            "-p",
            c,
            "-e",
            "normal,build",
            "--prefix",
            "depth",
            "-f",
            "{p}",
        ]);
        let mut all = BTreeSet::new();
        let mut first = BTreeSet::new();
        for line in tree.lines() {
            let depth: String = line.chars().take_while(char::is_ascii_digit).collect();
            let name = line[depth.len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default();
            match depth.parse::<usize>() {
                Ok(0) | Err(_) => {}
                Ok(d) => {
                    all.insert(name.to_string());
                    if d == 1 && workspace.contains(name) {
                        first.insert(name.to_string());
                    }
                }
            }
        }
        direct.insert(c.clone(), first);
        closure.insert(c.clone(), all);
    }
    Graph {
        workspace,
        direct,
        closure,
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn each_crate_depends_only_on_the_crates_below_it() {
    let g = graph();
    let expected: BTreeMap<&str, BTreeSet<String>> = [
        ("flink-rs-rest-api", set(&[])),
        ("flink-rs-certificates", set(&[])),
        ("flink-rs-core", set(&["flink-rs-rest-api"])),
        ("flink-rs-connectors", set(&["flink-rs-core"])),
        (
            "flink-rs-sql",
            set(&["flink-rs-core", "flink-rs-connectors"]),
        ),
        ("flink-rs-metrics", set(&["flink-rs-core"])),
        (
            "flink-rs-cluster",
            set(&[
                "flink-rs-core",
                "flink-rs-connectors",
                "flink-rs-sql",
                "flink-rs-rest-api",
                "flink-rs-metrics",
                "flink-rs-certificates",
            ]),
        ),
        (
            "flink-rs",
            set(&[
                "flink-rs-core",
                "flink-rs-connectors",
                "flink-rs-sql",
                "flink-rs-cluster",
                "flink-rs-rest-api",
                "flink-rs-metrics",
            ]),
        ),
        (
            "flink-rs-operator",
            set(&["flink-rs-rest-api", "flink-rs-certificates"]),
        ),
        ("flink-rs-e2e", set(&[])),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        g.workspace,
        expected.keys().map(|s| s.to_string()).collect(),
        "the workspace's crates changed: update this test and the crate graph in README and docs/architecture.md"
    );
    for (c, want) in &expected {
        assert_eq!(
            &g.direct[*c], want,
            "{c} depends on other workspace crates than the documented ones"
        );
    }
}

#[test]
fn heavy_libraries_stay_in_the_crate_that_needs_them() {
    let g = graph();
    // (crate, packages it must not link, by name prefix). The engine does link an HTTP
    // client (hyper, through object_store's S3/GCS/Azure stores), but no server.
    let rules: [(&str, &[&str]); 8] = [
        (
            "flink-rs-certificates",
            &["tokio", "arrow", "hyper", "kube"],
        ),
        (
            "flink-rs-rest-api",
            &["tokio", "arrow", "reqwest", "hyper", "axum", "kube"],
        ),
        (
            "flink-rs-core",
            &[
                "datafusion",
                "sqlparser",
                "tonic",
                "prost",
                "axum",
                "kube",
                "k8s-openapi",
            ],
        ),
        (
            "flink-rs-connectors",
            &["datafusion", "sqlparser", "tonic", "prost", "axum", "kube"],
        ),
        (
            "flink-rs-sql",
            &["tonic", "prost", "axum", "kube", "k8s-openapi"],
        ),
        ("flink-rs-cluster", &["kube", "k8s-openapi"]),
        (
            "flink-rs-metrics",
            &["datafusion", "sqlparser", "tonic", "prost", "kube"],
        ),
        (
            "flink-rs-operator",
            &[
                "flink-rs-core",
                "arrow",
                "datafusion",
                "tonic",
                "object_store",
            ],
        ),
    ];
    for (c, forbidden) in rules {
        let bad: Vec<&String> = g.closure[c]
            .iter()
            .filter(|p| {
                forbidden
                    .iter()
                    .any(|f| p.as_str() == *f || p.starts_with(&format!("{f}-")))
            })
            .collect();
        assert!(
            bad.is_empty(),
            "{c} links {bad:?}, which belong to another crate"
        );
    }
    // The ones that must be where they are, so the rules above test something.
    for (c, p) in [
        ("flink-rs-sql", "datafusion"),
        ("flink-rs-cluster", "tonic"),
        ("flink-rs-cluster", "axum"),
        ("flink-rs-metrics", "prometheus-client"),
        ("flink-rs-operator", "kube"),
        ("flink-rs-core", "arrow"),
    ] {
        assert!(g.closure[c].contains(p), "{c} no longer links {p}");
    }
}

/// `cargo tree -e no-dev -f '{p} {f}'`: each package (name and version) with the features
/// the resolver turns on for the selection.
fn features(selection: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut args = vec!["tree", "-e", "no-dev", "-f", "{p} {f}", "--prefix", "none"];
    args.extend_from_slice(selection);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in cargo(&args).lines() {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(version)) = (parts.next(), parts.next()) else {
            continue;
        };
        let f = out.entry(format!("{name} {version}")).or_default();
        for p in parts.filter(|p| !p.starts_with('(')) {
            f.extend(p.split(',').filter(|x| !x.is_empty()).map(str::to_string));
        }
    }
    out
}

#[test]
fn a_root_build_serves_the_flink_rs_binary_without_recompiling() {
    let all = features(&["--workspace"]);
    let cli = features(&["-p", "flink-rs"]);
    let differ: Vec<String> = cli
        .iter()
        .filter_map(|(p, f)| {
            let w = all.get(p)?;
            (w != f).then(|| {
                format!(
                    "{p}: add features {:?} (turned on by other members) to the feature-unification block of runtime/cli/Cargo.toml",
                    w.difference(f).collect::<Vec<_>>()
                )
            })
        })
        .collect();
    assert!(
        differ.is_empty(),
        "`cargo build -p flink-rs` after a root build would compile these again (and all above them):\n{}",
        differ.join("\n")
    );
    assert!(cli.keys().any(|p| p.starts_with("datafusion ")));
}
