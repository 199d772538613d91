//! `labnode generate`: the man pages and completions the Nix package installs.

use std::path::Path;
use std::process::Command;

fn labnode(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_labnode"))
        .args(args)
        .env("LABNODE_LOG", "warn")
        .output()
        .expect("labnode runs")
}

#[test]
fn man_writes_a_page_per_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("man1");
    let o = labnode(&["generate", "man", out.to_str().expect("utf-8 path")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for page in [
        "labnode",
        "labnode-serve",
        "labnode-collect",
        "labnode-report",
        "labnode-config-check",
        "labnode-drill-rollback",
        "labnode-drill-zfs",
        "labnode-safe-switch",
        "labnode-gc",
        "labnode-net-serve",
        "labnode-net-bench",
        "labnode-demo",
        "labnode-generate-man",
    ] {
        let text = std::fs::read_to_string(out.join(format!("{page}.1")))
            .unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}.1 is not roff"
        );
        assert!(
            text.contains(&page.to_ascii_lowercase()),
            "{page}.1 does not name itself"
        );
    }
    let safe = std::fs::read_to_string(out.join("labnode-safe-switch.1")).expect("page");
    assert!(
        safe.contains("lock\\-wait"),
        "the safe-switch page lists --lock-wait"
    );
    // The hidden internal command gets no page.
    assert!(!out.join("labnode-internal.1").exists());
}

#[test]
fn completions_for_each_shell_the_package_installs() {
    for (shell, marker) in [
        ("bash", "_labnode"),
        ("zsh", "#compdef labnode"),
        ("fish", "complete -c labnode"),
    ] {
        let o = labnode(&["generate", "completions", shell]);
        assert!(
            o.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains(marker), "{shell}: no {marker}");
        assert!(text.contains("safe-switch"), "{shell}: no safe-switch");
    }
}

#[test]
fn bad_input_is_named_and_exits_nonzero() {
    let o = labnode(&["generate", "completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("tcsh"));

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    let target = file.join("man1");
    let o = labnode(&["generate", "man", target.to_str().expect("utf-8 path")]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&*target.to_string_lossy()), "{err}");
    assert!(
        Path::new(&file).is_file(),
        "the file in the way is left alone"
    );
}
