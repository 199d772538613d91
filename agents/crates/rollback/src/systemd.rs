//! Talking to the systemd manager over D-Bus, by default peer-to-peer on its private
//! socket `/run/systemd/private`: no D-Bus daemon in the path, so gates keep working while
//! an activation restarts `dbus.service`, and a poll costs microseconds instead of a
//! `systemctl` process.
//!
//! The client is small on purpose: the D-Bus wire format comes from `zvariant`, and the
//! framing (SASL `EXTERNAL`, one method call, its reply) is here. zbus was tried first; it
//! panics on the replies of systemd's private socket, whose sender field is the well-known
//! name `org.freedesktop.systemd1` rather than a unique name.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use zvariant::serialized::{Context, Data};
use zvariant::{DynamicType, LE, ObjectPath, OwnedObjectPath, OwnedValue, Type, Value};

use crate::config::SystemdAddress;

const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const DESTINATION: &str = "org.freedesktop.systemd1";

/// What stopping a transient service stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMode {
    /// Its main process only (the guard: what it starts must outlive it).
    MainProcess,
    /// Everything it started (an activation: the script and its children).
    ControlGroup,
}

/// The system bus socket, when `DBUS_SYSTEM_BUS_ADDRESS` does not name another.
const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";

/// A failed exchange with systemd.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// No connection could be made.
    #[error("cannot reach systemd at {at}: {why}")]
    Connect {
        /// Where.
        at: String,
        /// Why.
        why: String,
    },
    /// A call failed.
    #[error("systemd {method}: {why}")]
    Call {
        /// The method.
        method: &'static str,
        /// Why.
        why: String,
    },
}

/// One unit as `ListUnits*` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Type)]
pub struct UnitStatus {
    /// Unit name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `loaded`, `not-found`, ...
    pub load_state: String,
    /// `active`, `activating`, `failed`, ...
    pub active_state: String,
    /// The unit type's own state, e.g. `running`.
    pub sub_state: String,
    following: String,
    path: OwnedObjectPath,
    /// The unit's queued job, 0 for none (a unit just started is `inactive` with one).
    pub job_id: u32,
    job_type: String,
    job_path: OwnedObjectPath,
}

/// One queued job as `ListJobs` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Type)]
pub struct Job {
    /// Job id.
    pub id: u32,
    /// The unit.
    pub unit: String,
    /// `start`, `stop`, ...
    pub job_type: String,
    /// `waiting` or `running`.
    pub state: String,
    path: OwnedObjectPath,
    unit_path: OwnedObjectPath,
}

/// The unit this process runs in (`/proc/self/cgroup`), e.g. `labnode-drill.service`.
pub fn own_unit() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    own_unit_in(&text)
}

/// The environment variable naming the unit that started this one and waits for it (the
/// NixOS module's oneshot units start labnode with `systemd-run --wait`): its start job
/// stays queued while labnode runs.
pub const PARENT_UNIT_ENV: &str = "LABNODE_PARENT_UNIT";

/// The units whose jobs are labnode's own: the one it runs in and the one waiting for it.
pub fn own_units() -> Vec<String> {
    let parent = std::env::var(PARENT_UNIT_ENV)
        .ok()
        .filter(|u| u.ends_with(".service") && !u.contains('/'));
    own_unit().into_iter().chain(parent).collect()
}

fn own_unit_in(cgroup: &str) -> Option<String> {
    // The unified hierarchy (`0::`) or systemd's own v1 hierarchy (`name=systemd`).
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| *p != "/")
        .or_else(|| {
            cgroup
                .lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })?;
    path.rsplit('/')
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_owned)
}

/// The jobs that mean "not settled yet": every queued job except those of `own` (a oneshot
/// unit's start job stays queued while it runs: a drill from a timer, the boot unit, and
/// the unit that started labnode's and waits for it) and
/// targets merely waiting (on `own`, or on jobs that are themselves counted).
pub fn unsettled<'j>(jobs: &'j [Job], own: &[String]) -> Vec<&'j Job> {
    jobs.iter()
        .filter(|j| !own.contains(&j.unit))
        .filter(|j| !(j.unit.ends_with(".target") && j.state == "waiting"))
        .collect()
}

/// A connection to the systemd manager.
#[derive(Debug)]
pub struct Systemd {
    stream: std::cell::RefCell<BufReader<UnixStream>>,
    serial: std::cell::Cell<u32>,
    bus: bool,
}

