//! `hearth deploy kubernetes`: the same [`plan`] that `hearth up` starts,
//! rendered as plain Kubernetes YAML and a `kustomization.yaml`, so that
//! each process of a topology becomes a Deployment that scales on its own.
//!
//! What a process of the plan becomes, decided from the roles table:
//!
//! - A role that serves the document store (`all`, `rag`) is the one writer
//!   of its store: `replicas: 1`, `strategy: Recreate`, and the
//!   `ReadWriteOnce` claim `hearth-data` at `/data`. Asking for more than
//!   one replica of it is an error.
//! - Every other role is stateless: a HorizontalPodAutoscaler (LLM roles on
//!   `hearth_queue_depth`, requests waiting for the worker beyond its
//!   running slots; `embed` on `hearth_requests_in_flight`; the gateway on
//!   CPU) and a PodDisruptionBudget; with `--keda`, a KEDA `ScaledObject`
//!   on the same queries instead of the HPA.
//! - A process another one reaches (its `{NAME}` in the plan's arguments)
//!   gets a headless Service: hearth's clients resolve every replica's
//!   address and balance requests themselves (`engine::replicas`), which a
//!   Service's per-connection balancing would not. The front doors get a
//!   plain ClusterIP Service, and the NetworkPolicy lets only them be
//!   reached from outside hearth's pods (and the metrics namespace).
//! - Model processes are Guaranteed QoS: CPU request = limit = `threads`,
//!   memory request = limit sized from the model files ([`memory_mib`]).
//!
//! Every process reads one `hearth.toml` (a ConfigMap: the config given,
//! with the paths the container sees) and shares the API keys (a Secret
//! that kustomize makes from `api-keys.env`: written from the config's keys,
//! or by the operator when it has none, so that no key ships in a
//! manifest).
//! Nothing is written when an input is wrong: a missing model file, a `rag`
//! replica count other than 1, or an output directory holding other files.

use super::plan::{plan, Part, Topology};
use crate::config::{is_remote, Config, FineTunedModel, Role};
use crate::error::{Error, Result};
use crate::roles::Capability;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The first line of every file this command writes; a directory holding
/// any other file is not overwritten.
pub const HEADER: &str = "# Rendered by `hearth deploy kubernetes`";

/// The port every container listens on.
pub const PORT: u16 = 8080;
/// Where the container finds the config, the models and the store.
const CONFIG_DIR: &str = "/etc/hearth";
const MODELS_DIR: &str = "/models";
const DATA_DIR: &str = "/data";
/// The image's non-root user (scripts/build-image.sh creates it).
const USER_ID: u32 = 10001;
/// The Secret holding the API keys every process of the topology shares,
/// and the file kustomize makes it from.
const SECRET: &str = "hearth-api-keys";
pub const KEYS_FILE: &str = "api-keys.env";

/// Where the containers' `/models` comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelsFrom {
    /// A `ReadOnlyMany` claim of that name, filled by the operator.
    Claim(String),
    /// A directory on the node (single-node clusters, `podman kube play`).
    HostPath(PathBuf),
    /// The image itself (the tag with the default models baked in).
    Image,
}

/// What to render, besides the config.
#[derive(Debug, Clone)]
pub struct Options {
    pub topology: Topology,
    pub image: String,
    /// Replicas per process name (`generate` names every `generate` process,
    /// `rag-generator` only that one); default 1.
    pub replicas: Vec<(String, u32)>,
    /// The autoscalers' ceiling (at least the replicas asked for).
    pub max_replicas: u32,
    /// CPUs (and so threads) per process name; default 2 for a process
    /// that runs a model, 1 for a `rag` process with remote models.
    pub cpus: Vec<(String, u32)>,
    /// The local directory whose contents the containers see at `/models`;
    /// every model the config names must lie under it.
    pub models_dir: PathBuf,
    pub models_from: ModelsFrom,
    /// `Some(prometheus URL)`: KEDA ScaledObjects instead of HPAs.
    pub keda: Option<String>,
    /// The namespace Prometheus scrapes from (let in by the NetworkPolicy).
    pub metrics_namespace: String,
}

