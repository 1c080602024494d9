"""cluster/ and jobs/: manifests valid against KubeRay's CRD schemas and Kubernetes' own,
the files they name exist, and the resources they offer fit what the configs ask for.
No cluster is started: these are static checks (a few seconds)."""

from __future__ import annotations

import copy
import functools
import gzip
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
KUBERAY_KINDS = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayService": "rayservices"}
K8S_VERSION = "1.33.0"  # hostUsers (pod user namespaces) is on by default from 1.33
IMAGE_ROOT = "/app"  # where the images hold the repository (cluster/Dockerfile.*)


def schema_dir() -> Path:
    env = os.environ.get("SELFDEBUG_KUBERAY_SCHEMAS")
    return Path(env) if env else REPO.parent / "shared" / "schemas" / "kuberay"


def manifests() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(CLUSTER.glob("kuberay-*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def by_kind(kind: str) -> list[dict]:
    return [d for _, d in manifests() if d["kind"] == kind]


def raycluster_spec() -> dict:
    (rc,) = by_kind("RayCluster")
    return rc["spec"]


def _strict(node):
    """OpenAPI structural schemas prune unknown fields instead of rejecting them; reject
    them here (as `kubectl apply --validate=strict` does) so a misspelt key fails."""
    if isinstance(node, dict):
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for v in node.values():
            _strict(v)
    elif isinstance(node, list):
        for v in node:
            _strict(v)
    return node


@functools.cache
def _crd(path: Path) -> dict:
    # the C loader: the CRDs are megabytes of YAML (the pure-Python one takes ~10 s each)
    return yaml.load(gzip.decompress(path.read_bytes()), Loader=yaml.CSafeLoader)


def crd_schema(kind: str, version: str) -> dict:
    path = schema_dir() / f"ray.io_{KUBERAY_KINDS[kind]}.yaml.gz"
    if not path.is_file():
        pytest.skip(f"KubeRay CRD schema {path.name} absent from {schema_dir()} "
                    f"(set SELFDEBUG_KUBERAY_SCHEMAS to the directory holding it)")
    for v in _crd(path)["spec"]["versions"]:
        if v["name"] == version:
            return _strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
    raise AssertionError(f"{kind}: the CRD has no version {version}")


def test_kuberay_resources_validate_against_the_crd_schemas():
    import jsonschema

    seen = set()
    for name, doc in manifests():
        if doc["kind"] not in KUBERAY_KINDS:
            continue
        seen.add(doc["kind"])
        schema = crd_schema(doc["kind"], doc["apiVersion"].split("/")[1])
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
        assert not errors, f"{name} {doc['kind']}: " + "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
    assert seen == set(KUBERAY_KINDS)


def test_a_misspelt_key_is_caught_by_the_strict_crd_check():
    import jsonschema

    doc = yaml.safe_load(yaml.safe_dump(by_kind("RayCluster")[0]))
    doc["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    schema = crd_schema("RayCluster", "v1")
    assert any("maxReplica" in e.message for e in jsonschema.Draft7Validator(schema)
               .iter_errors(doc))


def _pod_templates(spec: dict) -> list[tuple[str, dict]]:
    out = [("head", spec["headGroupSpec"]["template"])]
    out += [(g["groupName"], g["template"]) for g in spec["workerGroupSpecs"]]
    return out


def test_builtin_kinds_and_pod_templates_validate_against_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    builtins = [(n, d) for n, d in manifests() if d["kind"] not in KUBERAY_KINDS]
    assert {d["kind"] for _, d in builtins} >= {"ServiceAccount", "NetworkPolicy"}
    for _, doc in builtins:
        kv.validate(doc, K8S_VERSION, strict=True)
    specs = [raycluster_spec()] + [d["spec"]["rayClusterSpec"] for d in by_kind("RayJob")] \
        + [d["spec"]["rayClusterConfig"] for d in by_kind("RayService")]
    specs.append({"headGroupSpec": {"template": by_kind("RayJob")[0]["spec"][
        "submitterPodTemplate"]}, "workerGroupSpecs": []})
    for spec in specs:
        for group, tpl in _pod_templates(spec):
            kv.validate({"apiVersion": "v1", "kind": "PodTemplate",
                         "metadata": {"name": group}, "template": tpl}, K8S_VERSION,
                        strict=True)


def test_rayjob_and_rayservice_run_the_raycluster_shape():
    spec = raycluster_spec()
    (job,) = by_kind("RayJob")
    (svc,) = by_kind("RayService")
    assert job["spec"]["rayClusterSpec"] == spec
    assert svc["spec"]["rayClusterConfig"] == spec
    assert job["spec"]["shutdownAfterJobFinishes"] is True  # the job tears its cluster down


def _repo_path(p: str) -> Path:
    assert p.startswith(IMAGE_ROOT + "/"), f"{p}: not under the image's {IMAGE_ROOT}"
    return REPO / p[len(IMAGE_ROOT) + 1:]


def test_entry_points_and_configs_named_exist_and_plan():
    from selfdebug.config import load_config
    from selfdebug.pipeline.config import PipelineConfig, plan

    (job,) = by_kind("RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "python" and _repo_path(argv[1]).is_file()
    config = _repo_path(argv[argv.index("--config") + 1])
    cfg = load_config(PipelineConfig, config)
    cfg.validate()
    for step in plan(cfg):
        step.typed()  # every stage config of the cluster pipeline loads and validates
    from selfdebug.llm.generate import EngineConfig, engine_env

    # the engines' own env vars: ray.data.llm's ray.init(runtime_env=...) fails in a job
    # whose runtime env sets any of them (measured: the eval stage of a submitted pipeline)
    engine_keys = set(engine_env(EngineConfig(model="m", cpu=True)))
    engine_keys |= set(engine_env(EngineConfig(model="m", cpu=False)))
    envs = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "jobs").glob("runtime-env-*"))]
    envs += [yaml.safe_load(job["spec"]["runtimeEnvYAML"])]
    for env in envs:
        assert set(env) <= {"pip", "excludes", "env_vars", "working_dir", "py_modules"}
        assert not engine_keys & set(env.get("env_vars") or {})
    # every jobs/... path mentioned by a manifest, Dockerfile or jobs/ file exists
    texts = [p.read_text() for p in sorted(CLUSTER.iterdir())  # (the serve app's: below)
             if p.is_file() and p.name not in ("kuberay-rayservice.yaml", "README.md")]
    texts += [p.read_text() for p in sorted((REPO / "jobs").rglob("*")) if p.is_file()]
    named = {m for t in texts for m in re.findall(r"\bjobs/[\w./-]+\.(?:py|yaml)\b", t)}
    assert named and not [n for n in sorted(named) if not (REPO / n).exists()
                          and "*" not in n]


def test_rayservice_import_path_and_config_exist():
    (svc,) = by_kind("RayService")
    (app,) = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]
    module, _, attr = app["import_path"].partition(":")
    source = REPO / (module.replace(".", "/") + ".py")
    interfaces = REPO.parent / "INTERFACES.md"
    if interfaces.is_file() and "## 6. Serve app" in interfaces.read_text():
        assert app["import_path"] in interfaces.read_text().split("## 6. Serve app")[1]
    if not source.is_file():
        pytest.skip(f"{source.relative_to(REPO)} is not in this tree yet (the serve branch)")
    assert re.search(rf"^def {attr}\(", source.read_text(), re.M), app["import_path"]
    assert _repo_path(app["args"]["config"]).is_file()