fn system_bus_path() -> PathBuf {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .ok()
        .and_then(|a| {
            a.strip_prefix("unix:path=")
                .map(|p| p.split(',').next().unwrap_or(p).to_owned())
        })
        .map_or_else(|| SYSTEM_BUS.into(), PathBuf::from)
}

impl Systemd {
    /// Connects and authenticates; every exchange afterwards fails after `timeout`.
    pub fn connect(addr: &SystemdAddress, timeout: Duration) -> Result<Self, SystemdError> {
        let (path, bus) = match addr {
            SystemdAddress::Private(p) => (p.clone(), false),
            SystemdAddress::Bus => (system_bus_path(), true),
        };
        let err = |why: String| SystemdError::Connect {
            at: if bus {
                format!("the D-Bus system bus ({})", path.display())
            } else {
                path.display().to_string()
            },
            why,
        };
        let stream = UnixStream::connect(&path).map_err(|e| err(e.to_string()))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| err(e.to_string()))?;
        let mut stream = BufReader::new(stream);
        authenticate(&mut stream).map_err(err)?;
        let sd = Systemd {
            stream: std::cell::RefCell::new(stream),
            serial: std::cell::Cell::new(0),
            bus,
        };
        if bus {
            let _name: String = sd
                .exchange(
                    "Hello",
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    &(),
                )
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(sd)
    }

