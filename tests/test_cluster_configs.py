"""Offline checks of cluster/: launcher YAMLs, KubeRay manifests, Dockerfile, security settings.

* Launcher YAMLs validate against Ray's own cluster-config schema (private API, wrapped in
  `validate_launcher_config`; Ray is pinned in pyproject.toml).
* KubeRay manifests validate against the KubeRay v1.7.0 CRD openAPIV3Schema from
  ../shared/kuberay-crds (skipped when absent; never copied into the repo), tightened with
  `additionalProperties: false` so misspelt keys fail.
* Versions (Ray, Python, torch, torchvision, MLflow) match pyproject.toml.
* No dashboard on a public address; RAY_AUTH_MODE=token everywhere; no secret values in files.
* Negative tests: deliberately broken copies are rejected.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER_YAMLS = [CLUSTER / "aws.yaml", CLUSTER / "gcp.yaml"]
KUBERAY = CLUSTER / "kuberay"
RAYCLUSTER = KUBERAY / "raycluster.yaml"
RAYJOB = KUBERAY / "rayjob.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
CRD_DIR = Path(os.environ.get("GMPARSE_KUBERAY_CRDS", ROOT.parent / "shared" / "kuberay-crds"))
PUBLIC_HOSTS = ("0.0.0.0", "::", "[::]")


# ---------------------------------------------------------------- pyproject pins


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@functools.cache
def requirements() -> dict[str, Requirement]:
    return {Requirement(r).name: Requirement(r) for r in pyproject()["project"]["dependencies"]}


def pinned_version(name: str) -> str:
    """The exact version a `==X.Y.Z` or `==X.Y.*` pin in pyproject.toml resolves to (`*` -> 0)."""
    specs = list(requirements()[name].specifier)
    pins = [s.version for s in specs if s.operator == "=="]
    assert len(pins) == 1, f"{name} is not pinned with == in pyproject.toml: {specs}"
    return pins[0].replace(".*", ".0")


def assert_allowed(name: str, version: str) -> None:
    assert Version(version) in requirements()[name].specifier, (name, version, str(requirements()[name]))


def python_tag() -> str:
    """`py311` from requires-python `>=3.11,<3.12`."""
    m = re.search(r">=\s*3\.(\d+)", pyproject()["project"]["requires-python"])
    assert m
    return f"py3{m.group(1)}"


# ---------------------------------------------------------------- launcher configs


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-1.4 MB: the C loader is ~10x faster


def load_yaml(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_LOADER)


def validate_launcher_config(config: dict) -> dict:
    """Ray's own offline validation of a cluster-launcher config; returns the merged config.

    `prepare_config` fills in the provider's defaults.yaml, `validate_config` runs the JSON schema
    (`ray/autoscaler/ray-schema.json`, unknown keys rejected) plus the semantic checks (head type
    among node types, min_workers within max_workers). Private Ray API: keep every use here.
    """
    from ray.autoscaler._private.util import prepare_config, validate_config

    merged = prepare_config(copy.deepcopy(config))
    validate_config(merged)
    return merged


def all_strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in all_strings(k) + all_strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in all_strings(v)]
    return []


def start_commands(cfg: dict) -> list[str]:
    return [" ".join(c.split()) for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]]


@pytest.mark.parametrize("path", LAUNCHER_YAMLS, ids=lambda p: p.name)
def test_launcher_config_validates_with_ray_schema(path):
    cfg = load_yaml(path)
    merged = validate_launcher_config(cfg)
    types = merged["available_node_types"]
    head = merged["head_node_type"]
    workers = {k: v for k, v in types.items() if k != head}
    gpu = [v for v in workers.values() if v.get("resources", {}).get("GPU", 0) >= 1]
    cpu = [v for v in workers.values() if not v.get("resources", {}).get("GPU")]
    # CPU head, autoscaling GPU workers (scale from zero), a CPU worker type for the collection build.
    assert not types[head].get("resources", {}).get("GPU"), "head must be a CPU node"
    assert gpu and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu)
    assert cpu and all(t["max_workers"] >= 1 for t in cpu)
    assert merged["idle_timeout_minutes"] > 0
    assert merged["max_workers"] >= max(t["max_workers"] for t in workers.values())


@pytest.mark.parametrize("path", LAUNCHER_YAMLS, ids=lambda p: p.name)
def test_launcher_image_storage_and_tracking(path):
    cfg = load_yaml(path)
    scheme = {"aws.yaml": "s3://", "gcp.yaml": "gs://"}[path.name]
    assert cfg["docker"]["image"] and "gmparse" in cfg["docker"]["image"]
    assert "ray-ml" not in cfg["docker"]["image"]
    env = dict(
        o.split(None, 1)[1].split("=", 1) for o in cfg["docker"]["run_options"] if o.startswith("--env ")
    )
    assert env["GMPARSE_STORAGE"].startswith(scheme)
    assert env["GMPARSE_COLLECTION"].startswith(scheme)
    assert env["MLFLOW_TRACKING_URI"].startswith(("http://", "https://"))
    assert env["RAY_AUTH_MODE"] == "token"


@pytest.mark.parametrize("path", LAUNCHER_YAMLS, ids=lambda p: p.name)
def test_launcher_setup_pins_match_pyproject(path):
    setup = " ".join(load_yaml(path)["setup_commands"])
    ray_v, torch_v, tv_v = pinned_version("ray"), pinned_version("torch"), pinned_version("torchvision")
    assert f"=={ray_v}" in setup and f"ray.__version__ == '{ray_v}'" in setup
    assert f'"torch=={torch_v}"' in setup and f"'{torch_v}'" in setup
    assert f'"torchvision=={tv_v}"' in setup and f"'{tv_v}'" in setup
    (mlflow_req,) = re.findall(r'"(mlflow[^"]*)"', setup)
    assert Requirement(mlflow_req).specifier == requirements()["mlflow"].specifier
    assert "(3, 11)" in setup and python_tag() == "py311"


def launcher_security_problems(merged: dict) -> list[str]:
    """Security problems of a (prepared) launcher config; [] when fine."""
    problems = []
    head_cmd = " ".join(" ".join(c.split()) for c in merged["head_start_ray_commands"])
    # Dashboard/Jobs API on loopback only (Ray's provider defaults would bind 0.0.0.0).
    if "--dashboard-host=127.0.0.1" not in head_cmd:
        problems.append("head does not bind the dashboard to 127.0.0.1")
    for s in all_strings(merged):
        for host in PUBLIC_HOSTS:
            if f"--dashboard-host={host}" in s or f"--dashboard-host {host}" in s:
                problems.append(f"dashboard on public address {host}: {s[:80]}")
    # Token auth on every node; the token comes from the secret store, never a literal.
    starts = [c for c in start_commands(merged) if "ray start" in c]
    if len(starts) < 2:
        problems.append("expected a head and a worker `ray start`")
    for c in starts:
        if "RAY_AUTH_MODE=token" not in c:
            problems.append(f"no RAY_AUTH_MODE=token: {c[:80]}")
        if 'RAY_AUTH_TOKEN="$(gmparse-secret ' not in c or "&&" not in c:
            # `&&`: a failed secret lookup must stop the node from starting
            problems.append(f"token not read from the secret store: {c[:80]}")
    return problems


@pytest.mark.parametrize("path", LAUNCHER_YAMLS, ids=lambda p: p.name)
def test_launcher_security(path):
    merged = validate_launcher_config(load_yaml(path))
    assert launcher_security_problems(merged) == []
    assert_no_secret_values(path.read_text())


# ---------------------------------------------------------------- KubeRay


def tighten(schema):
    """Add additionalProperties: false wherever `properties` exist and unknown fields aren't allowed."""
    if isinstance(schema, dict):
        out = {k: tighten(v) for k, v in schema.items()}
        if (
            "properties" in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in out
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [tighten(v) for v in schema]
    return schema


@functools.cache
def crd_validator(kind_file: str):
    jsonschema = pytest.importorskip("jsonschema")
    path = CRD_DIR / kind_file
    if not path.exists():
        pytest.skip(f"KubeRay CRD not found at {path}")
    crd = load_yaml(path)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = tighten(version["schema"]["openAPIV3Schema"])
    # metadata is `type: object` in the CRD; let the real ObjectMeta keys through.
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def crd_errors(manifest: dict) -> list[str]:
    kind_file = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}[manifest["kind"]]
    errors = crd_validator(kind_file).iter_errors(manifest)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def cluster_spec(manifest: dict) -> dict:
    return manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]


