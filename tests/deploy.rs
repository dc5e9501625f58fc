//! Past one machine: `hearth deploy kubernetes` (the committed examples are
//! what it renders, every object passes the Kubernetes schemas strictly,
//! bad input is refused before anything is written) and replicas behind
//! one name (a `rag` process spreads its generations over two `generate`
//! replicas and keeps answering when one dies).
//!
//! The replicas test needs root: the `rag` process runs in a mount
//! namespace of its own (`unshare -m`) whose `/etc/hosts` gives one name
//! the addresses of both replicas, as a headless Service's DNS name does.

use crate::common::{post, repo};
use hearth::engine::remote::wait_until_ready;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Kubernetes version the manifests are checked against (the README
/// names it too).
const KUBERNETES: &str = "1.37.0";

fn hearth() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hearth"));
    command.current_dir(repo()).env_remove("HEARTH_API_KEYS");
    command
}

fn files_of(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Every YAML object under `dir` but the kustomization, checked strictly
/// (unknown fields are errors) by kubernetes-validate.
fn validate(dir: &Path) {
    let validator = repo().join("target/py-venv/bin/kubernetes-validate");
    assert!(
        validator.exists(),
        "{} is missing: run scripts/python-env.sh",
        validator.display()
    );
    let mut yamls: Vec<PathBuf> = Vec::new();
    for entry in walk(dir) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            yamls.push(entry);
        }
    }
    assert!(!yamls.is_empty());
    let out = Command::new(&validator)
        .args(["--strict", "--quiet", "-k", KUBERNETES])
        .args(&yamls)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubernetes-validate --strict failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn the_committed_manifests_are_what_the_command_renders_and_pass_the_schemas() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(repo().join("scripts/render-kubernetes.sh"))
        .current_dir(repo())
        .env("HEARTH", env!("CARGO_BIN_EXE_hearth"))
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    for topology in ["unified", "separated", "gateway", "per-model"] {
        let committed = repo().join("deploy/kubernetes").join(topology);
        let mut want = files_of(&committed);
        want.retain(|(name, _)| name != "api-keys.env");
        let got = files_of(&out.path().join(topology));
        assert_eq!(
            got.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            want.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            "deploy/kubernetes/{topology}: render it again with scripts/render-kubernetes.sh"
        );
        for ((name, got), (_, want)) in got.iter().zip(&want) {
            assert_eq!(
                got, want,
                "deploy/kubernetes/{topology}/{name} differs from what `hearth deploy kubernetes` renders: run scripts/render-kubernetes.sh"
            );
        }
    }

    // The other forms too: keys from the config, models on the node or in
    // the image, more CPUs and replicas.
    let variants = out.path().join("variants");
    let key = "a-key-long-enough-for-hearth";
    for (name, args) in [
        (
            "host-path",
            vec![
                "--topology",
                "per-model",
                "--models-host-path",
                "/srv/models",
                "--cpus",
                "generate=4",
                "--replicas",
                "rag-generator=3",
            ],
        ),
        (
            "in-image",
            vec![
                "--topology",
                "gateway",
                "--models-in-image",
                "--replicas",
                "gateway=2",
            ],
        ),
    ] {
        let dir = variants.join(name);
        let done = hearth()
            .args(["deploy", "kubernetes", "--api-key", key, "--out"])
            .arg(&dir)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        let keys = std::fs::read_to_string(dir.join("api-keys.env")).unwrap();
        assert!(keys.contains(&format!("api-keys={key}")));
        for (_, text) in files_of(&dir) {
            if !text.contains("api-keys=") {
                assert!(!text.contains(key), "a key outside api-keys.env");
            }
        }
    }
    let gateway = std::fs::read_to_string(variants.join("in-image/gateway.yaml")).unwrap();
    assert!(gateway.contains("replicas: 2"));
    assert!(
        !gateway.contains("name: models"),
        "no /models volume: the image has them"
    );
    let generator = std::fs::read_to_string(variants.join("host-path/rag-generator.yaml")).unwrap();
    assert!(generator.contains("replicas: 3") && generator.contains("path: /srv/models"));
    assert!(generator.contains("cpu: '4'") && generator.contains("value: '4'"));
    // Every object rendered here, the examples and the variants, in one
    // call of the validator.
    validate(out.path());
}