    fn call<B, R>(&self, method: &'static str, body: &B) -> Result<R, SystemdError>
    where
        B: serde::Serialize + DynamicType,
        R: DeserializeOwned + Type,
    {
        let dest = self.bus.then_some(DESTINATION);
        self.exchange(method, dest, PATH, MANAGER, body)
    }

    fn exchange<B, R>(
        &self,
        method: &'static str,
        dest: Option<&str>,
        path: &str,
        iface: &str,
        body: &B,
    ) -> Result<R, SystemdError>
    where
        B: serde::Serialize + DynamicType,
        R: DeserializeOwned + Type,
    {
        let err = |why: String| SystemdError::Call { method, why };
        let serial = self.serial.get().wrapping_add(1).max(1);
        self.serial.set(serial);
        let msg = encode_call(serial, dest, path, iface, method, body).map_err(err)?;
        let mut stream = self.stream.borrow_mut();
        stream
            .get_mut()
            .write_all(&msg)
            .map_err(|e| err(e.to_string()))?;
        loop {
            let reply = read_message(&mut *stream).map_err(err)?;
            if reply.reply_serial != Some(serial) {
                continue; // a signal, or a late answer to an earlier call
            }
            return match reply.kind {
                MSG_RETURN => {
                    let (v, _): (R, usize) = Data::new(&reply.body[..], Context::new_dbus(LE, 0))
                        .deserialize()
                        .map_err(|e| err(format!("unexpected reply ({}): {e}", reply.signature)))?;
                    Ok(v)
                }
                _ => {
                    let text = if reply.signature.starts_with('s') {
                        Data::new(&reply.body[..], Context::new_dbus(LE, 0))
                            .deserialize_for_signature::<_, String>("s")
                            .map(|(s, _)| s)
                            .unwrap_or_default()
                    } else {
                        String::new()
                    };
                    Err(err(format!(
                        "{}: {text}",
                        reply.error_name.unwrap_or_default()
                    )))
                }
            };
        }
    }
    /// The jobs in the queue.
    pub fn jobs(&self) -> Result<Vec<Job>, SystemdError> {
        self.call("ListJobs", &())
    }

    /// The units in one of these active states, e.g. `["failed"]`.
    pub fn units_in_state(&self, states: &[&str]) -> Result<Vec<UnitStatus>, SystemdError> {
        self.call("ListUnitsFiltered", &(states,))
    }

    /// These units, loaded or not.
    pub fn units(&self, names: &[String]) -> Result<Vec<UnitStatus>, SystemdError> {
        self.call("ListUnitsByNames", &(names,))
    }

    /// Starts a transient service `name` running `argv` with `env`, outside the caller's
    /// process tree: it survives the caller. `kill` says what stopping it stops.
    pub fn start_transient_service(
        &self,
        name: &str,
        description: &str,
        argv: &[String],
        env: &[String],
        kill: KillMode,
    ) -> Result<(), SystemdError> {
        let kill_mode = match kill {
            KillMode::MainProcess => "process",
            KillMode::ControlGroup => "control-group",
        };
        let Some(program) = argv.first() else {
            return Err(SystemdError::Call {
                method: "StartTransientUnit",
                why: "empty command".into(),
            });
        };
        let exec = vec![(program.clone(), argv.to_vec(), false)];
        let props: Vec<(&str, Value<'_>)> = vec![
            ("Description", Value::from(description)),
            ("Type", Value::from("exec")),
            ("KillMode", Value::from(kill_mode)),
            ("CollectMode", Value::from("inactive-or-failed")),
            ("Environment", Value::from(env.to_vec())),
            ("ExecStart", Value::from(exec)),
        ];
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        let _job: OwnedObjectPath = self.call("StartTransientUnit", &(name, "fail", props, aux))?;
        Ok(())
    }

    /// Stops a unit (no error if it is not loaded any more).
    pub fn stop(&self, name: &str) -> Result<(), SystemdError> {
        match self.call::<_, OwnedObjectPath>("StopUnit", &(name, "replace")) {
            Ok(_) => Ok(()),
            Err(SystemdError::Call { why, .. })
                if why.contains("NoSuchUnit") || why.contains("not loaded") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

const MSG_CALL: u8 = 1;
const MSG_RETURN: u8 = 2;

/// SASL `EXTERNAL` with this process's uid, as every D-Bus client does on a local socket.
/// `BEGIN` goes in the same write as `AUTH` (as sd-bus's own clients do): sent on its own
/// after `OK`, it can share one read with the first method call on systemd's side, and
/// sd-bus then leaves that call unanswered until more data arrives.
fn authenticate(stream: &mut BufReader<UnixStream>) -> Result<(), String> {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() }.to_string();
    let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
    stream
        .get_mut()
        .write_all(format!("\0AUTH EXTERNAL {hex}\r\nBEGIN\r\n").as_bytes())
        .map_err(|e| format!("authentication: {e}"))?;
    let mut line = String::new();
    stream
        .read_line(&mut line)
        .map_err(|e| format!("authentication: {e}"))?;
    if line.starts_with("OK ") {
        Ok(())
    } else {
        Err(format!("authentication refused: {}", line.trim()))
    }
}

fn pad8(v: &mut Vec<u8>) {
    while v.len() % 8 != 0 {
        v.push(0);
    }
}

/// A method call message: the fixed header, the header fields, padding, the body.
fn encode_call<B>(
    serial: u32,
    dest: Option<&str>,
    path: &str,
    iface: &str,
    member: &str,
    body: &B,
) -> Result<Vec<u8>, String>
where
    B: serde::Serialize + DynamicType,
{
    // A tuple is the message's list of arguments: its signature without the struct's
    // parentheses (the bytes are the same: a struct at offset 0 needs no padding).
    let sig = body.signature();
    let args = sig.to_string_no_parens();
    let body_bytes = if args.is_empty() {
        Vec::new()
    } else {
        zvariant::to_bytes(Context::new_dbus(LE, 0), body)
            .map_err(|e| e.to_string())?
            .to_vec()
    };
    ObjectPath::try_from(path).map_err(|e| format!("{path}: {e}"))?;
    let body_len = u32::try_from(body_bytes.len()).map_err(|e| e.to_string())?;
    let mut m = vec![b'l', MSG_CALL, 0, 1];
    m.extend_from_slice(&body_len.to_le_bytes());
    m.extend_from_slice(&serial.to_le_bytes());
    m.extend_from_slice(&[0; 4]); // the header fields' length, below
    let mut fields: Vec<(u8, u8, &str)> =
        vec![(1, b'o', path), (2, b's', iface), (3, b's', member)];
    if let Some(d) = dest {
        fields.push((6, b's', d));
    }
    if !args.is_empty() {
        fields.push((8, b'g', &args));
    }
    for (code, kind, value) in fields {
        pad8(&mut m);
        m.extend_from_slice(&[code, 1, kind, 0]);
        if kind == b'g' {
            m.push(u8::try_from(value.len()).map_err(|e| e.to_string())?);
        } else {
            // Strings and object paths: a u32 length, 4-aligned (it is, after 4 bytes).
            m.extend_from_slice(
                &u32::try_from(value.len())
                    .map_err(|e| e.to_string())?
                    .to_le_bytes(),
            );
        }
        m.extend_from_slice(value.as_bytes());
        m.push(0);
    }
    let fields_len = u32::try_from(m.len() - 16).map_err(|e| e.to_string())?;
    m[12..16].copy_from_slice(&fields_len.to_le_bytes());
    pad8(&mut m);
    m.extend_from_slice(&body_bytes);
    Ok(m)
}

struct Reply {
    kind: u8,
    reply_serial: Option<u32>,
    error_name: Option<String>,
    signature: String,
    body: Vec<u8>,
}

type Header = (u8, u8, u8, u8, u32, u32, Vec<(u8, OwnedValue)>);

fn read_message(r: &mut impl Read) -> Result<Reply, String> {
    let io = |e: std::io::Error| format!("reading the reply: {e}");
    let mut fixed = [0u8; 16];
    r.read_exact(&mut fixed).map_err(io)?;
    if fixed[0] != b'l' {
        return Err("a big-endian D-Bus message; only little-endian is supported".into());
    }
    let u32_at =
        |i: usize| u32::from_le_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
    let (body_len, fields_len) = (u32_at(4) as usize, u32_at(12) as usize);
    if body_len > 64 << 20 || fields_len > 1 << 20 {
        return Err(format!(
            "a D-Bus message too large ({body_len} + {fields_len} bytes)"
        ));
    }
    let header_len = (16 + fields_len).div_ceil(8) * 8;
    let mut header = fixed.to_vec();
    header.resize(header_len, 0);
    r.read_exact(&mut header[16..]).map_err(io)?;
    let mut body = vec![0u8; body_len];
    r.read_exact(&mut body).map_err(io)?;
    let (h, _): (Header, usize) = Data::new(&header[..16 + fields_len], Context::new_dbus(LE, 0))
        .deserialize()
        .map_err(|e| format!("a D-Bus header that does not parse: {e}"))?;
    let mut reply = Reply {
        kind: h.1,
        reply_serial: None,
        error_name: None,
        signature: String::new(),
        body,
    };
    for (code, v) in &h.6 {
        let v: &Value<'_> = v;
        match (code, v) {
            (4, Value::Str(s)) => reply.error_name = Some(s.to_string()),
            (5, Value::U32(n)) => reply.reply_serial = Some(*n),
            (8, Value::Signature(s)) => reply.signature = s.to_string(),
            _ => {}
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_its_own_unit() {
        assert_eq!(
            own_unit_in("0::/system.slice/labnode-drill.service\n").as_deref(),
            Some("labnode-drill.service")
        );
        assert_eq!(
            own_unit_in("9:name=systemd:/system.slice/labnode-safe-switch-recover.service\n0::/\n")
                .as_deref(),
            Some("labnode-safe-switch-recover.service")
        );
        assert_eq!(
            own_unit_in("0::/user.slice/user-0.slice/session-3.scope\n").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(own_unit_in("0::/\n"), None);
    }

    #[test]
    fn own_jobs_and_waiting_targets_do_not_count() {
        let job = |unit: &str, state: &str| Job {
            id: 1,
            unit: unit.into(),
            job_type: "start".into(),
            state: state.into(),
            path: OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/1").expect("path"),
            unit_path: OwnedObjectPath::try_from("/org/freedesktop/systemd1/unit/x").expect("path"),
        };
        let jobs = vec![
            job("labnode-recover-run.service", "running"),
            job("labnode-recover.service", "running"),
            job("multi-user.target", "waiting"),
            job("postgresql.service", "running"),
            job("network-online.target", "running"),
        ];
        let own = [
            "labnode-recover-run.service".to_owned(),
            "labnode-recover.service".to_owned(),
        ];
        let left: Vec<&str> = unsettled(&jobs, &own)
            .iter()
            .map(|j| j.unit.as_str())
            .collect();
        assert_eq!(left, ["postgresql.service", "network-online.target"]);
    }

    #[test]
    fn a_missing_socket_is_a_named_error() {
        let e = Systemd::connect(
            &SystemdAddress::Private("/nonexistent/systemd/private".into()),
            Duration::from_millis(500),
        )
        .expect_err("no socket")
        .to_string();
        assert!(
            e.starts_with("cannot reach systemd at /nonexistent/systemd/private:"),
            "{e}"
        );
    }
}