/// One process of the topology, as deployed.
struct Process {
    part: Part,
    object: String,
    replicas: u32,
    /// Serves the document store: one replica, the data claim.
    stateful: bool,
    /// Another process reaches it: a headless Service.
    internal: bool,
    front_door: bool,
    /// Loads model files (`/models` mounted).
    has_models: bool,
    /// Runs an LLM worker: scaled on the generation queue.
    llm: bool,
    cpus: u32,
    memory_mib: u64,
}

/// Render every file, by name. Checks everything; writes nothing.
pub fn render(config: &Config, options: &Options) -> Result<BTreeMap<String, String>> {
    let models_dir = options.models_dir.canonicalize().map_err(|e| {
        Error::InvalidInput(format!(
            "--models-dir {}: {e} (the directory the containers see at {MODELS_DIR})",
            options.models_dir.display()
        ))
    })?;
    let in_container = container_config(config, &models_dir)?;
    let toml_text = toml::to_string(&in_container)
        .map_err(|e| Error::InvalidInput(format!("the config does not serialise: {e}")))?;
    let parts = plan(options.topology, 0);
    check_names(&parts, &options.replicas, "--replicas")?;
    check_names(&parts, &options.cpus, "--cpus")?;
    let (rag_door, fine_tuned_door) = options.topology.front_doors();
    let mut processes = Vec::new();
    for part in &parts {
        let stateful = part.role.may_serve(Capability::Documents);
        let replicas = lookup(&options.replicas, part).unwrap_or(1);
        if replicas < 1 {
            return Err(Error::InvalidInput(format!(
                "--replicas {}={replicas}: a process needs at least one replica",
                part.name
            )));
        }
        if stateful && replicas != 1 {
            return Err(Error::InvalidInput(format!(
                "--replicas {}={replicas}: the `{}` process writes the document store and must stay at 1 replica (scale the model processes instead: the per-model topology)",
                part.name, part.name
            )));
        }
        let (models, llm_workers) = models_of(part, config);
        let mut bytes = 0u64;
        for model in &models {
            bytes += model_bytes(Path::new(model))?;
        }
        let has_models = !models.is_empty();
        let cpus = lookup(&options.cpus, part).unwrap_or(if has_models { 2 } else { 1 });
        if cpus < 1 {
            return Err(Error::InvalidInput(format!(
                "--cpus {}={cpus}: a process needs at least one CPU",
                part.name
            )));
        }
        let internal = parts
            .iter()
            .any(|p| p.args.iter().any(|a| a == &format!("{{{}}}", part.name)));
        processes.push(Process {
            object: format!("hearth-{}", part.name),
            replicas,
            stateful,
            internal,
            front_door: [rag_door, fine_tuned_door].contains(&part.name),
            has_models,
            llm: llm_workers > 0,
            cpus,
            memory_mib: if part.role == Role::Gateway {
                256
            } else {
                memory_mib(bytes, llm_workers, config.limits.prefix_cache_mb as u64)
            },
            part: part.clone(),
        });
    }
    let grace = config.limits.request_timeout_s.ceil() as u64 + 15;
    let config_hash = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(toml_text.as_bytes());
        digest
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };

    let mut files = BTreeMap::new();
    let mut resources = Vec::new();
    let mut add = |files: &mut BTreeMap<String, String>, name: &str, objects: Vec<Value>| {
        resources.push(name.to_string());
        files.insert(name.to_string(), yaml(&objects));
    };
    add(
        &mut files,
        "config.yaml",
        vec![json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta("hearth-config", None),
            "data": { "hearth.toml": toml_text },
        })],
    );
    if !config.api_keys.is_empty() {
        files.insert(KEYS_FILE.into(), keys_file(&config.api_keys)?);
    }
    let mut claims = Vec::new();
    if processes.iter().any(|p| p.stateful) {
        claims.push(claim("hearth-data", "ReadWriteOnce", "10Gi"));
    }
    if let ModelsFrom::Claim(name) = &options.models_from {
        claims.push(claim(
            name,
            "ReadOnlyMany",
            &format!("{}Gi", dir_gib(&models_dir)),
        ));
    }
    if !claims.is_empty() {
        add(&mut files, "storage.yaml", claims);
    }
    for p in &processes {
        let mut objects = vec![deployment(p, options, grace, &config_hash), service(p)];
        if !p.stateful {
            objects.push(json!({
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": meta(&p.object, Some(p.part.name)),
                "spec": { "maxUnavailable": 1, "selector": { "matchLabels": selector(p.part.name) } },
            }));
            if options.keda.is_none() {
                objects.push(autoscaler(p, options));
            }
        }
        add(&mut files, &format!("{}.yaml", p.part.name), objects);
    }
    add(
        &mut files,
        "network-policy.yaml",
        network_policies(&processes, &options.metrics_namespace),
    );
    if let Some(prometheus) = &options.keda {
        let objects = processes
            .iter()
            .filter(|p| !p.stateful)
            .map(|p| scaled_object(p, options, prometheus))
            .collect();
        add(&mut files, "keda.yaml", objects);
    }
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        // Its name gets the keys' hash, so that new keys roll the pods.
        "secretGenerator": [{ "name": SECRET, "envs": [KEYS_FILE] }],
    });
    files.insert(
        "kustomization.yaml".into(),
        format!("{HEADER}\n{}", yaml_body(&kustomization)),
    );
    // Not a resource of this namespace: the rules for prometheus-adapter's
    // own ConfigMap, so that the HPAs' Pods metrics exist.
    if options.keda.is_none() {
        files.insert(
            "prometheus-adapter.yaml".into(),
            yaml(&[prometheus_adapter(&options.metrics_namespace)]),
        );
    }
    Ok(files)
}

