# Sourced by the tools/*.sh scripts: make .venv (once) with the pinned test
# dependencies, and set PY to its interpreter.
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q -r tests/requirements.txt
