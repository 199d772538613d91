//! `alejandra-check [--write] PATH...`: formats every `.nix` file under the given paths
//! with the alejandra library and reports the files whose formatting differs (exit 1),
//! or rewrites them with `--write`. Files that do not parse are reported (exit 2).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn walk(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        let Ok(rd) = std::fs::read_dir(p) else {
            eprintln!("{}: cannot read directory", p.display());
            return;
        };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            let name = e.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || name == "target" || name == "result" {
                continue;
            }
            walk(&e, out);
        }
    } else if p.extension().is_some_and(|e| e == "nix") {
        out.push(p.to_owned());
    }
}

fn main() -> ExitCode {
    let mut write = false;
    let mut roots = Vec::new();
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--write" => write = true,
            "--check" => write = false,
            _ => roots.push(PathBuf::from(a)),
        }
    }
    if roots.is_empty() {
        roots.push(".".into());
    }
    let mut files = Vec::new();
    for r in &roots {
        walk(r, &mut files);
    }
    let (mut changed, mut broken) = (0, 0);
    for f in &files {
        let Ok(before) = std::fs::read_to_string(f) else {
            eprintln!("{}: cannot read", f.display());
            broken += 1;
            continue;
        };
        match alejandra::format::in_memory(f.display().to_string(), before) {
            (alejandra::format::Status::Error(e), _) => {
                eprintln!("{}: {e}", f.display());
                broken += 1;
            }
            (alejandra::format::Status::Changed(true), after) => {
                changed += 1;
                if write {
                    if let Err(e) = std::fs::write(f, after) {
                        eprintln!("{}: cannot write: {e}", f.display());
                        broken += 1;
                    } else {
                        println!("formatted {}", f.display());
                    }
                } else {
                    println!("not formatted: {}", f.display());
                }
            }
            (alejandra::format::Status::Changed(false), _) => {}
        }
    }
    println!(
        "alejandra-check: {} files, {changed} {}, {broken} broken",
        files.len(),
        if write {
            "formatted"
        } else {
            "need formatting"
        }
    );
    if broken > 0 {
        ExitCode::from(2)
    } else if changed > 0 && !write {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
