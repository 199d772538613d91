//! Reads the collector registry's export, `modules/collectors.json`, into the collector
//! names the report expects (in the registry's order), so that the report's list of
//! collectors is the registry's and adding a collector touches the registry alone.

use std::fmt;
use std::path::PathBuf;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The keys of the export's top-level object, in the order they are written.
struct Names(Vec<String>);

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = Names;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object keyed by collector name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Names, A::Error> {
                let mut names = Vec::new();
                while let Some((name, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                    names.push(name);
                }
                Ok(Names(names))
            }
        }
        d.deserialize_map(Keys)
    }
}

fn main() {
    let dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    // The same path from the crate in a checkout and in the Nix package's source fileset.
    let path = dir.join("../../../modules/collectors.json");
    println!("cargo::rerun-if-changed={}", path.display());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the collector registry's export {}: {e}", path.display()));
    let Names(names) = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the collector registry's export {}: {e}", path.display()));
    assert!(!names.is_empty(), "{} names no collector", path.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // `&["system", "gpu", ...]`, and "system, gpu, ... and rollback" for the coverage row.
    let list = format!("&{names:?}");
    let words = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    };
    let write = |name: &str, text: &str| {
        std::fs::write(out.join(name), text)
            .unwrap_or_else(|e| panic!("{}: {e}", out.join(name).display()))
    };
    write("collectors.rs", &list);
    write("collectors-in-words.txt", &words);
}