def containers(spec: dict):
    for c in spec["headGroupSpec"]["template"]["spec"]["containers"]:
        yield "head", c
    for g in spec.get("workerGroupSpecs", []):
        for c in g["template"]["spec"]["containers"]:
            yield g["groupName"], c


MANIFESTS = [RAYCLUSTER, RAYJOB]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifest_validates_against_crd(path):
    manifest = load_yaml(path)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert crd_errors(manifest) == []


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifest_contents(path):
    manifest = load_yaml(path)
    spec = cluster_spec(manifest)
    assert spec["rayVersion"] == pinned_version("ray")
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"
    for _, c in containers(spec):
        assert c.get("image") and "gmparse" in c["image"] and "ray-ml" not in c["image"]
    gpu_groups = [
        g
        for g in spec["workerGroupSpecs"]
        if any(
            "nvidia.com/gpu" in c["resources"].get("limits", {}) for c in g["template"]["spec"]["containers"]
        )
    ]
    assert gpu_groups, "needs a GPU worker group"
    for g in gpu_groups:
        assert g["minReplicas"] == 0 and g["maxReplicas"] >= 1
        (c,) = g["template"]["spec"]["containers"]
        req, lim = c["resources"]["requests"], c["resources"]["limits"]
        assert int(req["nvidia.com/gpu"]) >= 1 and req["nvidia.com/gpu"] == lim["nvidia.com/gpu"]
        assert req["cpu"] and req["memory"] and lim["cpu"] and lim["memory"]
    if manifest["kind"] == "RayJob":
        js = manifest["spec"]
        assert "workflows/cv_folds.py" in js["entrypoint"]
        assert js["shutdownAfterJobFinishes"] is True
        runtime_env = yaml.safe_load(js["runtimeEnvYAML"])
        assert isinstance(runtime_env, dict)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kuberay_security(path):
    manifest = load_yaml(path)
    spec = cluster_spec(manifest)
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    # Never exposed outside the cluster: ClusterIP service, no Ingress.
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    for _, c in containers(spec):
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        # Secrets only by reference.
        for e in env.values():
            if re.search(r"TOKEN|PASSWORD|SECRET|KEY", e["name"]):
                assert "valueFrom" in e and "value" not in e, e
    for params in [head["rayStartParams"]] + [g["rayStartParams"] for g in spec["workerGroupSpecs"]]:
        # The dashboard listens on the pod network (the operator and submitter need it) -- only with
        # token auth on, and never via a public Service.
        assert (
            params.get("dashboard-host", "0.0.0.0") not in PUBLIC_HOSTS
            or spec["authOptions"]["mode"] == "token"
        )
    assert_no_secret_values(path.read_text())