/// Write the rendered files into `out`, which must be missing, empty, or
/// hold only files this command wrote (then they are replaced).
pub fn write(files: &BTreeMap<String, String>, out: &Path) -> Result<()> {
    if out.exists() {
        let entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(out, e))?.path();
            let ours = path.is_file()
                && std::fs::read_to_string(&path).is_ok_and(|text| text.starts_with(HEADER));
            if !ours {
                return Err(Error::InvalidInput(format!(
                    "--out {} holds {}, which `hearth deploy kubernetes` did not write: choose an empty or new directory",
                    out.display(),
                    path.display()
                )));
            }
        }
        for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
            let path = entry.map_err(|e| Error::io(out, e))?.path();
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        if name == KEYS_FILE {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Memory for a process: 160 MiB for the runtime, the HTTP server and the
/// index's working set, 1.25x the model files (weights in memory plus
/// dequantized copies and activations), and per LLM worker its prefix
/// cache plus 128 MiB for the running sequences' keys and values; rounded
/// up to 64 MiB.
pub fn memory_mib(model_bytes: u64, llm_workers: u32, prefix_cache_mb: u64) -> u64 {
    let mib = 160
        + (model_bytes * 5 / 4).div_ceil(1 << 20)
        + llm_workers as u64 * (prefix_cache_mb + 128);
    mib.div_ceil(64) * 64
}

fn lookup(table: &[(String, u32)], part: &Part) -> Option<u32> {
    let exact = table.iter().find(|(name, _)| name == part.name);
    let by_role = table.iter().find(|(name, _)| name == part.role.name());
    exact.or(by_role).map(|(_, n)| *n)
}

fn check_names(parts: &[Part], table: &[(String, u32)], flag: &str) -> Result<()> {
    for (name, _) in table {
        if !parts
            .iter()
            .any(|p| p.name == name || p.role.name() == name)
        {
            let known: Vec<&str> = parts.iter().map(|p| p.name).collect();
            return Err(Error::InvalidInput(format!(
                "{flag} {name}=...: this topology has no such process (it has {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// The model settings a process loads from files, and how many LLM
/// workers it runs.
fn models_of<'a>(part: &Part, config: &'a Config) -> (Vec<&'a str>, u32) {
    let m = &config.models;
    let remote = |flag: &str| part.args.iter().any(|a| a == flag);
    let mut models: Vec<&str> = Vec::new();
    let mut workers = 0;
    let fine_tuned = |models: &mut Vec<&'a str>| {
        models.push(m.fine_tuned.base());
        if let FineTunedModel::Adapted(a) = &m.fine_tuned {
            models.push(&a.adapter);
        }
        models.extend(m.adapters.iter().map(|a| a.path.as_str()));
    };
    let slot = part
        .args
        .iter()
        .position(|a| a == "--model")
        .and_then(|i| part.args.get(i + 1));
    match part.role {
        Role::All | Role::Rag => {
            if !remote("--embedder") {
                models.push(&m.embedder);
            }
            models.push(&m.reranker);
            if !remote("--rag-generator") {
                models.push(&m.rag_generator);
                workers += 1;
            }
            if part.role == Role::All {
                fine_tuned(&mut models);
                let shared = m.fine_tuned.base() == m.rag_generator && config.limits.shared_worker;
                workers += if shared { 0 } else { 1 };
            }
        }
        Role::FineTuned => {
            fine_tuned(&mut models);
            workers = 1;
        }
        Role::Generate => {
            if slot.is_some_and(|s| s == "fine-tuned") {
                fine_tuned(&mut models);
            } else {
                models.push(&m.rag_generator);
            }
            workers = 1;
        }
        Role::Embed => models.push(&m.embedder),
        Role::Gateway => {}
    }
    models.retain(|s| !s.is_empty() && !is_remote(s));
    models.sort();
    models.dedup();
    (models, workers)
}

/// The bytes of a model file, or of the files in a model directory.
fn model_bytes(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| missing(path, e))?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).map_err(|e| missing(path, e))? {
        let meta = entry
            .and_then(|e| e.metadata())
            .map_err(|e| missing(path, e))?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

fn missing(path: &Path, e: std::io::Error) -> Error {
    Error::InvalidInput(format!(
        "the config names the model {}, which cannot be read: {e} (scripts/fetch-models.sh fetches the default models)",
        path.display()
    ))
}

/// The whole models directory, in GiB rounded up (the models claim's size).
fn dir_gib(dir: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir).div_ceil(1 << 30).max(1)
}

/// The config as the containers read it: listening on every interface,
/// the store at `/data`, the models under `/models`, the keys from the
/// Secret (not in the ConfigMap) and the threads from the CPU limit.
fn container_config(config: &Config, models_dir: &Path) -> Result<Config> {
    let mut c = config.clone();
    c.listen = format!("0.0.0.0:{PORT}");
    c.data_dir = PathBuf::from(DATA_DIR);
    c.api_keys = Vec::new();
    c.threads = None;
    let map = |setting: &mut String| -> Result<()> {
        *setting = in_container(setting, models_dir)?;
        Ok(())
    };
    map(&mut c.models.embedder)?;
    map(&mut c.models.rag_generator)?;
    map(&mut c.models.reranker)?;
    match &mut c.models.fine_tuned {
        FineTunedModel::Model(m) => map(m)?,
        FineTunedModel::Adapted(a) => {
            map(&mut a.base)?;
            map(&mut a.adapter)?;
        }
    }
    for adapter in &mut c.models.adapters {
        map(&mut adapter.path)?;
    }
    Ok(c)
}

/// A model setting as the container sees it: a local path under the
/// models directory becomes the same path under `/models`.
fn in_container(setting: &str, models_dir: &Path) -> Result<String> {
    if setting.is_empty() || is_remote(setting) {
        return Ok(setting.to_string());
    }
    if setting.starts_with("hf:") {
        return Err(Error::InvalidInput(format!(
            "the model {setting} would be downloaded by every pod: download it once (its directory under --models-dir) and name that directory"
        )));
    }
    let path = Path::new(setting);
    let full = path.canonicalize().map_err(|e| missing(path, e))?;
    let inside = full.strip_prefix(models_dir).map_err(|_| {
        Error::InvalidInput(format!(
            "the model {setting} is not under --models-dir {}: the containers see only that directory (at {MODELS_DIR})",
            models_dir.display()
        ))
    })?;
    Ok(format!("{MODELS_DIR}/{}", inside.display()))
}

fn meta(name: &str, component: Option<&str>) -> Value {
    let mut labels = json!({
        "app.kubernetes.io/name": "hearth",
        "app.kubernetes.io/part-of": "hearth",
    });
    if let Some(component) = component {
        labels["app.kubernetes.io/component"] = json!(component);
    }
    json!({ "name": name, "labels": labels })
}

fn selector(component: &str) -> Value {
    json!({ "app.kubernetes.io/name": "hearth", "app.kubernetes.io/component": component })
}

/// The API keys as kustomize's `secretGenerator` reads them. Not written
/// when the config has none: `kubectl apply -k` then stops, naming the
/// file, until the operator writes one (no key ships in a manifest).
fn keys_file(keys: &[String]) -> Result<String> {
    if keys
        .iter()
        .any(|k| k.contains([',', '\n']) || k.trim() != k)
    {
        return Err(Error::InvalidInput(
            "an API key holds a comma, a newline or surrounding spaces".into(),
        ));
    }
    Ok(format!("{HEADER}\napi-keys={}\n", keys.join(",")))
}

fn claim(name: &str, mode: &str, size: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(name, None),
        "spec": {
            "accessModes": [mode],
            "resources": { "requests": { "storage": size } },
        },
    })
}

fn deployment(p: &Process, options: &Options, grace: u64, config_hash: &str) -> Value {
    let args: Vec<String> = ["serve", "--role", p.part.role.name()]
        .into_iter()
        .map(String::from)
        .chain(p.part.args.iter().map(|a| {
            match a.strip_prefix('{').and_then(|a| a.strip_suffix('}')) {
                Some(name) => format!("http://hearth-{name}:{PORT}"),
                None => a.clone(),
            }
        }))
        .collect();
    let mut mounts = vec![json!({ "name": "config", "mountPath": CONFIG_DIR, "readOnly": true })];
    let mut volumes = vec![json!({ "name": "config", "configMap": { "name": "hearth-config" } })];
    mounts.push(json!({ "name": "tmp", "mountPath": "/tmp" }));
    volumes.push(json!({ "name": "tmp", "emptyDir": {} }));
    if p.has_models {
        let source = match &options.models_from {
            ModelsFrom::Claim(name) => {
                Some(json!({ "persistentVolumeClaim": { "claimName": name, "readOnly": true } }))
            }
            ModelsFrom::HostPath(dir) => Some(
                json!({ "hostPath": { "path": dir.display().to_string(), "type": "Directory" } }),
            ),
            ModelsFrom::Image => None,
        };
        if let Some(source) = source {
            mounts.push(json!({ "name": "models", "mountPath": MODELS_DIR, "readOnly": true }));
            let mut volume = json!({ "name": "models" });
            volume
                .as_object_mut()
                .expect("an object")
                .extend(source.as_object().expect("an object").clone());
            volumes.push(volume);
        }
    }
    if p.stateful {
        mounts.push(json!({ "name": "data", "mountPath": DATA_DIR }));
        volumes.push(
            json!({ "name": "data", "persistentVolumeClaim": { "claimName": "hearth-data" } }),
        );
    }
    let resources = if p.part.role == Role::Gateway {
        json!({
            "requests": { "cpu": "250m", "memory": "64Mi" },
            "limits": { "cpu": p.cpus.to_string(), "memory": format!("{}Mi", p.memory_mib) },
        })
    } else {
        // Guaranteed QoS: requests equal limits.
        let both = json!({ "cpu": p.cpus.to_string(), "memory": format!("{}Mi", p.memory_mib) });
        json!({ "requests": both, "limits": both })
    };
    let probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": { "path": path, "port": "http" },
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        })
    };
    // A gateway stays in its Service while a backend is down (it answers
    // 502 for that backend only); its /readyz (every backend ready) gates
    // its start.
    let ready_path = if p.part.role == Role::Gateway {
        "/healthz"
    } else {
        "/readyz"
    };
    let strategy = if p.stateful {
        json!({ "type": "Recreate" })
    } else {
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } })
    };
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(&p.object, Some(p.part.name)),
        "spec": {
            "replicas": p.replicas,
            "strategy": strategy,
            "selector": { "matchLabels": selector(p.part.name) },
            "template": {
                "metadata": {
                    "labels": meta(&p.object, Some(p.part.name))["labels"],
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": PORT.to_string(),
                        "prometheus.io/path": "/metrics",
                        "hearth.dev/config-sha256": config_hash,
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": USER_ID,
                        "runAsGroup": USER_ID,
                        "fsGroup": USER_ID,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "hearth",
                        "image": options.image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": args,
                        "env": [
                            { "name": "HEARTH_CONFIG", "value": format!("{CONFIG_DIR}/hearth.toml") },
                            { "name": "HEARTH_THREADS", "value": p.cpus.to_string() },
                            { "name": "HEARTH_LOG_FORMAT", "value": "json" },
                            { "name": "HEARTH_API_KEYS", "valueFrom": { "secretKeyRef": { "name": SECRET, "key": "api-keys" } } },
                        ],
                        "ports": [{ "name": "http", "containerPort": PORT, "protocol": "TCP" }],
                        "resources": resources,
                        "startupProbe": probe("/readyz", 2, 300),
                        "readinessProbe": probe(ready_path, 5, 2),
                        "livenessProbe": probe("/healthz", 10, 3),
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    })
}

