# Sourced by the tools/*.sh scripts: make .venv (once) with the pinned test
# dependencies, and set PY to its interpreter.
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
# pip_install ARGS: pip install into .venv under a lock (.ci/run runs two
# lanes of these scripts side by side, and two pips must not meet in one venv).
pip_install() {
    flock .venv/.pip.lock "$PY" -m pip install -q "$@"
}
pip_install --upgrade pip
pip_install -r tests/requirements.txt