def test_kuberay_config_map_has_shared_storage_and_tracking():
    cm = load_yaml(KUBERAY / "config.yaml")
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "gmparse-config"
    data = cm["data"]
    assert data["GMPARSE_STORAGE"].startswith(("s3://", "gs://"))
    assert data["GMPARSE_COLLECTION"].startswith(("s3://", "gs://"))
    assert data["MLFLOW_TRACKING_URI"].startswith(("http://", "https://"))
    assert not any(re.search(r"TOKEN|PASSWORD|SECRET", k) for k in data)
    for path in MANIFESTS:
        for _, c in containers(cluster_spec(load_yaml(path))):
            refs = [e.get("configMapRef", {}).get("name") for e in c.get("envFrom", [])]
            assert "gmparse-config" in refs


def test_rayjob_cluster_matches_raycluster():
    assert cluster_spec(load_yaml(RAYJOB)) == cluster_spec(load_yaml(RAYCLUSTER))


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_versions_match_pyproject():
    check_dockerfile(DOCKERFILE.read_text())


def check_dockerfile(text: str) -> None:
    args = dict(re.findall(r"^ARG (\w+)=\"?([^\"\n]*)\"?$", text, re.M))
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.M)
    ray_v = pinned_version("ray")
    assert base == f"rayproject/ray:{ray_v}-{python_tag()}-gpu"
    assert "ray-ml" not in base
    assert args["RAY_VERSION"] == ray_v
    assert_allowed("ray", args["RAY_VERSION"])
    assert args["TORCH_VERSION"] == pinned_version("torch") == "2.14.1"
    assert args["TORCHVISION_VERSION"] == pinned_version("torchvision") == "0.29.1"
    assert Requirement(args["MLFLOW_SPEC"]).specifier == requirements()["mlflow"].specifier
    for arg in ("RAY_VERSION", "TORCH_VERSION", "TORCHVISION_VERSION", "MLFLOW_SPEC"):
        assert "${" + arg + "}" in text, f"{arg} declared but not used"
    assert "sys.version_info[:2] == (3, 11)" in text
    assert_no_secret_values(text)


# ---------------------------------------------------------------- secrets helper


