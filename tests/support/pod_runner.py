"""The kubelet's part for pods a test runs for real: a container of a pod as a local process, as the
kubelet would start it, in a mount namespace of its own (util-linux `unshare`; the tests run as root).

- **Volumes**: configMap and secret volumes (their `items`, `defaultMode` and the pod's `fsGroup`) are
  written from the fake API server's objects to a folder per pod; persistentVolumeClaim and emptyDir
  volumes are empty folders. Each volumeMount (with its subPath) is bound at its mountPath inside the
  namespace only; a mount point missing on this machine is made (empty) and removed at `close()`.
- **Environment**: the container's `env` resolved as the kubelet does (FakeKube.container_env: Secret and
  ConfigMap keys, field references) plus the Service links of the pod's namespace, `$(VAR)` expanded in
  its command and args.
- **Cluster DNS**: /etc/hosts in the namespace maps the Services' names (short, `.ns.svc` and
  `.ns.svc.cluster.local`) to 127.0.0.1, where the tests start what stands behind them.

What it does not do: network namespaces (a pod listens on this machine's loopback), users (the process
runs as root, not as the pod's runAsUser), images (the process runs from this checkout's venv).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

from .fake_kube import FakeKube

MOUNT_SCRIPT = r"""
set -eu
hosts=$1; workdir=$2; shift 2
mount --bind "$hosts" /etc/hosts
while [ "$1" != "--" ]; do
  mount --bind "$1" "$2"; shift 2
done
shift
cd "$workdir"  # after the mounts: the image's working directory may be one of them
exec "$@"
"""


class PodRunner:
    def __init__(self, fake: FakeKube, root: Path, services: dict[str, dict[str, int]]):
        """`services`: namespace → {Service name: port}, each listening on 127.0.0.1."""
        self.fake, self.root, self.services = fake, root, services
        self.made: list[Path] = []  # mount points made on this machine, to remove
        self.processes: list[subprocess.Popen] = []

    def hosts_file(self) -> Path:
        path = self.root / "hosts"
        names = [f"{name}{suffix}" for namespace, services in self.services.items() for name in services
                 for suffix in ("", f".{namespace}.svc", f".{namespace}.svc.cluster.local")]
        path.write_text("127.0.0.1 localhost\n::1 localhost\n" + "".join(f"127.0.0.1 {n}\n" for n in names))
        return path

    def service_links(self, namespace: str) -> dict[str, str]:
        env = {}
        for name, port in self.services.get(namespace, {}).items():
            prefix = name.upper().replace("-", "_")
            env |= {f"{prefix}_SERVICE_HOST": "127.0.0.1", f"{prefix}_SERVICE_PORT": str(port)}
        return env

    def _volume(self, pod: dict, volume: dict) -> Path:
        namespace = pod["metadata"]["namespace"]
        folder = self.root / "volumes" / pod["metadata"]["name"] / volume["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for kind, ref_key in (("configMap", "name"), ("secret", "secretName")):
            if kind in volume:
                source = volume[kind]
                obj = self.fake.get("configmaps" if kind == "configMap" else "secrets", source[ref_key], namespace)
                assert obj is not None, f"{kind} {namespace}/{source[ref_key]} of volume {volume['name']} is missing"
                data = obj.get("data") or {}
                if kind == "secret":
                    data = {k: base64.b64decode(v).decode() for k, v in data.items()}
                items = source.get("items") or [{"key": key, "path": key} for key in data]
                group = pod["spec"].get("securityContext", {}).get("fsGroup")
                for item in items:
                    path = folder / item["path"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(data[item["key"]])
                    path.chmod(item.get("mode", source.get("defaultMode", 0o644)))
                    if group is not None:
                        os.chown(path, -1, group)
        return folder

    def _mount_point(self, path: Path, is_dir: bool) -> None:
        missing = []
        for parent in [path, *path.parents]:
            if parent.exists():
                break
            missing.append(parent)
        for made in reversed(missing):
            if made == path and not is_dir:
                made.touch()
            else:
                made.mkdir()
            self.made.append(made)

    def run(self, pod: dict, container_name: str, log: Path, *, env: dict[str, str] | None = None,
            args: list[str] | None = None, workdir: str | None = None) -> subprocess.Popen:
        """Start `container_name` of `pod`; `env` is added to what the kubelet gives it, `args` replace its
        command and args (the test's own stand-in for the image's binaries, with the pod's $(VAR)s), `workdir`
        is the image's working directory (else the container's workingDir, else this runner's root)."""
        namespace = pod["metadata"]["namespace"]
        container = next(c for c in pod["spec"]["containers"] if c["name"] == container_name)
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        binds = []
        for mount in container.get("volumeMounts", []):
            source = self._volume(pod, volumes[mount["name"]])
            if mount.get("subPath"):
                source = source / mount["subPath"]
            target = Path(mount["mountPath"])
            self._mount_point(target, source.is_dir())
            binds += [str(source), str(target)]
        full_env = {**self.service_links(namespace), **self.fake.container_env(pod, container_name), **(env or {})}
        command = args if args is not None else [*container.get("command", []), *container.get("args", [])]
        command = [re.sub(r"\$\((\w+)\)", lambda m: full_env.get(m.group(1), m.group(0)), part) for part in command]
        workdir = container.get("workingDir") or workdir or str(self.root)
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", MOUNT_SCRIPT, "pod",
                str(self.hosts_file()), workdir, *binds, "--", *command]
        process = subprocess.Popen(argv, env=full_env, cwd=self.root, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def close(self) -> None:
        """Stop each pod as its container's end would: every process in its mount namespace (the hub's
        managed services start sessions of their own), then remove the mount points made here."""
        for process in self.processes:
            members = _namespace_members(process.pid)
            if process.poll() is None:
                os.killpg(process.pid, 15)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
                    process.wait(5)
            for pid in members:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        for made in reversed(self.made):  # with what the pods wrote there (__pycache__ beside a mounted module)
            if made.is_dir():
                shutil.rmtree(made, ignore_errors=True)
            else:
                made.unlink(missing_ok=True)


def _namespace_members(pid: int) -> list[int]:
    """The processes in `pid`'s mount namespace (`unshare` made it and exec'd the pod's command in it);
    none when that is this test's own namespace."""
    try:
        namespace = os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return []
    if namespace == os.readlink("/proc/self/ns/mnt"):
        return []
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(entry / "ns" / "mnt") == namespace:
                members.append(int(entry.name))
        except OSError:
            continue
    return members