def _cpu(q: str) -> float:
    return float(q[:-1]) / 1000 if str(q).endswith("m") else float(q)


def _groups() -> dict[str, dict]:
    out = {}
    for g in raycluster_spec()["workerGroupSpecs"]:
        (c,) = g["template"]["spec"]["containers"]
        limits = c["resources"]["limits"]
        out[g["groupName"]] = {
            "cpus": float(g["rayStartParams"]["num-cpus"]),
            "gpus": float(g["rayStartParams"].get("num-gpus", 0)),
            "limit_cpus": _cpu(limits["cpu"]), "limit_gpus": float(limits.get("nvidia.com/gpu", 0)),
            "max": g["maxReplicas"], "min": g["minReplicas"], "template": g["template"]}
    return out


def _cluster_demands(config: Path) -> dict[str, float]:
    """Per stage of a pipeline config: GPUs at once, CPUs per GPU worker, sandbox CPUs."""
    from selfdebug.config import load_config
    from selfdebug.pipeline.config import PipelineConfig, plan

    need = {"gpus": 0.0, "cpus_per_gpu_worker": 0.0, "cpus_per_sandbox_actor": 0.0,
            "sandbox_cpus": 0.0}
    for step in plan(load_config(PipelineConfig, config)):
        cfg = step.typed()
        if step.kind in ("synth", "eval"):
            engine = cfg.engine
            need["gpus"] = max(need["gpus"], engine.num_replicas * engine.tensor_parallel_size)
            need["cpus_per_gpu_worker"] = max(need["cpus_per_gpu_worker"],
                                              engine.num_cpus or 1.0)
            per = cfg.sandbox.cpus_per_actor
            count = cfg.sandbox.actors * (2 if step.kind == "synth" else 1)
            need["cpus_per_sandbox_actor"] = max(need["cpus_per_sandbox_actor"], per)
            need["sandbox_cpus"] = max(need["sandbox_cpus"], per * count)
        if step.kind in ("sft", "rl") and cfg.use_gpu:
            need["gpus"] = max(need["gpus"], cfg.num_workers)
            need["cpus_per_gpu_worker"] = max(need["cpus_per_gpu_worker"], cfg.cpus_per_worker)
    return need


