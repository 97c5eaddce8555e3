#!/usr/bin/env bash
# The CI regression gate, one command: the working tree against BASE (default origin/main), side by side on
# this machine (exit 1 on a regression, 2 on unusable input). Extra arguments go to bench ci, e.g.
#   scripts/ci_regression.sh --rounds 14
# The markdown summary goes to results/ci-gate/summary.md and, on GitHub Actions, to the job summary.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m bench ci --base "${BASE:-origin/main}" "$@"