#[test]
fn bad_deploy_input_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |args: &[&str], out: &Path, says: &str| {
        let done = hearth()
            .args([
                "deploy",
                "kubernetes",
                "--api-key",
                "a-key-long-enough",
                "--out",
            ])
            .arg(out)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(!done.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    let fresh = dir.path().join("fresh");
    refused(&["--topology", "mesh"], &fresh, "invalid value 'mesh'");
    refused(
        &["--topology", "separated", "--replicas", "rag=2"],
        &fresh,
        "must stay at 1 replica",
    );
    refused(
        &["--topology", "unified", "--replicas", "unified=0"],
        &fresh,
        "at least one replica",
    );
    refused(
        &["--topology", "separated", "--replicas", "embed=2"],
        &fresh,
        "no such process",
    );
    refused(
        &[
            "--topology",
            "unified",
            "--rag-generator",
            "models/nope.gguf",
        ],
        &fresh,
        "models/nope.gguf",
    );
    assert!(!fresh.exists(), "nothing is written for refused input");
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    refused(&["--topology", "unified"], &busy, "did not write");
    assert_eq!(files_of(&busy).len(), 1, "the other file is left alone");
}

/// A `hearth serve` child, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(args: &[&str], data: &Path) -> Process {
    Process(
        hearth()
            .env("RUST_LOG", "hearth=warn")
            .arg("serve")
            .args(args)
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting hearth serve"),
    )
}

