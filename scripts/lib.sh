# Helpers shared by the scripts (sourced, not run).

# find_python X.Y: print the path of a working Python X.Y interpreter, or fail
# with a message saying how to get one. pyenv's installs come first (the
# newest patch release), then pythonX.Y on PATH (a pyenv shim for a version
# that is not installed fails its own check and is skipped).
find_python() {
  local want="$1" candidate
  for candidate in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$want".* 2>/dev/null | sort -V -r); do
    if "$candidate/bin/python" -c 'import venv' >/dev/null 2>&1; then
      echo "$candidate/bin/python"
      return 0
    fi
  done
  candidate=$(command -v "python$want" 2>/dev/null || true)
  if [ -n "$candidate" ] && "$candidate" -c "import sys, venv; assert sys.version.startswith('$want.')" >/dev/null 2>&1; then
    echo "$candidate"
    return 0
  fi
  echo "Python $want is missing: install it (e.g. 'pyenv install $want') or put python$want on PATH." >&2
  return 1
}

# free_port: print a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# timed LABEL COMMAND...: run COMMAND, then print how long it took; keeps its exit status.
timed() {
  local label="$1" start status
  shift
  start=$(date +%s)
  status=0
  "$@" || status=$?
  local took=$(( $(date +%s) - start ))
  printf '== %s: %dm%02ds (%s)\n' "$label" $((took / 60)) $((took % 60)) \
    "$([ "$status" = 0 ] && echo ok || echo "FAILED, exit $status")"
  echo "$label $took $status" >>"${TIMINGS_FILE:-/dev/null}"
  return "$status"
}
