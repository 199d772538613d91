//! `labnode generate`: man pages and shell completions, from the same clap definitions
//! the binary parses with, so they cannot drift from it.

use std::fs;
use std::io::Write;
use std::path::Path;

use clap::Command;

use crate::cli::GenerateCommand;
use crate::exit::Failure;

/// Runs `labnode generate`.
pub fn run(cmd: GenerateCommand, mut cli: Command) -> Result<(), Failure> {
    match cmd {
        GenerateCommand::Man { dir } => {
            fs::create_dir_all(&dir).map_err(|e| failure(&dir, "cannot create", &e))?;
            clap_mangen::generate_to(cli, &dir)
                .map_err(|e| failure(&dir, "cannot write man pages to", &e))?;
            let n = fs::read_dir(&dir)
                .map(|d| {
                    d.filter(|e| {
                        e.as_ref()
                            .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "1"))
                    })
                    .count()
                })
                .unwrap_or(0);
            eprintln!("labnode: {n} man pages in {}", dir.display());
            Ok(())
        }
        GenerateCommand::Collectors => std::io::stdout()
            .write_all(crate::collectors::export_json().as_bytes())
            .map_err(|e| Failure::runtime(format!("cannot write to stdout: {e}"))),
        GenerateCommand::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cli, "labnode", &mut out);
            std::io::stdout().write_all(&out).map_err(|e| {
                Failure::runtime(format!("cannot write the completions to stdout: {e}"))
            })
        }
    }
}

fn failure(path: &Path, what: &str, e: &std::io::Error) -> Failure {
    Failure::runtime(format!("{what} {}: {e}", path.display()))
}
