//! The `command` gate: a command (argv, no shell) exits 0 within the check's bound.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::{Checker, GateCheck};

/// `command`: this argv exits 0.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Command(pub Vec<String>);

impl GateCheck for Command {
    fn describe(&self) -> String {
        format!("`{}` exits 0", self.0.join(" "))
    }

    fn validate(&self) -> Result<(), String> {
        if self.0.is_empty() {
            return Err("give the command as a list: [program, arg, ...]".into());
        }
        Ok(())
    }

    fn check(&self, _: &mut Checker, _since: SystemTime, bound: Duration) -> Result<(), String> {
        let Some(program) = self.0.first() else {
            return Err("empty command".into());
        };
        let mut child = std::process::Command::new(program)
            .args(&self.0[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let end = Instant::now() + bound;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if status.success() {
                        return Ok(());
                    }
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.by_ref().take(4096).read_to_string(&mut err);
                    }
                    let last = err.lines().last().unwrap_or("").trim().to_owned();
                    return Err(format!(
                        "{program} exited with {status}{}",
                        if last.is_empty() {
                            String::new()
                        } else {
                            format!(": {last}")
                        }
                    ));
                }
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{program} still ran after {}ms", bound.as_millis()));
                }
                Err(e) => return Err(format!("{program}: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::super::testing::check;
    use super::*;

    #[test]
    fn commands() {
        check(&Check::Command(Command(vec!["true".into()]))).expect("true");
        let e = check(&Check::Command(Command(vec![
            "sh".into(),
            "-c".into(),
            "echo nope >&2; exit 3".into(),
        ])))
        .expect_err("exit 3");
        assert!(e.contains("exit status: 3: nope"), "{e}");
    }
}
