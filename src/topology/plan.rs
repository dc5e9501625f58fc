//! The plan of a deployment, as data: which `hearth serve` processes make
//! up each [`Topology`], their roles, ports and arguments ([`plan`]), and,
//! once they run, the [`Deployment`] the launcher writes as JSON: every
//! process with its URL and pid, and which URL serves each pipeline. The
//! launcher, `GET /topology`, the benchmark and the tests all read that
//! file; none parses printed text.
//!
//! - `unified`: one `all` process on `listen`.
//! - `separated`: a `rag` and a `fine-tuned` process, each on its own port.
//! - `per-model`: an `embed` process, one `generate` process per LLM, and a
//!   `rag` process using the embedder and its generator remotely; the
//!   fine-tuned LLM's `generate` process serves `/fine-tuned` itself.
//! - `gateway`: `separated` behind a `gateway` front door on `listen`.
//!
//! Ports: the front door (the unified process or the gateway) takes
//! `listen`'s port; the others take the next ones (`rag` +1, `fine-tuned`
//! +2, `embed` +3, the RAG generator +4). With port 0 every process gets a
//! free port, which it keeps across restarts.

use crate::config::Role;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Set by `hearth up` on its children: the topology's name, and the file
/// listing its processes (read by `GET /topology`).
pub const TOPOLOGY_ENV: &str = "HEARTH_TOPOLOGY";
pub const TOPOLOGY_FILE_ENV: &str = "HEARTH_TOPOLOGY_FILE";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    Unified,
    Separated,
    PerModel,
    Gateway,
}

impl Topology {
    /// The processes clients send each pipeline's requests to, by part
    /// name: (`/rag` and the store, `/fine-tuned`). Decided here only.
    pub fn front_doors(self) -> (&'static str, &'static str) {
        match self {
            Topology::Unified => ("unified", "unified"),
            Topology::Gateway => ("gateway", "gateway"),
            Topology::Separated | Topology::PerModel => ("rag", "fine-tuned"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Topology::Unified => "unified",
            Topology::Separated => "separated",
            Topology::PerModel => "per-model",
            Topology::Gateway => "gateway",
        }
    }
}

/// One process of a topology.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: &'static str,
    pub role: Role,
    /// More `serve` arguments; `{NAME}` stands for that part's URL.
    pub args: Vec<String>,
    /// 0: any free port.
    pub port: u16,
}

/// The processes of `topology`, dependencies first, for a front door on
/// `port`.
pub fn plan(topology: Topology, port: u16) -> Vec<Part> {
    let at = |offset: u16| if port == 0 { 0 } else { port + offset };
    let part = |name, role, args: &[&str], port| Part {
        name,
        role,
        args: args.iter().map(|a| a.to_string()).collect(),
        port,
    };
    let separated = || {
        vec![
            part("rag", Role::Rag, &[], at(1)),
            part("fine-tuned", Role::FineTuned, &[], at(2)),
        ]
    };
    match topology {
        Topology::Unified => vec![part("unified", Role::All, &[], port)],
        Topology::Separated => separated(),
        Topology::Gateway => {
            let mut parts = separated();
            parts.push(part(
                "gateway",
                Role::Gateway,
                &["--rag-url", "{rag}", "--fine-tuned-url", "{fine-tuned}"],
                port,
            ));
            parts
        }
        Topology::PerModel => vec![
            part("embed", Role::Embed, &[], at(3)),
            part(
                "rag-generator",
                Role::Generate,
                &["--model", "rag-generator"],
                at(4),
            ),
            part(
                "fine-tuned",
                Role::Generate,
                &["--model", "fine-tuned"],
                at(2),
            ),
            part(
                "rag",
                Role::Rag,
                &[
                    "--embedder",
                    "{embed}",
                    "--rag-generator",
                    "{rag-generator}",
                ],
                at(1),
            ),
        ],
    }
}

/// One process of a running deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub role: String,
    pub url: String,
    /// As first started (a restarted process has a new one; `GET
    /// /topology` probes the current pid).
    pub pid: u32,
}

/// Where clients send each pipeline's requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Serves {
    /// `/rag`, `/search` and `/documents`.
    pub rag: String,
    /// `/fine-tuned`.
    pub fine_tuned: String,
}

/// What `hearth up` writes to its endpoints file: written as each process
/// starts (`ready: false`) and once more when every one is ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub topology: String,
    pub ready: bool,
    /// Dependencies first, as started.
    pub endpoints: Vec<Endpoint>,
    /// Empty until the front doors are up.
    pub serves: Serves,
}

impl Deployment {
    pub fn new(topology: Topology, endpoints: Vec<Endpoint>, ready: bool) -> Self {
        let (rag, fine_tuned) = topology.front_doors();
        let url = |name: &str| {
            endpoints
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.url.clone())
                .unwrap_or_default()
        };
        Self {
            topology: topology.name().into(),
            ready,
            serves: Serves {
                rag: url(rag),
                fine_tuned: url(fine_tuned),
            },
            endpoints,
        }
    }

    /// The endpoint of part `name`.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// Write as a whole (a reader never sees half a file).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a deployment serialises");
        let partial = path.with_extension("tmp");
        std::fs::write(&partial, text).map_err(|e| Error::io(&partial, e))?;
        std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))
    }

    /// Read a deployment file; `None` while it does not exist yet.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                Error::InvalidInput(format!("{} is not a deployment file: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The deployment the launcher of this process wrote, if any.
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os(TOPOLOGY_FILE_ENV)?;
        Self::read(Path::new(&path)).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_put_dependencies_first_and_ports_in_order() {
        let names = |t| {
            plan(t, 8080)
                .iter()
                .map(|p| (p.name, p.port))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Topology::Unified), vec![("unified", 8080)]);
        assert_eq!(
            names(Topology::Gateway),
            vec![("rag", 8081), ("fine-tuned", 8082), ("gateway", 8080)]
        );
        let per_model = plan(Topology::PerModel, 0);
        assert_eq!(Topology::PerModel.front_doors(), ("rag", "fine-tuned"));
        assert_eq!(per_model.last().unwrap().name, "rag");
        assert!(per_model.iter().all(|p| p.port == 0));
        assert!(per_model
            .last()
            .unwrap()
            .args
            .contains(&"{embed}".to_string()));
    }

    #[test]
    fn deployments_name_the_front_doors_and_round_trip() {
        let endpoint = |name: &str, port| Endpoint {
            name: name.into(),
            role: name.into(),
            url: format!("http://127.0.0.1:{port}"),
            pid: port as u32,
        };
        let parts = vec![
            endpoint("rag", 1),
            endpoint("fine-tuned", 2),
            endpoint("gateway", 3),
        ];
        let d = Deployment::new(Topology::Gateway, parts.clone(), true);
        assert_eq!(d.serves.rag, "http://127.0.0.1:3");
        assert_eq!(d.serves.fine_tuned, "http://127.0.0.1:3");
        let d = Deployment::new(Topology::Separated, parts[..2].to_vec(), false);
        assert_eq!(d.serves.rag, "http://127.0.0.1:1");
        assert_eq!(d.serves.fine_tuned, "http://127.0.0.1:2");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deployment.json");
        assert_eq!(Deployment::read(&path).unwrap(), None);
        d.write(&path).unwrap();
        assert_eq!(Deployment::read(&path).unwrap(), Some(d));
    }
}
