//! The container sets only settings the binary knows: every variable an `ENV`
//! of the Dockerfile sets must be one of `laminate_proxy::cli::ENV_VARS` (a
//! typo there would be silently ignored, and the container run on a default).

use std::path::Path;

use laminate_proxy::cli::ENV_VARS;

/// Dockerfile instructions with their continuation lines joined and comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') && cur.is_empty() {
            continue;
        }
        if t.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_owned());
                }
                cur.clear();
            }
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// The variable names an `ENV` sets: `ENV A=1 B="x y"` or the old `ENV A value`.
fn env_names(args: &str) -> Vec<String> {
    let args = args.trim();
    let first = args.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        return vec![first.to_owned()];
    }
    let mut names = Vec::new();
    let mut rest = args;
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        names.push(rest[..eq].trim().to_owned());
        rest = &rest[eq + 1..];
        // Skip the value: quoted or up to the next whitespace.
        rest = if let Some(q) = rest.strip_prefix('"') {
            match q.find('"') {
                Some(end) => &q[end + 1..],
                None => "",
            }
        } else {
            match rest.find(char::is_whitespace) {
                Some(end) => &rest[end..],
                None => "",
            }
        };
        rest = rest.trim_start();
    }
    names
}

fn dockerfile_env() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    let text = std::fs::read_to_string(&path).expect("the Dockerfile");
    instructions(&text)
        .iter()
        .filter_map(|i| {
            let (word, args) = i.split_once(char::is_whitespace)?;
            word.eq_ignore_ascii_case("ENV").then(|| env_names(args))
        })
        .flatten()
        .collect()
}

#[test]
fn the_parser_reads_both_env_forms_and_continuations() {
    let text = "FROM x\n# comment\nENV A=1 \\\n    B=\"two words\" \\\n    C=3\nENV OLD some value\nRUN echo ENV=nope\n";
    let names: Vec<String> = instructions(text)
        .iter()
        .filter_map(|i| {
            let (w, a) = i.split_once(' ')?;
            (w == "ENV").then(|| env_names(a))
        })
        .flatten()
        .collect();
    assert_eq!(names, ["A", "B", "C", "OLD"]);
}

#[test]
fn every_env_var_the_dockerfile_sets_is_one_the_binary_knows() {
    let names = dockerfile_env();
    assert!(!names.is_empty(), "the Dockerfile sets no variable");
    for n in &names {
        assert!(
            ENV_VARS.contains(&n.as_str()),
            "the Dockerfile sets {n}, which the binary does not read (known: {ENV_VARS:?})"
        );
    }
    // The container's defaults from APPLIANCE.md "Container".
    for needed in ["LAMINATE_PROXY_DATA_DIR", "LAMINATE_PROXY_HTTP_ADDR"] {
        assert!(names.iter().any(|n| n == needed), "{needed} not set");
    }
}
