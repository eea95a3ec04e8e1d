"""kube.read_placements against a tiny fake Kubernetes API server, through the real kubernetes client."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from planner_sim import converge, fresh_view, shape
from valkey_reconciler.kube import ZONE_LABEL, read_placements
from valkey_reconciler.layout import layout
from valkey_reconciler.view import Placement

NS = "db"
CLUSTER = "cache"


class RecordingLog:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict]] = []

    def warning(self, event, **kw):
        self.warnings.append((event, kw))


def status(code: int, reason: str, message: str) -> dict:
    return {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason,
            "message": message}


class FakeKube:
    """The API state served: pod name → node name (None = unscheduled), node name → zone."""

    def __init__(self) -> None:
        self.pods: dict[str, str | None] = {}
        self.nodes: dict[str, str] = {}
        self.forbid_nodes = False
        self.requests: list[str] = []

    def answer(self, path: str) -> tuple[int, dict]:
        self.requests.append(path)
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 6 and parts[4] == "pods":
            name = parts[5]
            if parts[3] != NS or name not in self.pods:
                return 404, status(404, "NotFound", f'pods "{name}" not found')
            spec = {"containers": [{"name": "valkey"}]}
            if self.pods[name]:
                spec["nodeName"] = self.pods[name]
            return 200, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS}, "spec": spec}
        if parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
            name = parts[3]
            if self.forbid_nodes:
                return 403, status(403, "Forbidden", f'nodes "{name}" is forbidden: cannot get resource "nodes"')
            labels = {"kubernetes.io/hostname": name, ZONE_LABEL: self.nodes[name]}
            return 200, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
        return 404, status(404, "NotFound", "the server could not find the requested resource")


@pytest.fixture
def kube():
    fake = FakeKube()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            code, body = fake.answer(self.path.split("?")[0])
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}"))
    fake.core = client.CoreV1Api(api)
    try:
        yield fake
    finally:
        api.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def pod(ordinal: int) -> str:
    return f"valkey-{CLUSTER}-{ordinal}"


def read(kube, count: int, log=None):
    return read_placements(kube.core, CLUSTER, NS, count, log or RecordingLog())


def test_placement_per_ordinal_reads_each_node_once(kube):
    kube.nodes = {"n1": "za", "n2": "za", "n3": "zb"}
    kube.pods = {pod(0): "n1", pod(1): "n2", pod(2): "n3", pod(3): "n1"}
    assert read(kube, 4) == [Placement("n1", "za"), Placement("n2", "za"), Placement("n3", "zb"),
                             Placement("n1", "za")]
    node_reads = [p for p in kube.requests if p.startswith("/api/v1/nodes/")]
    assert sorted(node_reads) == ["/api/v1/nodes/n1", "/api/v1/nodes/n2", "/api/v1/nodes/n3"]


def test_missing_pod_is_none_and_warned_while_others_are_read(kube):
    kube.nodes = {"n1": "za", "n2": "zb"}
    kube.pods = {pod(0): "n1", pod(2): "n2"}
    log = RecordingLog()
    assert read(kube, 3, log) == [Placement("n1", "za"), None, Placement("n2", "zb")]
    assert [(e, kw["ordinal"]) for e, kw in log.warnings] == [("placement_unavailable", 1)]
    assert "404" in log.warnings[0][1]["reason"]


def test_unscheduled_pod_has_no_placement(kube):
    kube.nodes = {"n1": "za"}
    kube.pods = {pod(0): "n1", pod(1): None}
    assert read(kube, 2) == [Placement("n1", "za"), None]


def test_forbidden_nodes_keep_the_node_name_without_zone(kube):
    kube.forbid_nodes = True
    kube.pods = {pod(0): "n1", pod(1): "n2"}
    log = RecordingLog()
    assert read(kube, 2, log) == [Placement("n1", None), Placement("n2", None)]
    assert log.warnings == []


def test_layout_puts_replicas_off_their_primarys_node_from_read_placements(kube):
    # Round-robin would pair ordinal 3 with 0, 4 with 1, 5 with 2: here each pair shares a node.
    kube.nodes = {"n1": "za", "n2": "zb", "n3": "zc"}
    kube.pods = {pod(o): f"n{o % 3 + 1}" for o in range(6)}
    places = dict(enumerate(read(kube, 6)))
    assert all(places.values())
    final, _ = converge(fresh_view(6, places), 3, 1, places)
    assert shape(final) == layout(final, 3, 1, places).shape()
    for primary, _slots, replicas in shape(final):
        assert len(replicas) == 1
        assert places[replicas[0]].node != places[primary].node
