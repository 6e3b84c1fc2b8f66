# Sourced by benchmarks: start_registry DIR starts Debian's docker-registry (distribution 2.8) on a free
# loopback port with its storage under DIR/registry, its access log in DIR/access.log and its own log in
# DIR/registry.log; sets registry_port and registry_pid (a process group: stop_registry kills it whole).
start_registry() {
  local dir=$1
  registry_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$dir/registry.yml" <<YML
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/registry
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$registry_port
  secret: wasmcell-bench
YML
  # Not a process-group leader here (no job control), so setsid makes the registry one without forking:
  # its pid is its group id, and stop_registry kills the whole group.
  setsid docker-registry serve "$dir/registry.yml" >"$dir/access.log" 2>"$dir/registry.log" &
  registry_pid=$!
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$registry_port/v2/")" = 200 ] && return 0
    kill -0 "$registry_pid" 2>/dev/null || { cat "$dir/registry.log" >&2; echo "docker-registry exited" >&2; return 1; }
    sleep 0.1
  done
  cat "$dir/registry.log" >&2
  echo "docker-registry did not answer" >&2
  return 1
}

stop_registry() {
  if [ -n "${registry_pid:-}" ]; then
    kill -- -"$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
    registry_pid=
  fi
}
