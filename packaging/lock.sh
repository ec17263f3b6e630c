#!/usr/bin/env bash
# Rewrite packaging/constraints.txt (the lock) from the project's .venv, after a full, tested install.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# The lock: exact versions of every package of the full install (\`bash packaging/setup.sh --test\`), as tested"
  echo "# on Linux x86-64, Python 3.11, CPU. setup.sh installs with -c this file; regenerate with"
  echo "# \`bash packaging/lock.sh\` after a tested upgrade (and move the upper bounds in pyproject.toml with it)."
  .venv/bin/python -m pip freeze --exclude-editable | grep -v "^gradprompt" | sed 's/+cpu$//'
} > packaging/constraints.txt.partial
mv packaging/constraints.txt.partial packaging/constraints.txt
echo "wrote packaging/constraints.txt ($(grep -vc '^#' packaging/constraints.txt) packages)"
