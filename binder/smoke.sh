#!/usr/bin/env bash
# Binder without Docker: do what repo2docker does with binder/ in a fresh venv, then run every
# notebook through binder/start under nbconvert. Run from the repository root (make binder-smoke).
set -euo pipefail
work="${BINDER_SMOKE_DIR:-$(mktemp -d /tmp/naq-binder-smoke.XXXXXX)}"
venv="$work/venv"
out="$work/out"
mkdir -p "$out"

# runtime.txt names the Python ("python-3.11" -> python3.11); it must exist on this machine.
py=python3
ver="$(sed -n 's/^python-\([0-9][0-9.]*\).*/\1/p' binder/runtime.txt 2>/dev/null | head -1)"
if [ -n "$ver" ] && command -v "python$ver" >/dev/null; then py="python$ver"; fi
"$py" -m venv "$venv"
export PATH="$venv/bin:$PATH"
python -m pip install -q --upgrade pip

# 1. What repo2docker's base environment brings: Jupyter and ipywidgets (not our requirements' job).
pip install -q 'jupyterlab>=4,<5' 'notebook>=7,<8' 'ipywidgets>=8,<9' nbconvert
# 2. The Python buildpack: pip install -r binder/requirements.txt from the repo root.
pip install -q -r binder/requirements.txt
# 3. postBuild, once, as the build user.
chmod +x binder/postBuild binder/start
./binder/postBuild
# 4. start wraps the server command and must hand over with exec "$@".
grep -qE '^[[:space:]]*exec "\$@"' binder/start || { echo 'binder/start does not end with exec "$@"' >&2; exit 1; }

export TMPDIR="$out" NATS_PIDFILE="$out/nats.pid"
rc=0
binder/start jupyter nbconvert --to notebook --execute --output-dir "$out" \
    --ExecutePreprocessor.timeout=300 notebooks/0*.ipynb || rc=$?
if [ -f "$NATS_PIDFILE" ]; then kill "$(cat "$NATS_PIDFILE")" 2>/dev/null || true; fi
[ "$rc" = 0 ] || { echo "binder smoke: nbconvert failed ($rc)" >&2; exit "$rc"; }

# 5. Every notebook ran top to bottom without an error output.
python - "$out" <<'PY'
import pathlib, sys
import nbformat
out = pathlib.Path(sys.argv[1])
books = sorted(out.glob("0*.ipynb"))
assert books, "no executed notebooks"
for path in books:
    nb = nbformat.read(path, 4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    unrun = [i for i, c in enumerate(code) if c.execution_count is None]
    assert not errors and not unrun, (path.name, errors[:1], unrun)
    print(f"binder smoke: {path.name}: {len(code)} code cells ran, no errors")
PY
echo "binder smoke OK (work dir $work)"
