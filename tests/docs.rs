//! The docs say only what is true of this repository and this binary: every
//! relative link and repository path named in `README.md` and `docs/*.md`
//! exists (and nothing points outside the repository), the operator guide's
//! settings table lists exactly the flags and variables of `run --help`, and
//! every local API path the docs name is answered by a running appliance.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use laminate_proxy::sim::study::StudySpec;
use laminate_proxy::sim::EntityKind;
use regex::Regex;
use support::*;

const T: Duration = Duration::from_secs(20);

/// Top-level entries of the repository: a path in the docs starting with one
/// of them is a repository path (others, like `storage/…`, are data dir paths).
const REPO_DIRS: [&str; 9] = [
    "src", "actors", "store", "config", "tests", "benches", "docs", "scripts", ".ci",
];
const REPO_FILES: [&str; 4] = ["Dockerfile", "Cargo.toml", "Cargo.lock", "README.md"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `README.md` and `docs/*.md`: (path, text).
fn docs() -> Vec<(PathBuf, String)> {
    let mut files = vec![root().join("README.md")];
    let mut in_docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    in_docs.sort();
    files.extend(in_docs);
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("doc readable");
            (p, text)
        })
        .collect()
}

fn name(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces → `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_fence = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The text split into (prose, fenced code) parts.
fn split_fences(text: &str) -> (String, String) {
    let (mut prose, mut code, mut in_fence) = (String::new(), String::new(), false);
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        let to = if in_fence { &mut code } else { &mut prose };
        to.push_str(line);
        to.push('\n');
    }
    (prose, code)
}

/// A word that names a file or folder of the repository, cleaned (`./` and a
/// trailing `:line` dropped); None for anything else.
fn repo_path(word: &str) -> Option<String> {
    let w = word
        .trim_matches(|c: char| "\"'(),;".contains(c))
        .trim_start_matches("./");
    if w.is_empty() || w.contains(['*', '{', '<', '…', '$']) || w.contains(char::is_whitespace) {
        return None;
    }
    let w = match w.rsplit_once(':') {
        Some((p, line)) if line.chars().all(|c| c.is_ascii_digit()) => p,
        _ => w,
    };
    let first = w.split('/').next()?;
    let named =
        (REPO_DIRS.contains(&first) && (w.contains('/') || w == first)) || REPO_FILES.contains(&w);
    named.then(|| w.trim_end_matches('/').to_owned())
}

#[test]
fn every_link_and_repository_path_in_the_docs_exists() {
    let link = Regex::new(r"\]\(([^)\s]+)\)").expect("regex");
    let span = Regex::new(r"`([^`\n]+)`").expect("regex");
    let mut problems = Vec::new();
    let mut checked = 0;
    for (path, text) in docs() {
        let doc = name(&path);
        for bad in ["../shared", "shared/spec", "/work/"] {
            if text.contains(bad) {
                problems.push(format!("{doc}: points outside the repository ({bad})"));
            }
        }
        let dir = path.parent().expect("doc dir");
        for cap in link.captures_iter(&text) {
            let target = &cap[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target, None),
            };
            let resolved = if file.is_empty() {
                path.clone()
            } else {
                dir.join(file)
            };
            if !resolved.exists() {
                problems.push(format!("{doc}: link {target}: no such file"));
                continue;
            }
            if let Some(a) = anchor {
                let text = std::fs::read_to_string(&resolved).unwrap_or_default();
                if !anchors(&text).contains(a) {
                    problems.push(format!("{doc}: link {target}: no heading #{a}"));
                }
            }
        }
        let (prose, code) = split_fences(&text);
        let spans = span.captures_iter(&prose).map(|c| c[1].to_owned());
        let words = code.split_whitespace().map(str::to_owned);
        for p in spans.chain(words).filter_map(|w| repo_path(&w)) {
            checked += 1;
            if !root().join(&p).exists() {
                problems.push(format!("{doc}: names {p}, which is not in the repository"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The scan found what it is for (a broken pattern would pass vacuously).
    assert!(checked > 50, "only {checked} links and paths found");
}

#[test]
fn the_paths_rule_tells_repository_paths_from_others() {
    assert_eq!(
        repo_path("`src/cli.rs:12`".trim_matches('`')),
        Some("src/cli.rs".into())
    );
    assert_eq!(repo_path("./scripts/test"), Some("scripts/test".into()));
    assert_eq!(repo_path("docs/"), Some("docs".into()));
    assert_eq!(repo_path("storage/"), None);
    assert_eq!(repo_path("spool/{id}/archive.zip"), None);
    assert_eq!(repo_path("benches/*.sh"), None);
    assert_eq!(slug(" 7. Configuration files"), "7-configuration-files");
}

/// (flag → env) of every option in a `--help` text, `--help` itself left out.
fn help_options(help: &str) -> BTreeMap<String, String> {
    let token = Regex::new(r"(?m)^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)|\[env: ([A-Z][A-Z0-9_]*)")
        .expect("regex");
    let mut out = BTreeMap::new();
    let mut flag: Option<String> = None;
    for cap in token.captures_iter(help) {
        if let Some(f) = cap.get(1) {
            flag = Some(f.as_str().to_owned());
        } else if let (Some(f), Some(e)) = (flag.take(), cap.get(2)) {
            out.insert(f, e.as_str().to_owned());
        }
    }
    out
}

/// (flag → env) of the settings table of `docs/operations.md`: the table whose
/// header starts with `| flag | env`.
fn table_options(guide: &str) -> Vec<(String, String)> {
    let code = Regex::new(r"`([^`]+)`").expect("regex");
    let rows = guide
        .lines()
        .skip_while(|l| !l.starts_with("| flag | env"))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    rows.map(|row| {
        let cells: Vec<&str> = row.trim_matches('|').split('|').collect();
        let first = |i: usize| {
            cells
                .get(i)
                .and_then(|c| code.captures(c))
                .map(|c| c[1].to_owned())
                .unwrap_or_default()
        };
        (first(0), first(1))
    })
    .collect()
}

#[test]
fn the_settings_table_names_exactly_the_flags_and_variables_of_run_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_laminate-proxy"))
        .args(["run", "--help"])
        .env_clear()
        .output()
        .expect("the binary runs");
    assert!(out.status.success());
    let help = help_options(&String::from_utf8_lossy(&out.stdout));
    assert!(
        help.len() >= 10
            && help.get("--backend-url").map(String::as_str) == Some("LAMINATE_BACKEND_URL"),
        "run --help not understood: {help:?}"
    );

    let guide = std::fs::read_to_string(root().join("docs/operations.md")).expect("guide");
    let rows = table_options(&guide);
    let table: BTreeMap<String, String> = rows.iter().cloned().collect();
    assert_eq!(
        table.len(),
        rows.len(),
        "a flag twice in the table: {rows:?}"
    );

    let mut problems = Vec::new();
    for (flag, env) in &table {
        match help.get(flag) {
            None => problems.push(format!("the table's {flag} is not a flag of `run`")),
            Some(e) if e != env => problems.push(format!(
                "the table pairs {flag} with {env}; the binary with {e}"
            )),
            Some(_) => {}
        }
    }
    for (flag, env) in &help {
        if !table.contains_key(flag) {
            problems.push(format!(
                "{flag} ({env}) of `run --help` is not in the table"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every local API path the docs name, as written (`{…}` placeholders kept).
fn api_paths(text: &str) -> BTreeSet<String> {
    let re = Regex::new(
        r"(proxy)?(/(?:api/[A-Za-z0-9_{}./-]*(?:\?[A-Za-z0-9_=&:.%-]*)?|healthz\b|readyz\b|metrics\b|ws\b))",
    )
    .expect("regex");
    re.captures_iter(text)
        // `{backend_url}/proxy/ws` and `{api_url}/api/proxy/…` are the backend's.
        .filter(|c| c.get(1).is_none())
        .map(|c| c[2].trim_end_matches(['.', ',', '/', ':']).to_owned())
        .filter(|p| p != "/api" && !p.starts_with("/api/proxy"))
        .collect()
}

/// The request for a path as the docs write it: placeholders filled with real
/// ids, a query kept only when it is concrete; POST for the actions.
fn request_for(doc_path: &str, dispatch: &str) -> (&'static str, String) {
    let (path, query) = match doc_path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (doc_path, None),
    };
    let placeholder = Regex::new(r"\{[^}]*\}").expect("regex");
    let id = if path.starts_with("/api/nodes/") {
        "node_1"
    } else {
        dispatch
    };
    let mut url = placeholder.replace_all(path, id).into_owned();
    if let Some(q) = query.filter(|q| !q.is_empty() && !q.ends_with('=')) {
        url = format!("{url}?{q}");
    }
    let action = ["/replay", "/cancel", "/echo", "/nodes/reload"]
        .iter()
        .any(|a| path.ends_with(a));
    (if action { "POST" } else { "GET" }, url)
}

#[test]
fn every_local_api_path_in_the_docs_is_answered_by_a_running_appliance() {
    let mut paths = BTreeSet::new();
    for (_, text) in docs() {
        paths.extend(api_paths(&text));
    }
    for core in ["/readyz", "/api/status", "/metrics", "/ws"] {
        assert!(
            paths.contains(core),
            "{core} not found in the docs: {paths:?}"
        );
    }
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/api/dispatches/") && p.ends_with("/replay")),
        "no replay action found in the docs: {paths:?}"
    );

    // A real dispatch, so that `/api/dispatches/{id}` has an id to answer for.
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, _) = StudySpec::simple(1, 2, 1024)
        .zip_bytes()
        .expect("study zip");
    sim.put_download(EntityKind::Scan, "scan_1", zip);
    let app = Appliance::with_one_node(&sim, scp.port, T);
    assert!(sim.send_event(&dispatch_event(
        "scan",
        "scan_1",
        "corr_docs",
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, "corr_docs", "node_1", T).expect("the dispatch ends");
    assert_eq!(last["status"], "completed");
    let dispatch = app.get_json("/api/dispatches/corr_docs")["id"]
        .as_str()
        .expect("dispatch id")
        .to_owned();

    // Reads first, then the actions (which change what the reads would see).
    let mut requests: Vec<(&str, String, &String)> = paths
        .iter()
        .map(|p| {
            let (method, url) = request_for(p, &dispatch);
            (method, url, p)
        })
        .collect();
    requests.sort_by_key(|(m, _, _)| *m == "POST");
    let mut problems = Vec::new();
    for (method, url, doc_path) in requests {
        let answer = http(method, &app.url(&url), None);
        let ok = match (method, url.as_str(), &answer) {
            // A plain GET is no WebSocket handshake: refused, but routed.
            (_, "/ws", Some((code, _))) => *code != 404 && *code != 405,
            ("GET", _, Some((code, _))) => *code == 200,
            // 409: the action does not fit the dispatch's state right now (a
            // replay still running), which is an answer of the route.
            (_, _, Some((code, _))) => *code == 200 || *code == 409,
            (_, _, None) => false,
        };
        if !ok {
            problems.push(format!("{method} {url} (docs: {doc_path}) → {answer:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nappliance log:\n{}",
        problems.join("\n"),
        app.logs()
    );
}