def test_kuberay_resources_agree_with_the_cluster_pipeline_config():
    groups = _groups()
    for name, g in groups.items():  # what Ray is told = what the pod gets
        assert g["cpus"] == g["limit_cpus"] and g["gpus"] == g["limit_gpus"], name
    gpu, sandbox = groups["gpu"], groups["cpu-sandbox"]
    assert gpu["min"] == 0 and gpu["gpus"] >= 1  # GPU workers scale up from zero
    need = _cluster_demands(REPO / "jobs/configs/pipeline-cluster.yaml")
    assert need["gpus"] <= gpu["gpus"] * gpu["max"]
    assert need["cpus_per_gpu_worker"] <= gpu["cpus"]
    assert need["cpus_per_sandbox_actor"] <= sandbox["cpus"]
    assert need["sandbox_cpus"] <= sandbox["cpus"] * sandbox["max"]
    assert raycluster_spec()["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_launcher_node_types_fit_the_gpu_configs():
    launcher = yaml.safe_load((CLUSTER / "ray-cluster-aws.yaml").read_text())
    types = launcher["available_node_types"]
    gpu_types = [t for t in types.values() if t["resources"].get("GPU")]
    assert gpu_types and all(t["min_workers"] == 0 for t in gpu_types)
    for config in ("pipeline-cluster", "pipeline-1gpu"):
        need = _cluster_demands(REPO / f"jobs/configs/{config}.yaml")
        assert any(need["cpus_per_gpu_worker"] <= t["resources"]["CPU"]
                   and need["gpus"] <= t["resources"]["GPU"] * t["max_workers"]
                   for t in gpu_types), config


def test_sandbox_pods_are_locked_down():
    spec = raycluster_spec()
    for group, tpl in _pod_templates(spec):
        assert tpl["spec"]["automountServiceAccountToken"] is False, group
    sandbox = _groups()["cpu-sandbox"]["template"]
    (c,) = sandbox["spec"]["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert sandbox["spec"]["hostUsers"] is False  # what bubblewrap needs, without privilege
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/tmp" in mounts  # Ray's session dir on the read-only root filesystem
    role = sandbox["metadata"]["labels"]["selfdebug.io/role"]
    (policy,) = [p for p in by_kind("NetworkPolicy")
                 if p["spec"]["podSelector"]["matchLabels"].get("selfdebug.io/role") == role]
    assert policy["spec"]["policyTypes"] == ["Egress"]
    for rule in policy["spec"]["egress"]:  # only this Ray cluster's pods and DNS
        assert rule.get("to"), rule
        for peer in rule["to"]:
            labels = peer["podSelector"]["matchLabels"]
            assert labels in ({"ray.io/cluster": "selfdebug"}, {"k8s-app": "kube-dns"})


def test_images_and_ray_versions_agree():
    import ray

    assert raycluster_spec()["rayVersion"] == ray.__version__
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (CLUSTER / name).read_text()
        assert re.search(rf"^FROM rayproject/ray:{re.escape(ray.__version__)}-py311",
                         text, re.M), name
        assert "bubblewrap" in text and "/app" in text
    pins = yaml.safe_load((REPO / "jobs/runtime-env-gpu.yaml").read_text())["pip"]["packages"]
    assert f"ray[data,train,serve]=={ray.__version__}" in pins


def test_code_without_git_still_names_its_revision(tmp_path, monkeypatch):
    """A `ray job submit` working dir and the images carry no .git: outputs' metadata
    takes SELFDEBUG_GIT_REVISION (the images' build arg) or the job's metadata, else
    Ray's hash of the code."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(REPO / "selfdebug", tmp_path / "selfdebug",
                    ignore=shutil.ignore_patterns("__pycache__"))

    def revision(**env: str) -> str:
        base = {k: v for k, v in os.environ.items()
                if k not in ("SELFDEBUG_GIT_REVISION", "RAY_JOB_CONFIG_JSON_ENV_VAR")}
        return subprocess.run(
            [sys.executable, "-c", "from selfdebug.metadata import git_revision as g; "
             "print(g())"], cwd=tmp_path, env={**base, "PYTHONPATH": str(tmp_path), **env},
            capture_output=True, text=True, check=True, timeout=60).stdout.strip()

    assert revision() == "unknown"
    assert revision(SELFDEBUG_GIT_REVISION="abc123") == "abc123"
    job = '{"runtime_env": {"working_dir": "gcs://_ray_pkg_c0ffee.zip"}, "metadata": {}}'
    assert revision(RAY_JOB_CONFIG_JSON_ENV_VAR=job) == \
        "unknown (ray working_dir gcs://_ray_pkg_c0ffee.zip)"
    labelled = job.replace('"metadata": {}', '"metadata": {"git_revision": "def456"}')
    assert revision(RAY_JOB_CONFIG_JSON_ENV_VAR=labelled) == "def456"  # --metadata-json
    here = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    if here:  # the checkout itself: git's own answer wins over the variable
        from selfdebug.metadata import git_revision

        monkeypatch.setenv("SELFDEBUG_GIT_REVISION", "abc123")
        assert git_revision().startswith(here)
