#!/usr/bin/env bash
# The HTML report in Debian's headless Chromium: it loads with no console error and no
# request beyond the file itself, every chart has its data (each bar carries the value the
# JSON report holds, and its 95% interval where the JSON has one), a screenshot is taken, and it prints to PDF. A page with a console
# error and an external image shows the checks can fail. LABNODE_ARTIFACTS=DIR keeps the
# screenshot, the PDF and the reports.
. "$(dirname "$0")/../lib/common.sh"
command -v chromium >/dev/null || fail "chromium is not installed (tests/run installs it)"
fixtures="$(cd "$(dirname "$0")/../../agents/crates/report/tests/fixtures" && pwd)"
out=${LABNODE_ARTIFACTS:-$T/artifacts}
mkdir -p "$out"

"$LABNODE_BIN" report --before "$fixtures/before" --after "$fixtures/after" \
  --operator "$fixtures/operator.yaml" --claims --format md,html,json --out "$T/r" >/dev/null ||
  fail "labnode report failed"
html="$T/r/report.html"
json="$T/r/report.json"

# Self-contained: no script, no external reference in the file.
grep -qi '<script' "$html" && fail "the report has a script"
grep -Eqi '(src|href)="(https?:)?//|url\((https?:)?//|@import' "$html" && fail "the report references an external resource"

# chromium PAGE NAME [ARGS...]: a fresh profile each run; stderr to $T/NAME.log.
chromium_run() {
  local page=$1 name=$2
  shift 2
  rm -rf "$T/profile-$name"
  timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$T/profile-$name" \
    --enable-logging=stderr --v=0 --log-net-log="$T/net-$name.json" "$@" "file://$page" 2>"$T/$name.log"
}
# Console messages the page logged, and requests the page made beyond file: and data: URLs.
console_errors() { grep -E ':CONSOLE(:|\()[0-9]+\]' "$T/$1.log" || true; }
page_requests() {
  jq -r '.events[] | select(.params.url != null and ((.params.network_isolation_key // "") | test("file://")))
    | .params.url | select(test("^(file|data):") | not)' "$T/net-$1.json" | sort -u
}

# The checks can fail: a page with a console error and an external image trips both.
cat >"$T/bad.html" <<'HTML'
<!doctype html><html><body><img src="http://127.0.0.1:9/x.png"><script>console.error("boom")</script></body></html>
HTML
chromium_run "$T/bad.html" bad --dump-dom >/dev/null || fail "chromium failed on the control page: $(tail -5 "$T/bad.log")"
console_errors bad | grep -q boom || fail "the console check misses a console error: $(grep -v dbus "$T/bad.log" | tail -5)"
page_requests bad | grep -q 'x.png' || fail "the request check misses an external image"
note "control page: the console error and the external request are both caught"

# The report: DOM, screenshot, PDF.
chromium_run "$html" dom --dump-dom >"$T/dom.html" || fail "chromium --dump-dom failed: $(tail -5 "$T/dom.log")"
errors=$(console_errors dom)
[ -z "$errors" ] || fail "console messages: $errors"
requests=$(page_requests dom)
[ -z "$requests" ] || fail "the page requested: $requests"
chromium_run "$html" shot --hide-scrollbars --window-size=1280,7000 --screenshot="$out/report.png" >/dev/null ||
  fail "screenshot failed: $(tail -5 "$T/shot.log")"