fn service(p: &Process) -> Value {
    let mut spec = json!({
        "selector": selector(p.part.name),
        "ports": [{ "name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP" }],
    });
    if p.internal {
        // Headless: DNS answers every ready replica's address, and hearth's
        // clients spread requests over them.
        spec["clusterIP"] = json!("None");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(&p.object, Some(p.part.name)),
        "spec": spec,
    })
}

/// The metric a stateless process scales on, and the average per pod to
/// keep: LLM roles on requests waiting for the worker beyond its running
/// slots (`hearth_queue_depth`, which a full batch does not cap), `embed` on
/// the HTTP requests it is serving. `None`: the gateway, on CPU.
fn scaling_metric(p: &Process) -> Option<(&'static str, &'static str)> {
    if p.part.role == Role::Gateway {
        None
    } else if p.llm {
        Some(("hearth_queue_depth", "1"))
    } else {
        Some(("hearth_requests_in_flight", "4"))
    }
}

fn autoscaler(p: &Process, options: &Options) -> Value {
    let metric = match scaling_metric(p) {
        Some((name, average)) => json!({
            "type": "Pods",
            "pods": {
                "metric": { "name": name },
                "target": { "type": "AverageValue", "averageValue": average },
            },
        }),
        None => json!({
            "type": "Resource",
            "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 70 } },
        }),
    };
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(&p.object, Some(p.part.name)),
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": p.object },
            "minReplicas": p.replicas,
            "maxReplicas": options.max_replicas.max(p.replicas),
            "metrics": [metric],
            "behavior": { "scaleDown": { "stabilizationWindowSeconds": 300 } },
        },
    })
}

