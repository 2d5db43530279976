"""Pod Security of the team namespaces: the admission labels, and the Baseline profile as a check.

Team namespaces enforce the Pod Security Standards' Baseline profile (Pod Security Admission,
built into the API server): whatever a user puts into a RayService or SparkApplication, or gets an
operator to create, no pod there runs privileged, shares the node's namespaces, mounts a host path
or adds capabilities beyond Baseline's list. Restricted is audited and warned about, not enforced
(notebook images run as their own user but do not all set what Restricted asks for). Enforcement is
pinned to the Kubernetes version the manifests are validated for, so an upgrade of the cluster does
not tighten it unannounced.

`baseline_problems(pod_spec)` implements the Baseline controls as the Kubernetes documentation lists
them (https://kubernetes.io/docs/concepts/security/pod-security-standards/#baseline, v1.33), for
tests of everything the platform creates in a team namespace. The API server's admission plugin is
what enforces them; no maintained Python implementation exists on PyPI (the reference one is Go,
k8s.io/pod-security-admission), so this is a small one over a plain pod spec (camelCase dict).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .validation import KUBERNETES_VERSION

ENFORCE = "baseline"
AUDIT = WARN = "restricted"


def namespace_labels() -> dict[str, str]:
    return {"pod-security.kubernetes.io/enforce": ENFORCE,
            "pod-security.kubernetes.io/enforce-version": f"v{KUBERNETES_VERSION}",
            "pod-security.kubernetes.io/audit": AUDIT,
            "pod-security.kubernetes.io/warn": WARN}


# Baseline's "Capabilities": what may be added (the container runtimes' defaults).
BASELINE_CAPABILITIES = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                                   "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
# "Sysctls": the safe set (the last five since Kubernetes 1.29, ip_local_reserved_ports since 1.27).
SAFE_SYSCTLS = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                          "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                          "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                          "net.ipv4.tcp_keepalive_probes"})
# "SELinux": types a pod may ask for (container_engine_t since 1.31); user and role must stay unset.
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
SECCOMP_TYPES = APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for i, container in enumerate(spec.get(kind) or []):
            yield f"spec.{kind}[{i}]", container


def _security_contexts(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield "spec.securityContext", spec.get("securityContext") or {}
    for where, container in _containers(spec):
        yield f"{where}.securityContext", container.get("securityContext") or {}


def baseline_problems(spec: Mapping[str, Any], annotations: Mapping[str, str] | None = None) -> list[str]:
    """Every Baseline control `spec` (a Pod's spec) breaks, one line each naming the field; [] when it
    passes. `annotations`: the pod's, for the AppArmor annotations of Kubernetes before 1.30."""
    problems: list[str] = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"spec.{field}: true (host namespaces are not allowed)")
    for i, volume in enumerate(spec.get("volumes") or []):
        if "hostPath" in volume:
            problems.append(f"spec.volumes[{i}].hostPath: host path volumes are not allowed")
    for where, context in _security_contexts(spec):
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{where}.windowsOptions.hostProcess: true (HostProcess is not allowed)")
        if context.get("privileged"):
            problems.append(f"{where}.privileged: true (privileged containers are not allowed)")
        added = set((context.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if added:
            problems.append(f"{where}.capabilities.add: {sorted(added)} (allowed: {', '.join(sorted(BASELINE_CAPABILITIES))})")
        selinux = context.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES:
            problems.append(f"{where}.seLinuxOptions.type: {selinux['type']!r} (allowed: "
                            f"{', '.join(sorted(t for t in SELINUX_TYPES if t))})")
        for key in ("user", "role"):
            if selinux.get(key):
                problems.append(f"{where}.seLinuxOptions.{key}: {selinux[key]!r} (must not be set)")
        for key, allowed in (("seccompProfile", SECCOMP_TYPES), ("appArmorProfile", APPARMOR_TYPES)):
            kind = (context.get(key) or {}).get("type")
            if kind is not None and kind not in allowed:
                problems.append(f"{where}.{key}.type: {kind!r} (allowed: {', '.join(sorted(allowed))})")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{where}.procMount: {context['procMount']!r} (allowed: Default)")
    for where, container in _containers(spec):
        for j, port in enumerate(container.get("ports") or []):
            if port.get("hostPort"):
                problems.append(f"{where}.ports[{j}].hostPort: {port['hostPort']} (host ports are not allowed)")
    for i, sysctl in enumerate((spec.get("securityContext") or {}).get("sysctls") or []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"spec.securityContext.sysctls[{i}].name: {sysctl.get('name')!r} (not a safe sysctl)")
    for key, value in (annotations or {}).items():
        if key.startswith(APPARMOR_ANNOTATION) and value != "runtime/default" and not value.startswith("localhost/"):
            problems.append(f"metadata.annotations[{key!r}]: {value!r} (allowed: runtime/default, localhost/*)")
    return problems
