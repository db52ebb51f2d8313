#!/usr/bin/env bash
# Dependency and code scanning: pip-audit on the installed environment, bandit on app/.
# Exceptions are listed and justified in pyproject.toml [tool.bandit] and .bandit-baseline.json
# (docs/reliability.md, "Scanning"). Exits non-zero on any new finding.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

echo "== bandit (app/)"
"$BIN/bandit" -q -c pyproject.toml -r app -b .bandit-baseline.json

echo "== pip-audit (installed environment)"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
set +e
"$BIN/pip-audit" --local --progress-spinner off --skip-editable -f json -o "$report" 2>/dev/null
rc=$?
set -e
"$BIN/python" - "$report" "$rc" <<'PY'
import json, os, sys
path, rc = sys.argv[1], int(sys.argv[2])
try:
    data = json.load(open(path))
except Exception:
    data = {"dependencies": []}
deps = data.get("dependencies", [])
vulnerable = [d for d in deps if d.get("vulns")]
audited = [d for d in deps if "skip_reason" not in d]
for d in vulnerable:
    print(f"VULNERABLE {d['name']} {d['version']}: {', '.join(v['id'] for v in d['vulns'])}")
print(f"pip-audit: {len(deps)} packages, {len(audited)} audited, {len(vulnerable)} vulnerable")
if vulnerable:
    sys.exit(1)
if not audited:
    print("WARNING: no vulnerability data could be fetched; nothing was audited")
    sys.exit(1 if os.environ.get("STRICT_AUDIT") == "1" else 0)
sys.exit(0 if rc in (0, 1) else rc)
PY
