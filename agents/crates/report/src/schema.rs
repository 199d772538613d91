//! The report's JSON, schema `labnode-report/3`: the [`Report`] serialised, its fields
//! documented on the types of [`crate::model`]. A change to them that a reader of the JSON
//! would notice takes a new version here.

use crate::model::Report;

/// The JSON schema of this report.
pub const REPORT_SCHEMA: &str = "labnode-report/3";

/// The report as pretty-printed JSON, with a final newline.
pub fn json(report: &Report) -> String {
    let mut s =
        serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Side;
    use crate::operator::Operator;

    #[test]
    fn the_json_names_its_schema_first() {
        assert_eq!(REPORT_SCHEMA, "labnode-report/3");
        let side = Side::default();
        let report = crate::build(&side, &side, &Operator::default(), &Default::default());
        let text = json(&report);
        let v: serde_json::Value = serde_json::from_str(&text).expect("the report's JSON");
        assert_eq!(v["schema"], REPORT_SCHEMA);
        assert!(
            text.starts_with(&format!("{{\n  \"schema\": \"{REPORT_SCHEMA}\",")),
            "{text}"
        );
    }
}
