"""Turn a directory rendered by `hearth deploy kubernetes` into what
`podman kube play` runs, changing only what podman does not do itself:

- a Deployment of N replicas becomes N Pods (`NAME-0`, `NAME-1`, ...) with
  the Deployment's pod template (podman plays one pod per Deployment);
- Services are not implemented by podman: every pod gets `hostAliases`
  that give each Service's name the addresses of its pods, as a headless
  Service's DNS name does, and the pods get static addresses (`--ip`, in
  the order the pods are written);
- the API keys' `secretKeyRef` becomes the value from `api-keys.env`
  (kustomize's secretGenerator is not run);
- container ports are not declared (podman 4.3 would publish each on the
  host, where they collide; the pods are reached at their addresses) and
  the probes are dropped (podman runs an httpGet probe as `curl` inside
  the container, and the image has no curl): the caller waits on `/readyz`;
- HorizontalPodAutoscalers, PodDisruptionBudgets and NetworkPolicies have
  no meaning on one host and are left out (listed on stderr).

Usage: kube_play.py RENDERED_DIR SUBNET_PREFIX OUT.yaml
  (SUBNET_PREFIX like 10.89.77: pods get .10, .11, ... in order)
Prints the pods' addresses, one `NAME IP` per line.
"""

import copy
import sys
from pathlib import Path

import yaml


def main() -> None:
    rendered, prefix, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    kustomization = yaml.safe_load((rendered / "kustomization.yaml").read_text())
    keys = dict(
        line.split("=", 1)
        for line in (rendered / "api-keys.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    objects = []
    for name in kustomization["resources"]:
        objects.extend(o for o in yaml.safe_load_all((rendered / name).read_text()) if o)

    kept, pods, skipped = [], [], []
    for obj in objects:
        kind = obj["kind"]
        if kind in ("ConfigMap", "PersistentVolumeClaim"):
            kept.append(obj)
        elif kind == "Deployment":
            for i in range(obj["spec"]["replicas"]):
                pod = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{obj['metadata']['name']}-{i}",
                        "labels": obj["spec"]["template"]["metadata"]["labels"],
                        "annotations": obj["spec"]["template"]["metadata"].get("annotations", {}),
                    },
                    "spec": copy.deepcopy(obj["spec"]["template"]["spec"]),
                }
                pods.append(pod)
        else:
            skipped.append(f"{kind}/{obj['metadata']['name']}")

    # Addresses in pod order; a Service's name resolves to its pods'.
    address = {pod["metadata"]["name"]: f"{prefix}.{10 + i}" for i, pod in enumerate(pods)}
    services = {}
    for pod in pods:
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        services.setdefault(f"hearth-{component}", []).append(address[pod["metadata"]["name"]])
    aliases = [
        {"ip": ip, "hostnames": [name]} for name, ips in sorted(services.items()) for ip in ips
    ]
    for pod in pods:
        pod["spec"]["hostAliases"] = aliases
        for container in pod["spec"]["containers"]:
            for field in ("ports", "startupProbe", "readinessProbe", "livenessProbe"):
                container.pop(field, None)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    env.pop("valueFrom")
                    env["value"] = keys[ref["key"]]
    out.write_text(yaml.safe_dump_all(kept + pods, sort_keys=False))
    print("left out (no meaning on one host): " + ", ".join(skipped), file=sys.stderr)
    for name, ip in address.items():
        print(name, ip)


if __name__ == "__main__":
    main()
