#!/usr/bin/env bash
# Runs the suite against the reference back-end and validates the JUnit report
# against both CI schemas (windyroad JUnit.xsd, Jenkins xunit junit-10.xsd).
#   junit_schema_test.sh RUNNER SCHEMA_DIR OUT_DIR
set -euo pipefail
runner=$1 schemas=$2 out=$3
ref="$(dirname "$runner")/vhost-user-vsock-ref"
if [[ ! -f "$schemas/windyroad-JUnit.xsd" || ! -f "$schemas/junit-10.xsd" ]]; then
  # The schemas live beside the repository (../shared/spec-sources/junit), as in CI.
  echo "JUnit schemas not found in $schemas: nothing to validate against"
  exit 77
fi
if [[ ! -x "$ref" ]]; then
  echo "reference back-end not built ($ref): nothing to report on"
  exit 77
fi
report="$out/junit-schema-test.xml"
rm -f "$report"
# The verdicts do not matter here, only the report's shape.
"$runner" --profile ref --jobs 2 --no-progress --junit "$report" >/dev/null 2>&1 || true
[[ -s "$report" ]] || { echo "no report written"; exit 1; }
xmllint --noout --schema "$schemas/windyroad-JUnit.xsd" "$report"
xmllint --noout --schema "$schemas/junit-10.xsd" "$report"
# What a passing case noted is in the report (a suite property, the only place
# both schemas allow), as program.print_capabilities notes what it was told.
grep -q 'name="program.print_capabilities.notes" value="capabilities: {' "$report" ||
  { echo "the notes of a passing case are not in the report"; exit 1; }
# A failure-heavy report too: a back-end that never starts gives <error> elements.
bad="$out/junit-schema-test-unreachable.xml"
"$runner" --spawn 'sh -c "echo cannot start >&2; exit 4"' --no-progress --junit "$bad" >/dev/null 2>&1 || true
xmllint --noout --schema "$schemas/windyroad-JUnit.xsd" "$bad"
xmllint --noout --schema "$schemas/junit-10.xsd" "$bad"