def test_get_secret_helper(monkeypatch, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gmparse_get_secret", CLUSTER / "get_secret.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setenv("GMPARSE_TEST_SECRET", "s3cr3t\n")
    assert mod.main(["GMPARSE_TEST_SECRET", "--backend", "env"]) == 0
    assert capsys.readouterr().out == "s3cr3t"
    (tmp_path / "tok").write_text("abc")
    assert mod.main([str(tmp_path / "tok"), "--backend", "file"]) == 0
    assert capsys.readouterr().out == "abc"
    monkeypatch.delenv("GMPARSE_TEST_SECRET")
    assert mod.main(["GMPARSE_TEST_SECRET", "--backend", "env"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "empty" in captured.err


def assert_no_secret_values(text: str) -> None:
    """No literal tokens/passwords/keys committed in a config."""
    patterns = [
        r"RAY_AUTH_TOKEN\s*[=:]\s*['\"]?[A-Za-z0-9]{16,}",
        r"PASSWORD\s*[=:]\s*['\"]?[^\s'\"$]{6,}",
        r"AKIA[0-9A-Z]{16}",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
        r"admin/password1234",
    ]
    for p in patterns:
        assert not re.search(p, text), f"secret-looking value matches {p!r}"


# ---------------------------------------------------------------- negative tests (checks can fail)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c.update(idle_timeout_minuts=5), "idle_timeout_minuts"),
        (lambda c: c.update(head_node_type="head_gpu"), "head_node_type"),
        (lambda c: c["available_node_types"]["gpu_worker"].update(max_worker=4), "max_worker"),
        (lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=20), "min_workers"),
    ],
    ids=["typo-top", "bad-head-type", "typo-node-type", "min-over-max"],
)
@pytest.mark.parametrize("path", LAUNCHER_YAMLS, ids=lambda p: p.name)
def test_broken_launcher_config_rejected(path, mutate, expected):
    broken = load_yaml(path)
    mutate(broken)
    with pytest.raises(Exception) as err:
        validate_launcher_config(broken)
    assert expected in str(err.value) or "max_workers" in str(err.value)


@pytest.mark.parametrize("path", LAUNCHER_YAMLS, ids=lambda p: p.name)
def test_insecure_launcher_config_rejected(path):
    cfg = load_yaml(path)
    public = copy.deepcopy(cfg)
    public["head_start_ray_commands"][-1] = public["head_start_ray_commands"][-1].replace(
        "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"
    )
    no_auth = copy.deepcopy(cfg)
    no_auth["worker_start_ray_commands"][-1] = "ray start --address=$RAY_HEAD_IP:6379"
    for broken in (public, no_auth):
        merged = validate_launcher_config(broken)  # schema-valid, but insecure:
        assert launcher_security_problems(merged)
    assert_no_secret_values(cfg["head_start_ray_commands"][-1])
    with pytest.raises(AssertionError):
        assert_no_secret_values("RAY_AUTH_TOKEN=0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda s: s["autoscalerOptions"].update(version="v3"), "autoscalerOptions/version"),
        (lambda s: s.update(enableInTreeAutoscalling=True), "enableInTreeAutoscalling"),
        (lambda s: s["workerGroupSpecs"][0].update(maxReplica=3), "maxReplica"),
        (lambda s: s["authOptions"].update(mode="tokens"), "authOptions/mode"),
        (lambda s: s["headGroupSpec"].pop("template"), "template"),
        (
            lambda s: s["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].update(
                imagePullPolicyy="Always"
            ),
            "imagePullPolicyy",
        ),
    ],
    ids=[
        "autoscaler-v3",
        "typo-spec",
        "typo-worker-group",
        "bad-auth-mode",
        "no-head-template",
        "typo-container",
    ],
)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_broken_kuberay_manifest_rejected(path, mutate, expected):
    broken = load_yaml(path)
    mutate(cluster_spec(broken))
    errors = crd_errors(broken)
    assert errors and any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    "old, new",
    [
        ("ARG TORCH_VERSION=2.14.1", "ARG TORCH_VERSION=2.13.0"),
        ("FROM rayproject/ray:2.60.0-py311-gpu", "FROM rayproject/ray-ml:2.60.0-py311-gpu"),
        ("FROM rayproject/ray:2.60.0-py311-gpu", "FROM rayproject/ray:2.59.0-py311-gpu"),
        ('ARG MLFLOW_SPEC="mlflow>=3.13,<4"', 'ARG MLFLOW_SPEC="mlflow>=2.0"'),
    ],
    ids=["torch", "ray-ml", "ray-version", "mlflow"],
)
def test_broken_dockerfile_versions_rejected(old, new):
    text = DOCKERFILE.read_text()
    assert old in text
    with pytest.raises(AssertionError):
        check_dockerfile(text.replace(old, new))
