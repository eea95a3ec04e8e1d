"""values.schema.json refuses bad input with a message naming the key (Helm 3 and 4 word it differently), and accepts the forms users write: digit strings from k3s, persistence as a list or null, image objects."""

import re

import pytest

from chart_helpers import containers, env_of, one, render_chart, render_error


def names_key(message: str, dotted: str) -> bool:
    """Helm 3 reports `cluster.masters`, Helm 4 `/cluster/masters`."""
    return dotted in message or "/" + dotted.replace(".", "/") in message


class TestSchemaRejections:
    def test_masters_zero_is_refused(self, helm):
        msg = render_error(helm, {"cluster": {"masters": 0}})
        assert names_key(msg, "cluster.masters")
        assert re.search(r"greater than or equal to 1|minimum: got 0, want 1", msg), msg

    def test_masters_zero_as_string_is_refused(self, helm):
        msg = render_error(helm, None, "--set-string", "cluster.masters=0")
        assert names_key(msg, "cluster.masters")
        assert "pattern" in msg, msg

    def test_negative_replicas_are_refused(self, helm):
        msg = render_error(helm, {"cluster": {"replicasPerMaster": -1}})
        assert names_key(msg, "cluster.replicasPerMaster")
        assert re.search(r"greater than or equal to 0|minimum: got -1, want 0", msg), msg

    def test_non_integer_replicas_are_refused(self, helm):
        msg = render_error(helm, {"cluster": {"replicasPerMaster": 1.5}})
        assert names_key(msg, "cluster.replicasPerMaster")
        assert re.search(r"[Ii]nvalid type|want integer", msg), msg

    def test_non_numeric_replicas_string_is_refused(self, helm):
        msg = render_error(helm, {"cluster": {"replicasPerMaster": "one"}})
        assert names_key(msg, "cluster.replicasPerMaster")
        assert "pattern" in msg, msg

    def test_unknown_persistence_is_refused(self, helm):
        msg = render_error(helm, {"persistence": "foo"})
        assert names_key(msg, "persistence")
        assert "rdb,aof" in msg, msg

    def test_unknown_persistence_list_item_is_refused(self, helm):
        msg = render_error(helm, {"persistence": ["rdb", "foo"]})
        assert names_key(msg, "persistence")

    def test_unknown_top_level_key_is_refused(self, helm):
        msg = render_error(helm, {"replicas": 3})
        assert re.search(r"[Aa]dditional propert(y|ies) '?replicas'? (is )?not allowed", msg), msg

    def test_missing_admin_data_key_with_secret_is_refused(self, helm):
        msg = render_error(helm, {"credentials": {"secret": "mine", "dataKeys": {"adminPassword": None}}})
        assert names_key(msg, "credentials.dataKeys")
        assert "adminPassword" in msg, msg

    def test_missing_client_data_key_with_secret_is_refused(self, helm):
        msg = render_error(helm, None, "--set", "credentials.secret=mine", "--set", "credentials.dataKeys.clientPassword=null")
        assert names_key(msg, "credentials.dataKeys")
        assert "clientPassword" in msg, msg

    def test_empty_data_key_with_secret_is_refused(self, helm):
        msg = render_error(helm, {"credentials": {"secret": "mine", "dataKeys": {"adminPassword": ""}}})
        assert names_key(msg, "credentials.dataKeys.adminPassword")

    def test_name_that_is_not_a_dns_label_is_refused(self, helm):
        msg = render_error(helm, {"name": "My_Cluster"})
        assert names_key(msg, "name")

    def test_name_longer_than_40_characters_is_refused(self, helm):
        msg = render_error(helm, None, "--set", "name=" + "a" * 41)
        assert names_key(msg, "name")


class TestSchemaAccepts:
    def test_digit_strings_from_k3s_set_string_are_integers(self, helm):
        docs = render_chart(helm, None, "--set-string", "cluster.masters=4", "--set-string", "cluster.replicasPerMaster=2")
        assert one(docs, "StatefulSet")["spec"]["replicas"] == 12

    @pytest.mark.parametrize("image", [
        "registry.example:5000/team/valkey:9.1.2",
        {"repository": "registry.example/valkey", "tag": "9.1.2", "pullPolicy": "Always"},
    ])
    def test_image_as_string_or_object(self, helm, image):
        sts = one(render_chart(helm, {"image": image}), "StatefulSet")
        (valkey,) = [c for c in containers(sts) if c["name"] == "valkey"]
        assert valkey["image"] in ("registry.example:5000/team/valkey:9.1.2", "registry.example/valkey:9.1.2")
        assert valkey["imagePullPolicy"] == ("Always" if isinstance(image, dict) else "IfNotPresent")

    def test_image_object_with_digest(self, helm):
        digest = "sha256:" + "a" * 64
        job = one(render_chart(helm, {"cluster": {"reconcilerImage": {"repository": "r/rec", "tag": "0.1.0", "digest": digest}}}),
                  "Job", "valkey-rel-reconcile")
        assert containers(job)[0]["image"] == f"r/rec:0.1.0@{digest}"

    @pytest.mark.parametrize("values, extra, expected", [
        ({"persistence": "rdb,aof"}, (), "rdb,aof"),
        ({"persistence": "rdb"}, (), "rdb"),
        ({"persistence": "aof"}, (), "aof"),
        ({"persistence": ["aof", "rdb"]}, (), "rdb,aof"),
        ({"persistence": None}, (), ""),
        ({"persistence": ""}, (), ""),
        ({}, ("--set", "persistence={rdb,aof}"), "rdb,aof"),
        ({}, ("--set", "persistence=null"), ""),
    ])
    def test_persistence_forms_normalise_to_the_contract_string(self, helm, values, extra, expected):
        sts = one(render_chart(helm, values, *extra), "StatefulSet")
        assert env_of(containers(sts)[0])["VALKEY_PERSISTENCE"]["value"] == expected

    def test_the_chart_works_as_a_subchart_with_global_values(self, helm):
        assert render_chart(helm, {"global": {"imageRegistry": "x"}})