fn scaled_object(p: &Process, options: &Options, prometheus: &str) -> Value {
    let trigger = match scaling_metric(p) {
        Some((name, average)) => json!({
            "type": "prometheus",
            "metadata": {
                "serverAddress": prometheus,
                "query": format!("sum({name}{{pod=~\"{}-.*\"}})", p.object),
                "threshold": average,
            },
        }),
        None => {
            json!({ "type": "cpu", "metricType": "Utilization", "metadata": { "value": "70" } })
        }
    };
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta(&p.object, Some(p.part.name)),
        "spec": {
            "scaleTargetRef": { "name": p.object },
            "minReplicaCount": p.replicas,
            "maxReplicaCount": options.max_replicas.max(p.replicas),
            "triggers": [trigger],
        },
    })
}

fn network_policies(processes: &[Process], metrics_namespace: &str) -> Vec<Value> {
    let port = json!([{ "protocol": "TCP", "port": PORT }]);
    let doors: Vec<&str> = processes
        .iter()
        .filter(|p| p.front_door)
        .map(|p| p.part.name)
        .collect();
    vec![
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta("hearth-internal", None),
            "spec": {
                "podSelector": { "matchLabels": { "app.kubernetes.io/name": "hearth" } },
                "policyTypes": ["Ingress"],
                "ingress": [
                    { "from": [{ "podSelector": { "matchLabels": { "app.kubernetes.io/name": "hearth" } } }], "ports": port },
                    { "from": [{ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": metrics_namespace } } }], "ports": port },
                ],
            },
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta("hearth-front-door", None),
            "spec": {
                "podSelector": { "matchExpressions": [{
                    "key": "app.kubernetes.io/component",
                    "operator": "In",
                    "values": doors,
                }] },
                "policyTypes": ["Ingress"],
                "ingress": [{ "ports": port }],
            },
        }),
    ]
}

/// prometheus-adapter's rules that turn the scaling gauges into the
/// custom metrics API's pod metrics (apply it where the adapter runs).
fn prometheus_adapter(namespace: &str) -> Value {
    let rule = |name: &str| {
        json!({
            "seriesQuery": format!("{name}{{namespace!=\"\",pod!=\"\"}}"),
            "resources": { "overrides": {
                "namespace": { "resource": "namespace" },
                "pod": { "resource": "pod" },
            } },
            "name": { "as": name },
            "metricsQuery": "max(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
        })
    };
    let rules = json!({ "rules": [rule("hearth_queue_depth"), rule("hearth_requests_in_flight")] });
    let mut metadata = meta("adapter-config", None);
    metadata["namespace"] = json!(namespace);
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": { "config.yaml": yaml_body(&rules) },
    })
}

fn yaml_body(value: &Value) -> String {
    serde_yaml_ng::to_string(value).expect("JSON values serialise as YAML")
}

/// Objects as one YAML stream, under the header.
fn yaml(objects: &[Value]) -> String {
    let mut text = format!("{HEADER}; edit the config and render again rather than this file.\n");
    for object in objects {
        text.push_str("---\n");
        text.push_str(&yaml_body(object));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_grows_with_the_models_and_rounds_up() {
        assert_eq!(memory_mib(0, 0, 256), 192);
        // SmolLM2 Q4_1 (98 MB) with its worker and a 256 MiB prefix cache.
        assert_eq!(memory_mib(98_362_432, 1, 256), 704);
    }

    #[test]
    fn model_paths_move_under_models() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/m.gguf"), b"x").unwrap();
        let setting = root.join("a/m.gguf").display().to_string();
        assert_eq!(in_container(&setting, &root).unwrap(), "/models/a/m.gguf");
        assert_eq!(in_container("http://x:1", &root).unwrap(), "http://x:1");
        assert!(in_container("/etc/hostname", &root)
            .unwrap_err()
            .to_string()
            .contains("not under --models-dir"));
        assert!(in_container("hf:a/b", &root).is_err());
    }
}