[ "$(head -c 8 "$out/report.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "the screenshot is not a PNG"
[ "$(stat -c %s "$out/report.png")" -gt 100000 ] || fail "the screenshot is nearly empty"
chromium_run "$html" pdf --no-pdf-header-footer --print-to-pdf="$out/report.pdf" >/dev/null ||
  fail "printing failed: $(tail -5 "$T/pdf.log")"
pages=$(grep -a -E -c '/Type */Page($|[^s])' "$out/report.pdf" || true)
[ "$pages" -ge 3 ] && [ "$pages" -le 20 ] || fail "the PDF has $pages pages"
cp "$T/r/report.md" "$T/r/report.json" "$html" "$out/"
note "Chromium: no console message, no request, screenshot $(stat -c %s "$out/report.png") bytes, $pages printed A4 pages"

# Every chart has its data: one bar per side for each row measured on both sides, each
# with the JSON's value, wider than nothing unless the value is 0.
bars() { grep -o '<rect class="bar"[^>]*>' "$T/dom.html" | sed -E 's/.*data-row="([^"]*)" data-side="([^"]*)" data-value="([^"]*)".* width="([^"]*)".*/\1 \2 \3 \4/'; }
bars >"$T/bars.txt"
jq -r '.groups[].rows[] | select(.display != "text")
  | select((.before.value | type) == "number" and (.after.value | type) == "number")
  | "\(.id) before \(.before.value)", "\(.id) after \(.after.value)"' "$json" >"$T/want.txt"
[ -s "$T/want.txt" ] || fail "the JSON report has no row to chart"
while read -r id side value; do
  got=$(awk -v id="$id" -v s="$side" '$1 == id && $2 == s' "$T/bars.txt")
  [ -n "$got" ] || fail "no $side bar for $id"
  read -r _ _ v w <<<"$got"
  awk -v a="$v" -v b="$value" 'BEGIN { d = a - b; if (d < 0) d = -d; m = (b < 0 ? -b : b); exit !(d <= 1e-9 * (m + 1)) }' ||
    fail "$id $side bar holds $v, the JSON $value"
  awk -v w="$w" -v v="$v" 'BEGIN { exit !(w > 0 || v == 0) }' || fail "$id $side bar has no width"
done <"$T/want.txt"
[ "$(wc -l <"$T/bars.txt")" = "$(wc -l <"$T/want.txt")" ] || fail "$(wc -l <"$T/bars.txt") bars for $(wc -l <"$T/want.txt") values"
# Each bar of a cell with a 95% interval carries it: the JSON's ends, drawn where the bar's
# own scale puts them (the bar's width is its value on the same scale).
grep -o '<path class="interval"[^>]*>' "$T/dom.html" |
  sed -E 's/.*data-row="([^"]*)" data-side="([^"]*)" data-low="([^"]*)" data-high="([^"]*)" d="M([0-9.]+) [^H]*H([0-9.]+).*/\1 \2 \3 \4 \5 \6/' >"$T/intervals.txt"
jq -r '.groups[].rows[] | select(.display != "text")
  | select((.before.value | type) == "number" and (.after.value | type) == "number")
  | (["before", .before], ["after", .after]) as [$s, $c] | select($c.interval != null)
  | "\(.id) \($s) \($c.interval.low) \($c.interval.high)"' "$json" >"$T/want-intervals.txt"
[ -s "$T/want-intervals.txt" ] || fail "the JSON report has no interval to draw"
while read -r id side lo hi; do
  got=$(awk -v id="$id" -v s="$side" '$1 == id && $2 == s' "$T/intervals.txt")
  [ -n "$got" ] || fail "no interval on the $side bar of $id"
  read -r _ _ glo ghi x1 x2 <<<"$got"
  awk -v a="$glo" -v b="$lo" -v c="$ghi" -v d="$hi" 'BEGIN { e = a - b; f = c - d; if (e < 0) e = -e; if (f < 0) f = -f
    exit !(e <= 1e-9 * ((b < 0 ? -b : b) + 1) && f <= 1e-9 * ((d < 0 ? -d : d) + 1)) }' ||
    fail "$id $side interval $glo..$ghi, the JSON $lo..$hi"
  read -r _ _ v w <<<"$(awk -v id="$id" -v s="$side" '$1 == id && $2 == s' "$T/bars.txt")"
  awk -v v="$v" -v w="$w" -v lo="$lo" -v hi="$hi" -v x1="$x1" -v x2="$x2" 'BEGIN {
    if (v == 0) exit 0
    k = w / v; d1 = x1 - 200 - lo * k; d2 = x2 - 200 - hi * k
    if (d1 < 0) d1 = -d1; if (d2 < 0) d2 = -d2
    exit !(d1 <= 0.05 + 0.01 * (x1 - 200) && d2 <= 0.05 + 0.01 * (x2 - 200) && x1 <= x2) }' ||
    fail "$id $side interval drawn at $x1..$x2 px, the bar's scale puts $lo..$hi elsewhere (bar $w px for $v)"
done <"$T/want-intervals.txt"
[ "$(wc -l <"$T/intervals.txt")" = "$(wc -l <"$T/want-intervals.txt")" ] ||
  fail "$(wc -l <"$T/intervals.txt") intervals drawn for $(wc -l <"$T/want-intervals.txt") in the JSON"
charts=$(grep -o '<svg class="chart bars" data-group="[^"]*" data-rows="[0-9]*"' "$T/dom.html" | wc -l)
grep -o '<svg class="chart bars" data-group="[^"]*" data-rows="[0-9]*"' "$T/dom.html" |
  sed -E 's/.*data-group="([^"]*)" data-rows="([0-9]*)"/\1 \2/' | while read -r g n; do
    want=$(jq --arg g "$g" '[.groups[] | select(.id == $g) | .rows[] | select(.display != "text")
      | select((.before.value | type) == "number" and (.after.value | type) == "number")] | length' "$json")
    [ "$n" = "$want" ] && [ "$n" -gt 0 ] || fail "chart $g shows $n rows, the JSON has $want"
  done
# The waterfall: a bar per phase the JSON has a median for, and the total.
phases=$(grep -c '<rect class="bar phase"' <(grep -o '<rect class="bar phase"[^>]*>' "$T/dom.html"))
want_phases=$(jq '[.waterfall[] | .phases[] | (.before, .after) | select(. != null)] | length' "$json")
[ "$phases" = "$want_phases" ] && [ "$phases" -gt 0 ] || fail "the waterfall has $phases phase bars, the JSON $want_phases medians"
grep -o '<rect class="bar phase"[^>]*>' "$T/dom.html" | grep -q 'data-phase="activation"' || fail "no activation phase"
totals=$(grep -o '<rect class="bar total"[^>]*>' "$T/dom.html" | wc -l)
want_totals=$(jq '[.waterfall[] | (.before_total, .after_total) | select(. != null)] | length' "$json")
[ "$totals" = "$want_totals" ] || fail "the waterfall has $totals totals, the JSON $want_totals"
note "charts: $charts bar charts, $(wc -l <"$T/bars.txt") bars each with the JSON's value, $(wc -l <"$T/intervals.txt") with their 95% interval, $phases phase bars and $totals totals"
