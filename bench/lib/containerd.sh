# Sourced by bench/shim and scripts/gen-link-order: a private containerd (Debian's 1.6, its own root,
# state and sockets in a temp dir, CRI off) whose PATH finds containerd-shim-wasmcell-v1 in "$work/path",
# and a helper that imports a one-layer image. Needs root.
#
#   containerd_start PREFIX NS SHIM_BINARY   sets $work, $ns; `ctr_` talks to it; cleaned up on EXIT
#   image_import NAME ENTRYPOINT FILE...     imports an image of the FILEs (at /basename) into it
work=""
ns=""
cd_pid=""
cleanup() {
  set +e
  [ -n "$work" ] || return
  if [ -n "$cd_pid" ]; then
    for id in $(ctr_ task ls -q 2>/dev/null); do ctr_ task kill -s SIGKILL "$id" >/dev/null 2>&1; done
    sleep 0.5
    for id in $(ctr_ task ls -q 2>/dev/null); do ctr_ task delete "$id" >/dev/null 2>&1; done
    for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers rm "$id" >/dev/null 2>&1; done
    kill -- -"$cd_pid" 2>/dev/null; wait "$cd_pid" 2>/dev/null
  fi
  # Shims outlive containerd: stop whatever still refers to the temp dir, unmount, remove cgroups.
  for pid in $(grep -l "$work" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do kill -9 "$pid" 2>/dev/null; done
  grep "$work" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  for d in /sys/fs/cgroup/*/"$ns"; do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
ctr_() { ctr --address "$work/containerd.sock" -n "$ns" "$@"; }

containerd_start() {
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  ns=$2
  cat >"$work/config.toml" <<TOML
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
[debug]
  address = "$work/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/opt"
TOML
  mkdir -p "$work/path" "$work/home"
  ln -s "$3" "$work/path/containerd-shim-wasmcell-v1"
  PATH="$work/path:$PATH" WASMCELL_HOME="$work/home" setsid containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
  cd_pid=$!
  for _ in $(seq 300); do [ -S "$work/containerd.sock" ] && break; sleep 0.1; done
  [ -S "$work/containerd.sock" ] || { echo "containerd did not start: $work/containerd.log" >&2; tail "$work/containerd.log" >&2; exit 1; }
}

image_import() {
  local tar
  tar=$(python3 - "$work" "$@" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
work, name, entry, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
d = os.path.join(work, "layout-" + hashlib.sha256(name.encode()).hexdigest()[:12]); os.makedirs(d + "/blobs/sha256")
def blob(b, mt):
    h = hashlib.sha256(b).hexdigest(); open(f"{d}/blobs/sha256/{h}", "wb").write(b)
    return {"mediaType": mt, "digest": "sha256:" + h, "size": len(b)}
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w") as t:
    for path in files:
        data = open(path, "rb").read()
        ti = tarfile.TarInfo(os.path.basename(path)); ti.size = len(data); ti.mode = 0o755; t.addfile(ti, io.BytesIO(data))
raw = raw.getvalue()
layer = blob(gzip.compress(raw), "application/vnd.oci.image.layer.v1.tar+gzip")
config = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": [entry]},
                          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}).encode(),
              "application/vnd.oci.image.config.v1+json")
m = blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "config": config, "layers": [layer]}).encode(), "application/vnd.oci.image.manifest.v1+json")
m["annotations"] = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1"}
open(d + "/index.json", "w").write(json.dumps({"schemaVersion": 2, "manifests": [m]}))
open(d + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
with tarfile.open(d + ".tar", "w") as t:
    for f in os.listdir(d): t.add(os.path.join(d, f), arcname=f)
print(d + ".tar")
PY
  )
  ctr_ images import "$tar" >/dev/null
}
