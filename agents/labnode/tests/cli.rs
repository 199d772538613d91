//! The binary's behaviour on bad input, run as users run it: a message that names the file,
//! line, column and key (or the argument), exit code 2, and nothing written. And every
//! configuration example in the documents passes `config check`.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn labnode(args: &[&str]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_labnode"))
        .args(args)
        .env("LABNODE_LOG", "warn")
        .env("CI", "true")
        .output()
        .expect("labnode runs");
    Run {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `labnode config check` on `text` exits 2 with `want` (with FILE for the file's path)
/// on stderr; `serve` refuses it the same way.
fn refused(text: &str, want: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, text).expect("write");
    let want = want.replace("FILE", path_str(&file));
    for args in [
        vec!["config", "check", path_str(&file)],
        vec![
            "serve",
            "--config",
            path_str(&file),
            "--listen",
            "127.0.0.1:1",
        ],
    ] {
        let r = labnode(&args);
        assert_eq!(r.code, Some(2), "{args:?} on {text:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(&want),
            "{args:?} on {text:?}:\n want: {want}\n  got: {}",
            r.stderr
        );
    }
}

#[test]
fn configuration_errors_are_located() {
    refused(
        "listen: 127.0.0.1:9466\ncollectors:\n  system:\n    intreval: 5s\n",
        "labnode: FILE:4:5: key `collectors.system.intreval`: unknown field `intreval`",
    );
    refused(
        "collectors:\n  system:\n    interval: soon\n",
        "FILE:3:5: key `collectors.system.interval`: `soon` is not a duration",
    );
    refused(
        "collectors:\n  system:\n    interval: 0s\n",
        "FILE:3:5: key `collectors.system.interval`: 0s is out of range",
    );
    refused("listen: [1, 2]\n", "FILE:1:9: key `listen`");
    refused(
        "collectors:\n  system:\n    interval: 1s\n    deadline: 2s\n",
        "FILE:4:5: key `collectors.system.deadline`",
    );
    refused(
        "collectors:\n  zfs:\n    deadline: 1m\n",
        "FILE:3:5: key `collectors.zfs.deadline`: the deadline (60s) must not be longer than the interval (15s)",
    );
    refused(
        "collectors:\n  gpu:\n    window: 2s\n",
        "FILE:3:5: key `collectors.gpu.window`: the first run samples for the window (2s), which must be shorter than the deadline (1s)",
    );
    refused(
        "collectors:\n  zfs:\n    snapshot_interval: 1s\n",
        "FILE:3:5: key `collectors.zfs.snapshot_interval`: snapshots are enumerated at most once per run",
    );
    refused(
        "listen: 127.0.0.1:1\ncollectors: {}\nlisten: 127.0.0.1:2\n",
        "FILE:3:1: key `listen`: duplicate key `listen` (first at line 1)",
    );
    refused(
        "collectors:\n  system: 5\n",
        "FILE:2:11: key `collectors.system`: invalid type: integer `5`, expected a mapping",
    );
    refused(
        "listen: \"127.0.0.1:1\nsnapshot_dir: /x\n",
        "FILE:3:1: key `listen`",
    );
    refused(
        "collectors:\n  sytem: {}\n",
        "key `collectors.sytem`: unknown field `sytem`, expected one of `system`, `gpu`, `zfs`, `net`, `rollback`",
    );
}

#[test]
fn bad_arguments_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("none.yaml");
    let r = labnode(&["config", "check", path_str(&missing)]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr
            .contains(&format!("{}: cannot read", missing.display())),
        "{}",
        r.stderr
    );

    let out: PathBuf = dir.path().join("s");
    let r = labnode(&["collect", "--label", "../x", "--out", path_str(&out)]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("--label: invalid label"), "{}", r.stderr);
    assert!(
        !out.exists(),
        "a refused collect created its output directory"
    );

    let r = labnode(&[
        "collect",
        "--label",
        "a",
        "--collector",
        "gpux",
        "--out",
        path_str(&out),
    ]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains(
            "unknown collector \"gpux\"; this build has: system, gpu, zfs, net, rollback"
        ),
        "{}",
        r.stderr
    );
    assert!(!out.exists());

    let r = labnode(&["serve", "--listen", "nowhere"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("invalid value 'nowhere'"), "{}", r.stderr);

    let r = labnode(&[
        "report",
        "--before",
        path_str(&missing),
        "--after",
        path_str(&missing),
    ]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains(path_str(&missing)), "{}", r.stderr);
}

#[test]
fn a_valid_configuration_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ok.yaml");
    std::fs::write(&file, "# all defaults\n").expect("write");
    let r = labnode(&["config", "check", path_str(&file)]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains(": ok (listen 127.0.0.1:9466"),
        "{}",
        r.stdout
    );
}

/// The ```yaml blocks of a Markdown file that are labnode configurations (a `collectors:`
/// or `rollback:` key at the top level).
fn configuration_examples(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in md.lines() {
        match &mut block {
            None if line.starts_with("```yaml") => block = Some(String::new()),
            Some(b) if line.starts_with("```") => {
                if b.lines()
                    .any(|l| l.starts_with("collectors:") || l.starts_with("rollback:"))
                {
                    out.push(std::mem::take(b));
                }
                block = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn every_configuration_example_in_the_documents_passes() {
    // Read where cargo runs the test, not where it was compiled.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let root = Path::new(&dir).join("../..");
    let mut docs = vec![
        root.join("README.md"),
        root.join("modules/monitoring/README.md"),
    ];
    for sub in ["docs", "docs/nixos"] {
        let Ok(entries) = std::fs::read_dir(root.join(sub)) else {
            // The Nix build's source holds only the package's fileset: no documents.
            return;
        };
        let mut md: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        md.sort();
        docs.extend(md);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = 0;
    for doc in docs {
        let Ok(text) = std::fs::read_to_string(&doc) else {
            continue;
        };
        for (i, example) in configuration_examples(&text).into_iter().enumerate() {
            let file = tmp.path().join(format!("example-{n}.yaml"));
            std::fs::write(&file, &example).expect("write");
            let r = labnode(&["config", "check", path_str(&file)]);
            assert_eq!(
                r.code,
                Some(0),
                "configuration example {} of {} does not pass config check: {}",
                i + 1,
                doc.display(),
                r.stderr
            );
            n += 1;
        }
    }
    assert!(
        n >= 2,
        "found {n} configuration examples in the documents, want at least 2"
    );
}