async fn completed_generations(client: &reqwest::Client, url: &str) -> f64 {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("hearth_generations_total{outcome=\"completed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_behind_one_name_share_the_generations_and_survive_a_death() {
    assert!(
        Command::new("id").arg("-u").output().unwrap().stdout == b"0\n",
        "this test runs the rag process in its own mount namespace (unshare -m) and needs root"
    );
    let dir = tempfile::tempdir().unwrap();
    // One port free on both replica addresses.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        std::net::TcpListener::bind(("127.0.0.3", port)).expect("the same port on 127.0.0.3");
        port
    };
    let replica_urls = [
        format!("http://127.0.0.2:{port}"),
        format!("http://127.0.0.3:{port}"),
    ];
    let mut replicas: Vec<Option<Process>> = replica_urls
        .iter()
        .map(|url| {
            let listen = url.trim_start_matches("http://").to_string();
            Some(serve(
                &[
                    "--role",
                    "generate",
                    "--model",
                    "rag-generator",
                    "--listen",
                    &listen,
                ],
                dir.path(),
            ))
        })
        .collect();
    let embed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _embed = serve(
        &[
            "--role",
            "embed",
            "--listen",
            &format!("127.0.0.1:{embed_port}"),
        ],
        dir.path(),
    );
    let rag_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.2 hearth-rag-generator\n127.0.0.3 hearth-rag-generator\n",
    )
    .unwrap();
    let data = dir.path().join("rag");
    let rag_command = format!(
        "mount --bind {} /etc/hosts && exec {} serve --role rag --listen 127.0.0.1:{rag_port} --data-dir {} --embedder http://127.0.0.1:{embed_port} --rag-generator http://hearth-rag-generator:{port}",
        hosts.display(),
        env!("CARGO_BIN_EXE_hearth"),
        data.display()
    );
    let _rag = Process(
        Command::new("unshare")
            .args(["-m", "sh", "-c", &rag_command])
            .current_dir(repo())
            .env_remove("HEARTH_API_KEYS")
            .env("RUST_LOG", "hearth=warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)"),
    );
    let rag = format!("http://127.0.0.1:{rag_port}");
    let client = reqwest::Client::new();
    let deadline = Some(Instant::now() + Duration::from_secs(120));
    assert!(
        wait_until_ready(&client, &rag, Duration::from_millis(100), deadline).await,
        "the rag process did not become ready"
    );
    // Both replicas ready before the load: one still loading its model
    // refuses connections and is taken out for a while, and the other
    // then takes everything (a fresh clone's CI, with other tests beside
    // it, once saw 24 of 80).
    for url in &replica_urls {
        assert!(
            wait_until_ready(&client, url, Duration::from_millis(100), deadline).await,
            "replica {url} did not become ready"
        );
    }
    let (status, _) = post(
        &client,
        format!("{rag}/documents"),
        json!({"id": "france", "text": "Paris is the capital of France. Berlin is the capital of Germany."}),
    )
    .await;
    assert!(status.is_success());
    let ask = {
        let rag = rag.clone();
        move |client: reqwest::Client| {
            let rag = rag.clone();
            async move {
                post(
                    &client,
                    format!("{rag}/rag"),
                    json!({"question": "What is the capital of France?", "max_tokens": 12}),
                )
                .await
            }
        }
    };

    // 8 clients, 10 questions each: both replicas take a real share. The
    // next request goes to the replica with fewer in flight, so a replica
    // that answers faster takes more; on a busy 2-core machine one once
    // answered 2.2x as fast as the other (55 and 25 of 80). The policy
    // itself is checked exactly by engine::replicas' unit tests.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let ask = ask.clone();
        let client = client.clone();
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..10 {
                answers.push(ask(client.clone()).await);
            }
            answers
        }));
    }
    let mut first_answer = None;
    for c in clients {
        for (status, body) in c.await.unwrap() {
            assert!(status.is_success(), "{status}: {body}");
            let answer = body["answer"].as_str().unwrap().to_string();
            // Greedy: every replica gives the same answer.
            assert_eq!(first_answer.get_or_insert(answer.clone()), &answer);
        }
    }
    let mut served = Vec::new();
    for url in &replica_urls {
        served.push(completed_generations(&client, url).await);
    }
    let total: f64 = served.iter().sum();
    assert_eq!(total, 80.0, "every generation counted once: {served:?}");
    eprintln!("generations per replica: {served:?}");
    for (url, n) in replica_urls.iter().zip(&served) {
        let share = n / total;
        assert!(
            share >= 0.2,
            "{url} served {n} of {total} generations: the load is not shared"
        );
    }
    let (_, topology) = crate::common::get(&client, format!("{rag}/topology")).await;
    let generator = topology["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rag-generator")
        .expect("/topology lists the remote generator");
    assert_eq!(
        generator["replicas"].as_array().unwrap().len(),
        2,
        "{generator}"
    );

    // Kill one replica while 8 questions are in flight: at most those on it
    // fail, and every question after that is answered.
    let mut in_flight = Vec::new();
    for _ in 0..8 {
        in_flight.push(tokio::spawn(ask(client.clone())));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, topology) = crate::common::get(&client, format!("{rag}/topology")).await;
    let on_it = topology["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rag-generator")
        .and_then(|p| {
            p["replicas"]
                .as_array()?
                .iter()
                .find(|r| r["url"] == replica_urls[1].as_str())
        })
        .map(|r| r["in_flight"].as_u64().unwrap())
        .expect("the replica about to die is listed");
    assert!(on_it < 8, "{on_it} of 8 questions on one replica");
    drop(replicas[1].take());
    let mut lost = 0;
    for request in in_flight {
        let (status, body) = request.await.unwrap();
        if !status.is_success() {
            assert_eq!(body["error"]["code"], "backend_unavailable", "{body}");
            lost += 1;
        }
    }
    assert!(
        lost <= on_it,
        "{lost} questions lost, with {on_it} in flight on the replica that died"
    );
    for _ in 0..6 {
        let (status, body) = ask(client.clone()).await;
        assert!(status.is_success(), "after the death: {status} {body}");
    }
    // With no replica left: a clear 502.
    drop(replicas[0].take());
    let (status, body) = ask(client.clone()).await;
    assert_eq!(status.as_u16(), 502, "{body}");
    assert_eq!(body["error"]["code"], "backend_unavailable");
}
