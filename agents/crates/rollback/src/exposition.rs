//! Just enough of the Prometheus text format to read another exporter's series, and of
//! RFC 3339 to read Prometheus's timestamps.

/// One series: name, label pairs, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Metric name.
    pub name: String,
    /// Label pairs, unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Line {
    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses exposition text; comments and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Line> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Line> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            r = r.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = r.split_once('=')?;
            let quoted = after.trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut it = quoted.char_indices();
            let end = loop {
                let (i, c) = it.next()?;
                match c {
                    '\\' => {
                        let (_, e) = it.next()?;
                        value.push(if e == 'n' { '\n' } else { e });
                    }
                    '"' => break i,
                    c => value.push(c),
                }
            };
            r = &quoted[end + 1..];
            labels.push((key.trim().to_owned(), value));
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Line {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Seconds since the epoch of an RFC 3339 time such as `2026-11-25T01:02:03.5+01:00`.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else {
        let i = time.rfind(['+', '-'])?;
        let (c, o) = time.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':')?;
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let mut c = clock.splitn(3, ':');
    let h: i64 = c.next()?.parse().ok()?;
    let min: i64 = c.next()?.parse().ok()?;
    let sec: f64 = c.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 {
        return None;
    }
    let days = days_from_civil(y, m, day);
    Some((days * 86_400 + h * 3600 + min * 60 - offset) as f64 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_series_with_escaped_labels() {
        let text = "# HELP x y\n# TYPE labnode_zfs_pool_state gauge\n\
            labnode_zfs_pool_state{pool=\"tank\",state=\"online\"} 1\n\
            labnode_zfs_pool_state{pool=\"a \\\"b\\\" ,c\",state=\"faulted\"} 0\n\
            labnode_up 1 1700000000000\n\
            broken{x=\"1\" 2\n\
            nan_value NaN\n";
        let l = parse(text);
        assert_eq!(l.len(), 4, "{l:?}");
        assert_eq!(l[0].label("pool"), Some("tank"));
        assert_eq!(l[0].value, 1.0);
        assert_eq!(l[1].label("pool"), Some("a \"b\" ,c"));
        assert_eq!(l[1].label("state"), Some("faulted"));
        assert_eq!(l[2].name, "labnode_up");
        assert!(l[2].labels.is_empty());
        assert!(l[3].value.is_nan());
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        let a = parse_rfc3339("2026-11-25T01:02:03.25+01:00").expect("parses");
        let b = parse_rfc3339("2026-11-25T00:02:03.25Z").expect("parses");
        assert_eq!(a, b);
        assert_eq!(
            parse_rfc3339("2026-11-24T19:02:03.25-05:00"),
            Some(b),
            "negative offset"
        );
        assert_eq!(
            parse_rfc3339("0001-01-01T00:00:00Z"),
            Some(-62_135_596_800.0)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
    }
}
